"""First middleware: the request id (kept or generated), its triage record, its log context."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.clock import Clock
from gateway.ids import accept_or_generate
from gateway.middleware.keys import RECORD
from gateway.record import RequestRecord


def request_id_middleware(*, clock: Clock) -> web.middleware:  # type: ignore[valid-type]
    """Keep a valid caller ``X-Request-Id`` or make ``req_<ULID>``; echo it on every answer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = accept_or_generate(request.headers.get("X-Request-Id"))
        request[RECORD] = RequestRecord(
            request_id=request_id,
            started_at=clock.wall(),
            method=request.method,
            path=request.raw_path.split("?", 1)[0][:512],
        )
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(requestId=request_id)
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        return response

    return middleware
