"""The request id (kept or generated), its triage record, its log context."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

from gateway.core.clock import Clock
from gateway.core.ids import accept_or_generate
from gateway.request.keys import RECORD
from gateway.request.record import RequestRecord

_bind = structlog.contextvars.bind_contextvars
_clear = structlog.contextvars.clear_contextvars


def open_record(request: web.Request, clock: Clock, make_ulid: Callable[[], str]) -> RequestRecord:
    """Keep a valid caller ``X-Request-Id`` or make ``req_<ULID>``; the record lives on the request."""
    request_id = accept_or_generate(request.headers.get("X-Request-Id"), make_ulid)
    record = request[RECORD] = RequestRecord(
        request_id=request_id,
        started_at=clock.wall(),
        method=request.method,
        path=request.raw_path.split("?", 1)[0][:512],
    )
    _clear()
    _bind(requestId=request_id)
    return record


SERVER = "pmc-gateway"  # never a library's name or version (SPEC §4)


def echo_request_id(response: web.StreamResponse, record: RequestRecord) -> None:
    """Every answer carries the id its record and log lines are under, and says who made it."""
    headers = response.headers
    headers["X-Request-Id"] = record.request_id
    headers["Server"] = SERVER
