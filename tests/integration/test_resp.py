"""The request path's pipelined Redis connection, against a real redis-server and real sockets."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.errors import StoreError
from gateway.store.protocols import BudgetAsk
from gateway.store.redis import RedisStore
from gateway.store.resp import RespConnection, RespConnectionError, RespReplyError
from tests.support.servers import RedisServer

pytestmark = pytest.mark.redis


async def test_concurrent_callers_each_get_their_own_reply(redis_url: str) -> None:
    connection = RespConnection(redis_url, op_timeout_s=1)
    try:
        values = [f"value-{i}".encode() * (i % 7 + 1) for i in range(300)]
        await asyncio.gather(*(connection.call("SET", f"k{i}", v) for i, v in enumerate(values)))
        got = await asyncio.gather(*(connection.call("GET", f"k{i}") for i in range(300)))
        assert got == values
        assert await connection.pipeline([("INCR", "n"), ("INCR", "n"), ("GET", "missing")]) == [1, 2, None]
    finally:
        await connection.close()


async def test_error_replies_raise_and_leave_the_connection_usable(redis_url: str) -> None:
    connection = RespConnection(redis_url, op_timeout_s=1)
    try:
        await connection.call("SET", "text", "x")
        with pytest.raises(RespReplyError, match="WRONGTYPE"):
            await connection.call("LPUSH", "text", "y")
        replies = await connection.pipeline([("INCR", "text"), ("PING",)])
        assert isinstance(replies[0], RespReplyError)
        assert replies[1] == b"PONG"
    finally:
        await connection.close()


async def test_a_silent_server_fails_calls_after_the_op_timeout() -> None:
    """A peer that accepts and never answers (a hung Redis): the call fails, it does not hang."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = RespConnection(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(RespConnectionError, match="did not answer within 200 ms"):
            await connection.call("PING")
        assert 0.19 <= time.monotonic() - started < 1.0
    finally:
        await connection.close()
        server.close()


async def test_refused_connection_fails_fast_and_recovers_when_redis_returns() -> None:
    server = RedisServer()
    connection = RespConnection(server.url, op_timeout_s=0.25)
    try:
        with pytest.raises(RespConnectionError, match="cannot connect"):
            await connection.call("PING")
        server.start()
        assert await connection.call("PING") == b"PONG"
        server.stop()  # killed under an open connection
        with pytest.raises(RespConnectionError):
            await connection.call("PING")
        server.start()
        assert await connection.call("PING") == b"PONG"
    finally:
        await connection.close()
        server.stop()


async def test_scripts_survive_a_script_cache_flush(redis_url: str) -> None:
    """EVALSHA falls back to EVAL on NOSCRIPT (a restarted or flushed Redis)."""
    store = RedisStore(redis_url)
    await store.start()
    try:
        ask = BudgetAsk("env:live", "web", limit=120, burst=1)
        first = await store.admit(ask, first=True)
        await store._fast.call("SCRIPT", "FLUSH")
        second = await store.admit(ask, first=True)
        assert first.granted and first.wait_s == 0
        assert not second.granted and second.limit == "key" and 0.4 < second.wait_s <= 0.5
    finally:
        await store.close()


async def test_store_errors_carry_the_cause(redis_url: str) -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    await store.start()
    try:
        with pytest.raises(StoreError, match="cannot connect to redis"):
            await store.pause("env:live", 1.0)
    finally:
        await store.close()


class _TimingPeer:
    """A RESP peer in its own thread (so it runs while the test's event loop is blocked):
    answers +OK to every command and notes when each command arrived."""

    def __init__(self) -> None:
        import socket
        import threading

        import hiredis

        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self.arrivals: list[tuple[float, list[bytes]]] = []
        self._reader = hiredis.Reader()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with connection:
            while data := connection.recv(65536):
                self._reader.feed(data)
                while (command := self._reader.gets()) is not False:
                    self.arrivals.append((time.monotonic(), command))
                    connection.sendall(b"+OK\r\n")

    def close(self) -> None:
        self._listener.close()


async def test_a_command_on_an_idle_connection_leaves_before_the_loop_turn_ends() -> None:
    """The first admission of a burst must not wait for the rest of the burst's work in
    the same loop turn (the added-latency benchmark's lockstep callers): it is written at once."""
    peer = _TimingPeer()
    connection = RespConnection(peer.url, op_timeout_s=2)
    try:
        assert await connection.call("PING") == b"OK"  # connected, nothing in flight
        call = asyncio.ensure_future(connection.call("SET", "a", "1"))
        await asyncio.sleep(0)  # the call runs up to awaiting its reply
        blocked_from = time.monotonic()
        time.sleep(0.3)  # the rest of a long loop turn: the loop cannot write now
        assert await call == b"OK"
        arrived = peer.arrivals[-1]
        assert arrived[1] == [b"SET", b"a", b"1"]
        assert arrived[0] < blocked_from + 0.2
    finally:
        await connection.close()
        peer.close()
