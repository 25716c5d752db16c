"""Every place the gateway reaches past aiohttp's public API, in one file, each checked.

``connection_guard.py`` puts ``HeaderGuard`` in front of aiohttp's ``RequestHandler`` and answers
parse errors in the SPEC's envelope. aiohttp has no public hook for either, so three private
parts are used: ``web.Server._loop`` and ``._kwargs`` (to build a handler as ``Server.__call__``
does) and ``BaseRunner._server`` (swapped while ``TCPSite.start`` reads ``runner.server``).
``problems()`` names whatever of that a new aiohttp no longer has; the site refuses to start
on any, and a unit test runs it, so an upgrade fails loudly instead of serving unguarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterator

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


def new_request_handler(server: web.Server, handler_class: type[RequestHandler]) -> RequestHandler:
    """A handler for one connection, made as ``web.Server.__call__`` makes it."""
    return handler_class(server, loop=server._loop, **server._kwargs)


@contextlib.contextmanager
def runner_serving(runner: web.BaseRunner, factory: Callable[[], asyncio.Protocol]) -> Iterator[None]:
    """While inside, ``runner.server`` (what ``TCPSite.start`` hands to ``create_server``) is
    ``factory``."""
    real = runner.server
    if real is None:
        raise RuntimeError("the runner is not set up")
    runner._server = factory  # type: ignore[assignment]
    try:
        yield
    finally:
        runner._server = real


def problems(*, deep: bool = True) -> list[str]:
    """What the private uses above need from aiohttp and it no longer provides; [] when all is well.
    ``deep=False`` (at every start) checks only what exists, without reading aiohttp's source;
    the unit test runs the deep check."""
    found: list[str] = []
    if "_server" not in getattr(web.BaseRunner, "__slots__", ()):
        found.append("web.BaseRunner no longer keeps its server in _server")
    if not deep:
        return found
    init = inspect.getsource(web.Server.__init__)
    for attribute in ("self._loop =", "self._kwargs ="):
        if attribute not in init:
            found.append(f"web.Server.__init__ no longer sets {attribute.split()[0]}")
    if "RequestHandler(self, loop=self._loop, **self._kwargs)" not in inspect.getsource(web.Server.__call__):
        found.append("web.Server.__call__ no longer builds RequestHandler(self, loop=self._loop, **self._kwargs)")
    if "self._runner.server" not in inspect.getsource(web.TCPSite.start):
        found.append("web.TCPSite.start no longer serves runner.server")
    expected = {
        "log_access": ["self", "request", "response", "time"],
        "handle_error": ["self", "request", "status", "exc", "message"],
    }
    for method, parameters in expected.items():
        actual = list(inspect.signature(getattr(RequestHandler, method)).parameters)
        if actual != parameters:
            found.append(f"RequestHandler.{method} now takes {actual}, the guard overrides {parameters}")
    return found
