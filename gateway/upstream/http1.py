"""A small keep-alive HTTP/1.1 client for one origin, the upstream terminal's transport.

Why not aiohttp's client: its CPU per request was most of a bare aiohttp proxy's budget.
This one writes each request as one buffer and parses answers with httptools (llhttp,
Node's parser), at a fraction of that (figures: bench/README.md, "Why the hand-written
parts"). It does only what the
gateway needs: buffered bodies both ways, Content-Length or chunked or close-delimited
answers, a bounded pool of kept-alive connections, TLS, and a timeout per exchange.

Errors tell whether the request may have reached the upstream, which decides whether a
retry is safe: ``ConnectFailed`` (it did not), ``ExchangeTimeout`` / ``ExchangeFailed``
(it may have), ``ResponseTooLarge`` (it did, and trying again gives the same).

Pooled connections and the idle-close race (a server closes a kept-alive connection just as
a request is written on it; nginx's ``keepalive_timeout``). The rules, each safe on its own:

- A connection idle longer than the server keeps one is not reused. The server's figure is its
  ``Keep-Alive: timeout=N``, else learnt: the shortest idle age at which it closed one of ours.
  ``IDLE_MARGIN_S`` (at most a quarter of the figure) before that, it is retired, not raced.
- A request that must not be sent twice (``replayable=False``: POST/PATCH without an
  Idempotency-Key) is only written on a connection idle less than ``UNKNOWN_SERVER_IDLE_S``
  while the server's figure is unknown, and only after a peek at the socket shows no FIN, no
  RST and no stray byte waiting. It is never sent again by this module.
- A replayable request whose reused connection was closed by the server (EOF or RST) before
  a single byte of an answer came back is sent once more on a fresh connection. A server that
  closes an idle connection has not read what arrived after; one that read it and died is
  indistinguishable, which is why this is only done when sending twice is harmless.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httptools

Header = tuple[str, str]
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # default: an answer larger than this is refused, not buffered
IDLE_MARGIN_S = 0.25  # retire a connection this long (at most a quarter of it) before the server would close it
MIN_LEARNT_IDLE_S = 0.01  # a close sooner than this after an answer is not an idle timeout
UNKNOWN_SERVER_IDLE_S = 0.5  # a non-replayable request's limit while the server's figure is unknown


class Http1Error(Exception):
    sent = True


class ConnectFailed(Http1Error):
    """No connection: the request was not sent."""

    sent = False


class ExchangeTimeout(Http1Error):
    """No complete answer within the timeout; the request may have been sent."""


class ExchangeFailed(Http1Error):
    """The connection broke or the answer was not valid HTTP; the request may have been sent."""


class ResponseTooLarge(Http1Error):
    """The answer is larger than the limit: the same request would get the same answer."""


class BadHeader(Http1Error):
    """A header name or value that would split the request (CR, LF or NUL)."""

    sent = False


@dataclass(frozen=True, slots=True)
class Http1Response:
    status: int
    headers: list[Header]
    body: bytes


class Connection(asyncio.Protocol):
    """One socket; one exchange at a time."""

    def __init__(self, origin: Http1Origin) -> None:
        self._origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = True
        self.counted = True  # towards the origin's connection limit, until it closes
        self._parser = httptools.HttpResponseParser(self)
        self._fresh_parser = False
        self._skip_rest = False
        self._waiter: asyncio.Future[Http1Response] | None = None
        self._headers: list[Header] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_only = False
        self._until_close = False
        self.received_any = False  # a byte of the current exchange's answer came back
        self.peer_closed = False  # EOF or RST from the server, not a failure of ours
        self.closed_by_us = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: this connection is out of step
            if self._skip_rest:
                return
            self._fail(ExchangeFailed("unexpected bytes from the upstream"))
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ExchangeFailed("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ExchangeFailed(f"invalid HTTP answer from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self.peer_closed = not self.closed_by_us and (exc is None or isinstance(exc, ConnectionResetError | BrokenPipeError))
        if self._waiter is None and self.peer_closed and self.transport is not None:
            self._origin._closed_while_idle(self)
        self._origin._forget(self)
        if self._until_close:  # the answer's body ends where the connection does
            self._complete()
        self._fail(ExchangeFailed(f"the upstream closed the connection ({type(exc).__name__ if exc else 'EOF'})"))

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._origin._saw_keep_alive(self._headers)
        if self._head_only and status >= 200:
            # The parser cannot know a HEAD answer has no body: the answer ends here, and the
            # next exchange gets a fresh parser.
            if not self._parser.should_keep_alive():
                self.reusable = False
            self._fresh_parser = True
            self._skip_rest = True
            self._complete()
            return
        length = next((value for name, value in self._headers if name.lower() == "content-length"), None)
        if length is not None and length.strip().isdigit() and int(length) > self._origin.max_response_bytes:
            # deterministic: refuse at once, without pulling the body
            self._fail(ResponseTooLarge(f"the upstream answer is {int(length)} bytes, over upstream.max_response_bytes ({self._origin.max_response_bytes})"))
            return
        framed = any(name.lower() in ("content-length", "transfer-encoding") for name, _ in self._headers)
        self._until_close = not framed and status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > self._origin.max_response_bytes:
            self._fail(ResponseTooLarge(f"the upstream answer is larger than upstream.max_response_bytes ({self._origin.max_response_bytes})"))

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # 103 Early Hints and the like: the real answer follows
            self._headers = []
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        self._complete()

    # -- one exchange ---------------------------------------------------------------------
    def exchange(self, data: bytes, head_only: bool) -> asyncio.Future[Http1Response]:
        assert self.transport is not None
        if self._fresh_parser:
            self._parser, self._fresh_parser = httptools.HttpResponseParser(self), False
        self._skip_rest = False
        self._waiter = self._origin.loop.create_future()
        self._headers, self._body, self._body_size = [], [], 0
        self._head_only, self._until_close = head_only, False
        self.received_any = False
        self.transport.write(data)
        return self._waiter

    def looks_open(self) -> bool:
        """A peek at the socket: nothing waiting on an idle connection (no FIN, RST or stray byte)."""
        if self.transport is None or self.transport.is_closing():
            return False
        raw = self.transport.get_extra_info("socket")
        if raw is None:
            return True
        try:
            with socket.fromfd(raw.fileno(), raw.family, raw.type) as peek:  # a dup: uvloop's lends no recv
                return not peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _complete(self) -> None:
        self._until_close = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Http1Response(self._parser.get_status_code(), self._headers, b"".join(self._body)))

    def _fail(self, exc: Http1Error) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.closed_by_us = True
            self.transport.abort()

    def timed_out(self) -> None:
        self._fail(ExchangeTimeout("the upstream did not answer within the attempt timeout"))


class Http1Origin:
    """Kept-alive connections to one ``scheme://host:port``, at most ``limit`` at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limit: int = 512,
        idle_timeout_s: float = 30.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        connect: Callable[[Http1Origin], Awaitable[Connection]] | None = None,
    ) -> None:
        self.host, self.port = host, port
        default_port = 443 if ssl_context else 80
        self.host_header = host if port == default_port else f"{host}:{port}"
        if ":" in host:  # an IPv6 literal
            self.host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        self.ssl_context = ssl_context
        self._limit = limit
        self._idle_timeout_s = idle_timeout_s
        self.max_response_bytes = max_response_bytes
        self.server_idle_s: float | None = None  # how long the server keeps an idle connection
        self.connect = connect or direct_connection
        self.absolute_form = ""  # "http://host": requests through a plain-http proxy name their target whole
        self.extra_headers: tuple[Header, ...] = ()  # e.g. Proxy-Authorization for that proxy
        self.via = ""  # how errors say the route: " (through the egress proxy http://p:3128)"
        self._idle: collections.deque[Connection] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.loop = asyncio.get_running_loop()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[Header],
        body: bytes,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        replayable: bool = True,
    ) -> Http1Response:
        data = self._encode(method, target, headers, body)
        loop = self.loop
        deadline = loop.time() + timeout_s
        connection, reused = await self._acquire(min(connect_timeout_s, timeout_s), replayable)
        try:
            return await self._exchange(connection, data, method == "HEAD", deadline)
        except ExchangeFailed:
            if not (reused and replayable and connection.peer_closed and not connection.received_any):
                raise
        # The server closed the pooled connection without reading what we wrote (module docstring).
        fresh, _ = await self._acquire(max(0.0, min(connect_timeout_s, deadline - loop.time())), replayable, fresh=True)
        return await self._exchange(fresh, data, method == "HEAD", deadline)

    async def _exchange(self, connection: Connection, data: bytes, head_only: bool, deadline: float) -> Http1Response:
        timer = self.loop.call_at(deadline, connection.timed_out)
        try:
            return await connection.exchange(data, head_only)
        except BaseException:
            connection.reusable = False
            raise
        finally:
            timer.cancel()
            self._release(connection)

    def _encode(self, method: str, target: str, headers: Sequence[Header], body: bytes) -> bytes:
        lines = [f"{method} {self.absolute_form}{target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in (*headers, *self.extra_headers)]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines)
        breaks = len(lines) - 1
        if head.count("\n") != breaks or head.count("\r") != breaks or "\0" in head:
            raise BadHeader("a header carries CR, LF or NUL")
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body

    # -- the pool ---------------------------------------------------------------------------
    async def _acquire(self, connect_timeout_s: float, replayable: bool, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection, and whether it was reused from the pool."""
        connection = None if fresh else self._take_idle(replayable)
        if connection is not None:
            return connection, True  # the common case: no timer, no await
        try:
            async with asyncio.timeout(connect_timeout_s):  # one bound for waiting and connecting
                while self._open >= self._limit:
                    await self._room()
                    connection = None if fresh else self._take_idle(replayable)
                    if connection is not None:
                        return connection, True
                self._open += 1
                try:
                    connection = await self.connect(self)
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
        except TimeoutError as exc:
            raise ConnectFailed(f"no upstream connection within the connect timeout{self.via}") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the upstream ({type(exc).__name__}){self.via}") from exc
        return connection, False

    def max_idle_s(self, replayable: bool) -> float:
        """How long a pooled connection may have been idle to carry a request (module docstring)."""
        if self.server_idle_s is not None:
            return min(self._idle_timeout_s, self.server_idle_s - min(IDLE_MARGIN_S, self.server_idle_s / 4))
        return self._idle_timeout_s if replayable else UNKNOWN_SERVER_IDLE_S

    def _take_idle(self, replayable: bool = True) -> Connection | None:
        now = self.loop.time()
        limit = self.max_idle_s(replayable)
        while self._idle:
            connection = self._idle.pop()  # the most recently used: least likely closed by the peer
            if connection.reusable and now - connection.idle_since < limit and (replayable or connection.looks_open()):
                return connection
            self._close(connection)
        return None

    def _closed_while_idle(self, connection: Connection) -> None:
        """The server closed one of our idle connections: it keeps them no longer than that."""
        age = self.loop.time() - connection.idle_since
        if connection.idle_since and age > MIN_LEARNT_IDLE_S and (self.server_idle_s is None or age < self.server_idle_s):
            self.server_idle_s = age

    def _saw_keep_alive(self, headers: Sequence[Header]) -> None:
        for name, value in headers:
            if name.lower() == "keep-alive":
                for part in value.split(","):
                    key, _, number = part.strip().partition("=")
                    with contextlib.suppress(ValueError):
                        if key.strip().lower() == "timeout" and float(number) > 0:
                            self.server_idle_s = float(number)

    async def _room(self) -> None:
        """Until a connection is released or closed."""
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _release(self, connection: Connection) -> None:
        if connection.reusable and connection.transport is not None and not connection.transport.is_closing():
            connection.idle_since = self.loop.time()
            self._idle.append(connection)
        else:
            self._close(connection)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close(self, connection: Connection) -> None:
        if connection.transport is not None and not connection.transport.is_closing():
            connection.closed_by_us = True
            connection.transport.close()
        self._forget(connection)

    def _forget(self, connection: Connection) -> None:
        """A connection closed (by either side): it no longer counts towards the limit."""
        if connection.counted:
            connection.counted = False
            self._open -= 1
            self._wake()
        if connection in self._idle:
            self._idle.remove(connection)

    async def close(self) -> None:
        while self._idle:
            self._close(self._idle.pop())


async def direct_connection(origin: Http1Origin) -> Connection:
    """A TCP (and TLS) connection straight to the origin."""
    _, connection = await origin.loop.create_connection(
        lambda: Connection(origin),
        origin.host,
        origin.port,
        ssl=origin.ssl_context,
        server_hostname=origin.host if origin.ssl_context else None,
    )
    return connection
