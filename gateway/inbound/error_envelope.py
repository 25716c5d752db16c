"""Turns every refusal and failure into the SPEC's envelope; no traceback ever reaches a caller."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from gateway import errors
from gateway.request.envelope import error_response
from gateway.request.record import RequestRecord

log = structlog.get_logger("gateway.errors")

_BY_STATUS: dict[int, type[errors.Refusal]] = {
    400: errors.BadRequest,
    404: errors.NotFound,
    405: errors.NotFound,
    413: errors.PayloadTooLarge,
}


class InternalError(errors.Refusal):
    status, code = 500, "INTERNAL"


def envelope_for(exc: BaseException, request: web.Request, record: RequestRecord) -> web.StreamResponse:
    """The envelope answering ``exc``: a ``Refusal`` as itself, aiohttp's HTTP errors mapped,
    anything else logged and hidden behind 500 INTERNAL. Cancellation and aiohttp's non-error
    answers (redirects) are raised again."""
    if isinstance(exc, errors.Refusal):
        record.error_code = exc.code
        return error_response(exc, record.request_id)
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        kind = _BY_STATUS.get(exc.status, errors.BadRequest)
        message = {
            404: f"no route for {request.method} {record.path}",
            405: f"no route for {request.method} {record.path}",
            413: "request body is larger than server.max_body_bytes",
        }.get(exc.status, exc.reason)
        mapped = kind(message)
        record.error_code = mapped.code
        return error_response(mapped, record.request_id)
    if isinstance(exc, web.HTTPException | asyncio.CancelledError) or not isinstance(exc, Exception):
        raise exc
    log.error("unhandled_error", method=request.method, route=record.route, exc_info=exc)
    record.error_code = InternalError.code
    return error_response(InternalError("internal gateway error"), record.request_id)


def count_attempts(response: web.StreamResponse, record: RequestRecord) -> None:
    """Every answer to a /v1/ request says how many upstream attempts it took (SPEC §4), the
    gateway's own refusals included (0)."""
    if record.proxied or record.path.startswith("/v1/"):
        response.headers["X-Gateway-Attempts"] = str(record.own_attempts)
