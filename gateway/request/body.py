"""Reading a request body within ``server.max_body_bytes``, as one copy."""

from __future__ import annotations

import asyncio
import json

import orjson
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


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def check_json(body: bytes, content_type: str | None) -> None:
    """A body that says it is JSON must parse as JSON (SPEC §4): refused here, naming where it
    fails, so a malformed booking costs the caller no upstream call and no budget slot."""
    if not body or not _is_json(content_type):
        return
    try:
        orjson.loads(body)
    except ValueError:
        try:
            json.loads(body)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
        except UnicodeDecodeError:
            raise BadRequest("the body is not valid JSON: it is not UTF-8") from None
        # valid for the standard parser (a number past 64 bits): orjson's limit, not the caller's error
