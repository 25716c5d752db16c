"""Every inbound concern, in order, as one aiohttp middleware.

    request id → access log + SERVER span → error envelope → path safety → caller auth → route

Each concern lives in its own module as plain steps; this is the one place they are
composed. One middleware rather than five: each nested middleware is one more coroutine
frame that every suspension of the request's handler resumes through.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.core.clock import Clock
from gateway.inbound.access_log import CLIENT_CLOSED, RequestObserver
from gateway.inbound.caller_auth import ClientDirectory, authenticate
from gateway.inbound.error_envelope import count_attempts, envelope_for
from gateway.inbound.path_safety import check_target
from gateway.inbound.request_id import echo_request_id, open_record


def inbound_middleware(*, clock: Clock, observer: RequestObserver, directory: ClientDirectory, make_ulid: Callable[[], str]) -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        record = open_record(request, clock, make_ulid)
        watch = observer.started(request, record)
        status = CLIENT_CLOSED  # unless an answer is decided below
        try:
            try:
                check_target(request.raw_path)
                authenticate(request, record, directory)
                response = await handler(request)
            except BaseException as exc:  # envelope_for raises again what is not an error to answer
                response = envelope_for(exc, request, record)
            count_attempts(response, record)
            status = response.status
        finally:
            observer.finished(request, record, status, watch)
        echo_request_id(response, record)
        return response

    return middleware
