"""Reading a request body within ``server.max_body_bytes``, as one copy."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body; a caller trickling it cannot hold a handler longer than ``timeout_s``."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    if not request.body_exists:
        return b""
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()  # client_max_size enforces the limit for chunked bodies
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes") from exc
    except TimeoutError as exc:
        raise BadRequest(f"the request body did not arrive within {timeout_s:g} s") from exc
