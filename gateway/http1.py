"""A small keep-alive HTTP/1.1 client for one origin, the upstream terminal's transport.

Why not aiohttp's client: it cost ~70 µs of CPU per request here, most of a bare
aiohttp proxy's budget (bench/README.md). This one writes each request as one buffer and
parses answers with httptools (llhttp, Node's parser), ~15 µs. It does only what the
gateway needs: buffered bodies both ways, Content-Length or chunked or close-delimited
answers, a bounded pool of kept-alive connections, TLS, and a timeout per exchange.

Errors tell whether the request may have reached the upstream, which decides whether a
retry is safe: ``ConnectFailed`` (it did not), ``ExchangeTimeout`` / ``ExchangeFailed``
(it may have). A pooled connection is never silently re-sent on.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import httptools

Header = tuple[str, str]
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # an answer larger than this is refused, not buffered


class Http1Error(Exception):
    sent = True


class ConnectFailed(Http1Error):
    """No connection: the request was not sent."""

    sent = False


class ExchangeTimeout(Http1Error):
    """No complete answer within the timeout; the request may have been sent."""


class ExchangeFailed(Http1Error):
    """The connection broke or the answer was not valid HTTP; the request may have been sent."""


class BadHeader(Http1Error):
    """A header name or value that would split the request (CR, LF or NUL)."""

    sent = False


@dataclass(frozen=True, slots=True)
class Http1Response:
    status: int
    headers: list[Header]
    body: bytes


class _Connection(asyncio.Protocol):
    """One socket; one exchange at a time."""

    def __init__(self, origin: Http1Origin) -> None:
        self._origin = origin
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reusable = True
        self.counted = True  # towards the origin's connection limit, until it closes
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Http1Response] | None = None
        self._headers: list[Header] = []
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_only = False
        self._until_close = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: this connection is out of step
            self._fail(ExchangeFailed("unexpected bytes from the upstream"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ExchangeFailed("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ExchangeFailed(f"invalid HTTP answer from the upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._origin._forget(self)
        if self._until_close:  # the answer's body ends where the connection does
            self._complete()
        self._fail(ExchangeFailed(f"the upstream closed the connection ({type(exc).__name__ if exc else 'EOF'})"))

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self._head_only:  # the parser cannot know a HEAD answer has no body
            self.reusable = False
            self._complete()
            return
        status = self._parser.get_status_code()
        framed = any(name.lower() in ("content-length", "transfer-encoding") for name, _ in self._headers)
        self._until_close = not framed and status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_size += len(body)
        if self._body_size > MAX_RESPONSE_BYTES:
            self._fail(ExchangeFailed(f"the upstream answer is larger than {MAX_RESPONSE_BYTES} bytes"))

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
        self._waiter = self._origin.loop.create_future()
        self._headers, self._body, self._body_size = [], [], 0
        self._head_only, self._until_close = head_only, False
        self.transport.write(data)
        return self._waiter

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
    ) -> None:
        self.host, self.port = host, port
        default_port = 443 if ssl_context else 80
        self._host_header = host if port == default_port else f"{host}:{port}"
        if ":" in host:  # an IPv6 literal
            self._host_header = f"[{host}]" if port == default_port else f"[{host}]:{port}"
        self._ssl = ssl_context
        self._limit = limit
        self._idle_timeout_s = idle_timeout_s
        self._idle: collections.deque[_Connection] = collections.deque()
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
    ) -> Http1Response:
        data = self._encode(method, target, headers, body)
        loop = self.loop
        deadline = loop.time() + timeout_s
        connection = await self._acquire(min(connect_timeout_s, timeout_s))
        timer = loop.call_at(deadline, connection.timed_out)
        try:
            response = await connection.exchange(data, method == "HEAD")
        except BaseException:
            connection.reusable = False
            raise
        finally:
            timer.cancel()
            self._release(connection)
        return response

    def _encode(self, method: str, target: str, headers: Sequence[Header], body: bytes) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines)
        breaks = len(lines) - 1
        if head.count("\n") != breaks or head.count("\r") != breaks or "\0" in head:
            raise BadHeader("a header carries CR, LF or NUL")
        return head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body

    # -- the pool ---------------------------------------------------------------------------
    async def _acquire(self, connect_timeout_s: float) -> _Connection:
        connection = self._take_idle()
        if connection is not None:
            return connection  # the common case: no timer, no await
        try:
            async with asyncio.timeout(connect_timeout_s):  # one bound for waiting and connecting
                while self._open >= self._limit:
                    await self._room()
                    connection = self._take_idle()
                    if connection is not None:
                        return connection
                self._open += 1
                try:
                    _, connection = await self.loop.create_connection(
                        lambda: _Connection(self),
                        self.host,
                        self.port,
                        ssl=self._ssl,
                        server_hostname=self.host if self._ssl else None,
                    )
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
        except TimeoutError as exc:
            raise ConnectFailed("no upstream connection within the connect timeout") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to the upstream ({type(exc).__name__})") from exc
        return connection

    def _take_idle(self) -> _Connection | None:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: least likely closed by the peer
            if connection.reusable and now - connection.idle_since < self._idle_timeout_s:
                return connection
            self._close(connection)
        return None

    async def _room(self) -> None:
        """Until a connection is released or closed."""
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _release(self, connection: _Connection) -> None:
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

    def _close(self, connection: _Connection) -> None:
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.close()
        self._forget(connection)

    def _forget(self, connection: _Connection) -> None:
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
