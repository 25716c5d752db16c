"""The connection layer beneath aiohttp's request handling: two things it does not do itself.

1. Bounds callers that trickle a request's header block (slowloris). aiohttp bounds an
   idle keep-alive connection (``keepalive_timeout``, 75 s) but not a fresh connection that
   trickles its first header block forever, and a keep-alive connection whose next request
   trickles is held until that 75 s. ``HeaderGuard`` closes a connection when a request's
   header block is not complete within ``header_timeout_s``: for the first request counted
   from the connection, for each later one from its first byte (an idle keep-alive
   connection is aiohttp's to bound). Everything passes to aiohttp's protocol untouched.
   Slow bodies are bounded where bodies are read (body.py).
2. Answers requests aiohttp's HTTP parser refuses (malformed request line or headers,
   conflicting Content-Length/Transfer-Encoding) in the gateway's envelope, logged as one
   line without a traceback, instead of aiohttp's plain text and logged traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway import errors
from gateway.core.ids import new_request_id
from gateway.inbound import aiohttp_seams
from gateway.request.envelope import error_response

log = structlog.get_logger("gateway.http")

HEADER_END = b"\r\n\r\n"


class HeaderGuard(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, header_timeout_s: float) -> None:
        self._inner = inner
        self._timeout = header_timeout_s
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_header = True
        self._tail = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._arm()  # a connection that never sends a byte is bounded too
        self._inner.connection_made(transport)

    def request_answered(self) -> None:
        """The next bytes start the next request: its header block is timed from the first.
        A timer armed by bytes before this answer (its body's) no longer applies."""
        self._awaiting_header = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def _expire(self) -> None:
        if self._transport is not None:  # not isinstance: uvloop's transports are not asyncio.Transport
            cast(asyncio.Transport, self._transport).abort()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_header:
            if HEADER_END in self._tail + data[:4096] or HEADER_END in data:
                self._awaiting_header = False
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            elif self._timer is None:
                self._arm()
        # Always kept: a header end can straddle the chunks before and after an answer.
        self._tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class EnvelopeRequestHandler(RequestHandler):
    """aiohttp's handler, with parse errors answered in the SPEC's envelope, telling its
    ``HeaderGuard`` when each answer is finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.make_ulid: Callable[[], str] = lambda: "0" * 26  # set by GuardedTCPSite's factory
        self.on_answered: Callable[[], None] = lambda: None

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: float | None) -> None:
        # aiohttp calls this once per finished answer (whether or not an access logger is set).
        super().log_access(request, response, time)
        self.on_answered()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        request_id = new_request_id(self.make_ulid)
        # First line only: aiohttp's message can quote the offending header (an Authorization line too),
        # so its trailing colon (which introduced that line) goes as well.
        reason = (message or str(exc) or "malformed request").split("\n", 1)[0][:200].rstrip().rstrip(":")
        log.warning("bad_http_request", requestId=request_id, sourceIp=request.remote, status=status, reason=reason)
        refusal = errors.PayloadTooLarge(reason) if status == 413 else errors.BadRequest(f"malformed HTTP request: {reason}")
        response = error_response(refusal, request_id)
        response.headers["X-Gateway-Attempts"] = "0"  # refused before any route: no upstream attempt
        response.headers["Server"] = "pmc-gateway"
        response.force_close()
        return response


class GuardedTCPSite(web.TCPSite):
    """``web.TCPSite`` whose connections first pass through ``HeaderGuard``."""

    def __init__(
        self, runner: web.BaseRunner, *args: object, header_timeout_s: float = 10.0, make_ulid: Callable[[], str], **kwargs: object
    ) -> None:
        super().__init__(runner, *args, **kwargs)  # type: ignore[arg-type]
        self._header_timeout_s = header_timeout_s
        self._make_ulid = make_ulid

    async def start(self) -> None:
        broken = aiohttp_seams.problems(deep=False)
        if broken:
            raise RuntimeError("this aiohttp no longer has what the connection guard needs: " + "; ".join(broken))
        timeout, make_ulid = self._header_timeout_s, self._make_ulid
        if self._runner.server is None:
            raise RuntimeError("the runner is not set up")
        real_server: web.Server = self._runner.server
        if not hasattr(real_server, "_loop") or not hasattr(real_server, "_kwargs"):
            raise RuntimeError("this aiohttp's web.Server has no _loop/_kwargs: the connection guard cannot build handlers")

        class _Factory:  # keeps the attributes aiohttp reads off the server object
            def __getattr__(self, name: str) -> object:
                return getattr(real_server, name)

            def __call__(self) -> asyncio.Protocol:
                handler = aiohttp_seams.new_request_handler(real_server, EnvelopeRequestHandler)
                guard = HeaderGuard(handler, timeout)
                cast(EnvelopeRequestHandler, handler).on_answered = guard.request_answered
                cast(EnvelopeRequestHandler, handler).make_ulid = make_ulid
                return guard

        with aiohttp_seams.runner_serving(self._runner, _Factory()):
            await super().start()
