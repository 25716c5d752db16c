"""Turns every refusal and failure into the SPEC's envelope; no traceback ever reaches a caller."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import errors
from gateway.envelope import error_response
from gateway.middleware.keys import RECORD

log = structlog.get_logger("gateway.errors")

_BY_STATUS: dict[int, type[errors.Refusal]] = {
    400: errors.BadRequest,
    404: errors.NotFound,
    405: errors.NotFound,
    413: errors.PayloadTooLarge,
}


class InternalError(errors.Refusal):
    status, code = 500, "INTERNAL"


def error_envelope_middleware() -> web.middleware:  # type: ignore[valid-type]
    """Map ``Refusal`` and aiohttp's HTTP exceptions to envelopes; log and hide anything else."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _answer(request, handler)
        record = request[RECORD]
        if record.client is not None:  # proxied: say how many upstream attempts it took
            response.headers["X-Gateway-Attempts"] = str(len(record.attempts))
        return response

    return middleware


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    record = request[RECORD]
    try:
        return await handler(request)
    except errors.Refusal as refusal:
        record.error_code = refusal.code
        return error_response(refusal, record.request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _BY_STATUS.get(exc.status, errors.BadRequest)
        message = {
            404: f"no route for {request.method} {record.path}",
            405: f"no route for {request.method} {record.path}",
            413: "request body is larger than server.max_body_bytes",
        }.get(exc.status, exc.reason)
        mapped = kind(message)
        record.error_code = mapped.code
        return error_response(mapped, record.request_id)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error", method=request.method, route=record.route)
        record.error_code = InternalError.code
        return error_response(InternalError("internal gateway error"), record.request_id)
