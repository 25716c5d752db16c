"""Reading a request body within ``server.max_body_bytes``, as one copy."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge

BODY_TIMEOUT_S = 10.0  # a caller trickling its body cannot hold a handler longer than this


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    if not request.body_exists:
        return b""
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.read()  # client_max_size enforces the limit for chunked bodies
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes") from exc
    except TimeoutError as exc:
        raise BadRequest(f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s") from exc
