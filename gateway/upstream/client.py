"""The terminal of the outbound chain: one HTTP attempt on a pooled keep-alive connection.

It owns one ``Http1Origin`` (http1.py) per upstream base URL, applies the attempt timeout
(capped by the request's deadline), and maps transport errors into ours, telling whether
the request may have been sent (which decides whether retrying is safe).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Protocol

from opentelemetry.trace import Span
from yarl import URL

from gateway import errors
from gateway.core.clock import Clock
from gateway.observability.after_answer import AfterAnswer
from gateway.observability.stage_facts import RecordFacts
from gateway.observability.telemetry import Telemetry
from gateway.request import headers
from gateway.request.record import AttemptRecord
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.upstream.egress_proxy import proxy_for, via
from gateway.upstream.http1 import (
    BadHeader,
    ExchangeTimeout,
    Http1Error,
    Http1Origin,
    ResponseTooLarge,
)


def client_ssl_context(ca_file: str) -> ssl.SSLContext:
    """Verification always on; ``ca_file`` adds a private CA to the system bundle."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class AttemptObserver(Protocol):
    def attempt_started(self, request: UpstreamRequest) -> AttemptRecord: ...


ABANDONED = "abandoned"  # an attempt cancelled before its answer: its connection is closed, never pooled


class UpstreamClient:
    """Sends one attempt; records its outcome in the request's triage record."""

    name = "upstream"

    def __init__(
        self,
        *,
        base_urls: Mapping[str, str],
        connect_timeout_s: float,
        attempt_timeout_s: float,
        clock: Clock,
        telemetry: Telemetry,
        after_answer: AfterAnswer,
        ca_file: str = "",
        pool_size: int = 512,
        proxy_url: str = "",
        max_response_bytes: int = 64 * 1024 * 1024,
        environ: Mapping[str, str] | None = None,
        attempts: AttemptObserver | None = None,  # writes each attempt into the request's record
    ) -> None:
        self._attempts = attempts or RecordFacts()
        self._proxy_url = proxy_url
        self._max_response_bytes = max_response_bytes
        self._environ = dict(environ or {})  # the proxy variables, handed in by the composition root
        self._base_urls = dict(base_urls)
        self._connect_timeout_s = connect_timeout_s
        self._attempt_timeout_s = attempt_timeout_s
        self._clock = clock
        self._ssl = client_ssl_context(ca_file)
        self._pool_size = pool_size
        self._origins: dict[str, Http1Origin] = {}
        self._telemetry = telemetry
        self._after_answer = after_answer
        self._hosts = {base: (URL(base).host or "", URL(base).port or 0) for base in self._base_urls.values()}
        # a path in base_url (https://proxy.internal/pinmycal) is kept as a prefix of every target
        self._prefixes = {base: URL(base).raw_path.rstrip("/") for base in self._base_urls.values()}

    async def start(self) -> None:
        for base_url in set(self._base_urls.values()):
            host, port = self._hosts[base_url]
            origin = self._origins[base_url] = Http1Origin(
                host,
                port,
                ssl_context=self._ssl if URL(base_url).scheme == "https" else None,
                limit=self._pool_size,
                idle_timeout_s=30,
                max_response_bytes=self._max_response_bytes,
            )
            proxy = proxy_for(base_url, self._proxy_url, self._environ)
            if proxy is not None:
                via(proxy, origin)

    async def close(self) -> None:
        for origin in self._origins.values():
            await origin.close()
        self._origins.clear()

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        base_url = self._base_urls[request.environment]
        origin = self._origins[base_url]
        url = base_url + request.target
        started = self._clock.monotonic()
        remaining = request.deadline - started
        attempt = self._attempts.attempt_started(request)
        span, traceparent = self._telemetry.start_attempt_span(request, origin.host, origin.port, url.split("?", 1)[0])
        try:
            if remaining <= 0:
                raise errors.UpstreamTimeout("deadline passed before the attempt", sent=False)
            response = await self._send(origin, request, traceparent, remaining, self._prefixes[base_url])
            attempt.status = response.status
        except errors.UpstreamFailure as exc:
            attempt.error = exc.code
            raise
        except asyncio.CancelledError:
            attempt.error = ABANDONED  # the other of a hedged pair answered first, or the caller left
            raise
        finally:
            elapsed = self._clock.monotonic() - started
            attempt.latency_ms = elapsed * 1000
            # The span's end and the metric wait for a quiet moment (after_answer.py).
            self._after_answer.defer(
                self._account, request, span, attempt.status, attempt.error, elapsed, self._telemetry.tracer.now_ns()
            )
        return response

    def _account(self, request: UpstreamRequest, span: Span, status: int | None, error: str | None, elapsed: float, end_ns: int) -> None:
        self._telemetry.end_attempt(span, status, error, end_ns)
        self._telemetry.attempt_finished(request, status, error, elapsed)

    async def _send(self, origin: Http1Origin, request: UpstreamRequest, traceparent: str, remaining: float, prefix: str) -> UpstreamResponse:
        outgoing = [*request.headers, ("X-Request-Id", request.request_id)]
        if traceparent:
            outgoing.append(("traceparent", traceparent))
        try:
            answer = await origin.request(
                request.method,
                prefix + request.target,
                outgoing,
                request.body,
                timeout_s=min(self._attempt_timeout_s, remaining),
                connect_timeout_s=min(self._connect_timeout_s, remaining),
                replayable=request.idempotent,
            )
        except ExchangeTimeout as exc:
            raise errors.UpstreamTimeout(str(exc), sent=True) from exc
        except ResponseTooLarge as exc:
            raise errors.UpstreamUnavailable(str(exc), sent=True, retryable=False) from exc
        except BadHeader as exc:
            raise errors.BadRequest("a request header cannot be forwarded (CR, LF or NUL in it)") from exc
        except Http1Error as exc:
            raise errors.UpstreamUnavailable(str(exc), sent=exc.sent) from exc
        return UpstreamResponse(answer.status, headers.response_headers(answer.headers, head=request.method == "HEAD"), answer.body)
