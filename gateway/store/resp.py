"""One pipelined Redis connection for the request path: the budget, pause and idempotency
scripts and the batched triage records.

Why not redis-py here: measured alone, redis-py's client CPU for the admission ``EVALSHA``
is as much as the rest of a proxied request should cost; this connection spends an eighth
of it (bench/README.md, "Why the hand-written parts"): commands are packed and
replies parsed by hiredis (C, the parser redis-py itself uses), every caller shares one
socket (RESP answers in order, so a FIFO of futures is the whole multiplexer), and the
commands issued in one event-loop turn while others are in flight leave in one write.
A command on an idle connection is written at once: a burst of callers (many answered in
the same instant) is handled in one long loop turn, and batching held the burst's first
admission until the last caller's work was done (the A/B is in bench/README.md; the price,
a little more CPU at saturation, where the connection is idle between most admissions). redis-py keeps everything off the
request path (heartbeats, breaker sync, webhooks, admin reads).

Failure model: a reply later than ``op_timeout_s`` (checked by one watchdog timer, not
a timer per call), a refused connect or a lost socket fails every call in flight with
``RespConnectionError``; the next call reconnects. Error replies raise ``RespReplyError``.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url

Command = Sequence[bytes | str | int | float]


def _pack(command: Command) -> bytes:
    # hiredis' type stub declares a 1-tuple; it takes any number of arguments
    packed: bytes = hiredis.pack_command(tuple(command))  # type: ignore[arg-type]
    return packed


class RespConnectionError(ConnectionError):
    """The connection failed, timed out or was lost; the command may or may not have run."""


class RespReplyError(Exception):
    """Redis answered with an error reply."""


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespConnection) -> None:
        self._owner = owner
        self._reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._owner._pending
        while (reply := self._reader.gets()) is not False:
            if not pending:  # an answer nobody asked for: the stream is out of step
                self._owner._abort(RespConnectionError("unexpected reply from redis"))
                return
            future = pending.popleft()[0]
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self, exc)


class RespConnection:
    def __init__(self, url: str, *, op_timeout_s: float, password: str | None = None, ca_file: str = "") -> None:
        options = parse_url(url)
        if password is not None:
            options["password"] = password
        self._host = options.get("host", "127.0.0.1")
        self._port = int(options.get("port", 6379))
        self._handshake: list[Command] = []
        if options.get("password") is not None:
            user = options.get("username")
            self._handshake.append(("AUTH", user, options["password"]) if user else ("AUTH", options["password"]))
        if options.get("db", 0):
            self._handshake.append(("SELECT", int(options["db"])))
        self._ssl = ssl.create_default_context(cafile=ca_file or None) if options.get("connection_class") is SSLConnection else None
        self._op_timeout_s = op_timeout_s
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._outgoing: list[bytes] = []
        self._watchdog: asyncio.TimerHandle | None = None

    # -- sending ---------------------------------------------------------------------------
    async def call(self, *command: bytes | str | int | float) -> Any:
        """Send one command; return its reply (bytes, int, list or None)."""
        if self._transport is None:
            await self._connect_or_fail()
        reply = await self._send([_pack(command)])
        if isinstance(reply, hiredis.ReplyError):
            raise RespReplyError(str(reply))
        return reply

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send several commands in one write; replies in order, error replies as ``RespReplyError`` values."""
        if not commands:
            return []
        if self._transport is None:
            await self._connect_or_fail()
        futures = self._enqueue([_pack(c) for c in commands])
        replies = await asyncio.gather(*futures)
        return [RespReplyError(str(r)) if isinstance(r, hiredis.ReplyError) else r for r in replies]

    def _send(self, packed: list[bytes]) -> asyncio.Future[Any]:
        return self._enqueue(packed)[0]

    def _enqueue(self, packed: list[bytes]) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures = [loop.create_future() for _ in packed]
        idle = not self._pending
        self._pending.extend((future, now) for future in futures)
        if idle and self._transport is not None:
            # Nothing in flight: send now, so Redis answers while this loop turn goes on
            # (a burst's first admission does not wait for the rest of the burst).
            self._transport.write(b"".join(packed))
        else:
            if not self._outgoing:
                loop.call_soon(self._flush)  # everything else queued in this turn leaves in one write
            self._outgoing.extend(packed)
        if self._watchdog is None:
            self._watchdog = loop.call_at(now + self._op_timeout_s, self._check_timeouts)
        return futures

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self._transport is not None and data:
            self._transport.write(data)

    def _check_timeouts(self) -> None:
        self._watchdog = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        oldest = self._pending[0][1]
        if loop.time() - oldest >= self._op_timeout_s:
            self._abort(RespConnectionError(f"redis did not answer within {self._op_timeout_s * 1000:.0f} ms"))
        else:
            self._watchdog = loop.call_at(oldest + self._op_timeout_s, self._check_timeouts)

    # -- connecting and failing ------------------------------------------------------------
    async def _connect_or_fail(self) -> None:
        await self._connect()
        if self._transport is None:  # connected, then lost before this caller ran
            raise RespConnectionError("connection to redis lost")

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self._open())
            task.add_done_callback(self._connected)
        await asyncio.shield(self._connecting)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._op_timeout_s):
            transport, protocol = await loop.create_connection(
                lambda: _Protocol(self), self._host, self._port, ssl=self._ssl
            )
        self._transport, self._protocol = transport, protocol
        for command in self._handshake:
            reply = await self._send([_pack(command)])
            if isinstance(reply, hiredis.ReplyError):
                self._abort(RespConnectionError(f"redis refused the connection set-up: {reply}"))
                raise RespConnectionError(str(reply))

    def _connected(self, task: asyncio.Future[None]) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is None or connecting.done():
            return
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is None:
            connecting.set_result(None)
        else:
            connecting.set_exception(RespConnectionError(f"cannot connect to redis: {type(exc).__name__}: {exc}"))
            connecting.exception()  # a connect nobody awaits any more must not warn

    def _abort(self, exc: Exception) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        self._fail_pending(exc)
        if transport is not None:
            transport.abort()

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # an older connection, already replaced
        self._transport, self._protocol = None, None
        self._fail_pending(RespConnectionError(f"connection to redis lost ({exc or 'closed by the server'})"))

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, collections.deque()
        self._outgoing = []
        for future, _ in pending:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a caller that has gone must not log a warning

    def reset(self) -> None:
        """Drop the connection (when idle); the next call opens a fresh one."""
        if not self._pending:
            self._abort(RespConnectionError("reset"))

    async def close(self) -> None:
        self._abort(RespConnectionError("closed"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
