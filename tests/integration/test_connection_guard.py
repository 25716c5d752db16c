"""The header guard beneath aiohttp (gateway/inbound/connection_guard.py), on a real socket: every
request's header block must arrive within the header timeout, while an idle keep-alive
connection stays aiohttp's to bound."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.core.ids import MonotonicUlids
from gateway.inbound.connection_guard import GuardedTCPSite
from tests.support.servers import free_port

HEADER_TIMEOUT_S = 0.3
REQUEST = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75)
    await runner.setup()
    chosen = free_port()
    ids = MonotonicUlids(random.Random(1), lambda: 1_773_135_000_000)
    await GuardedTCPSite(runner, "127.0.0.1", chosen, header_timeout_s=HEADER_TIMEOUT_S, make_ulid=ids).start()
    yield chosen
    await runner.cleanup()


async def answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return head + await asyncio.wait_for(reader.readexactly(length), 2)


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> float | None:
    """Seconds until the peer closed, or None if it was still open after ``limit_s``."""
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(100), limit_s)
    except TimeoutError:
        return None
    except ConnectionError:
        return time.monotonic() - started
    assert data == b"", data
    return time.monotonic() - started


async def test_a_first_request_that_trickles_its_header_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
    assert await closed_after(reader, 3) is not None
    writer.close()


async def test_a_later_request_that_trickles_its_header_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    assert b"pong" in await answer(reader)
    await asyncio.sleep(HEADER_TIMEOUT_S * 2)  # idle between requests: not the guard's to time
    writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # then the header never ends
    seconds = await closed_after(reader, 3)  # before the guard, held for the 75 s keep-alive
    assert seconds is not None and seconds < HEADER_TIMEOUT_S + 1.0, seconds
    writer.close()


async def test_an_idle_keep_alive_connection_outlives_the_header_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):
        writer.write(REQUEST)
        assert b"pong" in await answer(reader)
        assert await closed_after(reader, HEADER_TIMEOUT_S * 3) is None
    writer.close()


async def test_a_later_header_in_pieces_within_the_timeout_is_answered(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    assert b"pong" in await answer(reader)
    for piece in (b"GET /ping HTTP/1.1\r\n", b"Host: x\r\n\r", b"\n"):  # the end straddles two pieces
        writer.write(piece)
        await asyncio.sleep(HEADER_TIMEOUT_S / 5)
    assert b"pong" in await answer(reader)
    writer.close()
