"""The one builder of error bodies the gateway writes itself (SPEC §4)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from gateway.errors import Refusal

JSON = "application/json"


def error_body(code: str, message: str, request_id: str, details: Mapping[str, str] | None = None) -> bytes:
    return json.dumps(
        {
            "status": "error",
            "code": code,
            "message": message,
            "requestId": request_id,
            "source": "gateway",
            **(details or {}),
        },
        separators=(",", ":"),
    ).encode()


def error_response(refusal: Refusal, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id, **refusal.headers}
    return web.Response(
        status=refusal.status,
        body=error_body(refusal.code, refusal.message, request_id, refusal.details),
        content_type=JSON,
        headers=headers,
    )


def json_response(payload: object, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type=JSON,
        headers=headers,
    )
