"""The private parts of aiohttp the connection guard uses are still there, and still mean
what the guard assumes. An aiohttp upgrade that moves them fails here, by name."""

from __future__ import annotations

from aiohttp import web

from gateway.inbound import aiohttp_seams
from gateway.inbound.connection_guard import EnvelopeRequestHandler


def test_aiohttp_still_has_what_the_guard_uses() -> None:
    assert aiohttp_seams.problems() == []


async def test_a_handler_is_built_as_aiohttps_own_server_builds_it() -> None:
    async def ok(_: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    server = web.Server(ok, keepalive_timeout=7)
    handler = aiohttp_seams.new_request_handler(server, EnvelopeRequestHandler)
    assert isinstance(handler, EnvelopeRequestHandler)
    assert type(server()) is web.RequestHandler  # the server itself still builds aiohttp's own
    assert handler._keepalive_timeout == server()._keepalive_timeout == 7  # the server's handler_args reached it


async def test_the_runner_serves_the_factory_only_inside() -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    try:
        real = runner.server

        def factory() -> web.RequestHandler:
            raise AssertionError("not called here")

        with aiohttp_seams.runner_serving(runner, factory):
            assert runner.server is factory
        assert runner.server is real
    finally:
        await runner.cleanup()
