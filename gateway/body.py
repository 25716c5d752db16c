"""Reading a request body within ``server.max_body_bytes``, as one copy."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    if not request.body_exists:
        return b""
    try:
        return await request.read()  # client_max_size enforces the limit for chunked bodies
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes") from exc
