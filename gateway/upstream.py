"""The terminal of the outbound chain: one HTTP attempt on a pooled keep-alive session.

It owns one ``ClientSession`` per upstream base URL, applies the attempt timeout
(capped by the request's deadline), and maps aiohttp's exceptions into ours, telling
whether the request may have been sent (which decides whether retrying is safe).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiohttp
from yarl import URL

from gateway import errors, headers
from gateway.clock import Clock
from gateway.record import AttemptRecord
from gateway.telemetry import Telemetry
from gateway.types import UpstreamRequest, UpstreamResponse


def client_ssl_context(ca_file: str) -> ssl.SSLContext:
    """Verification always on; ``ca_file`` adds a private CA to the system bundle."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


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
        ca_file: str = "",
        pool_size: int = 512,
    ) -> None:
        self._base_urls = dict(base_urls)
        self._connect_timeout_s = connect_timeout_s
        self._attempt_timeout_s = attempt_timeout_s
        self._clock = clock
        self._ssl = client_ssl_context(ca_file)
        self._pool_size = pool_size
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._telemetry = telemetry
        self._hosts = {base: (URL(base).host or "", URL(base).port or 0) for base in self._base_urls.values()}

    async def start(self) -> None:
        for base_url in set(self._base_urls.values()):
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                ssl=self._ssl,
                ttl_dns_cache=60,
                keepalive_timeout=30,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # pass bodies through byte for byte
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp silently re-sends an idempotent request once when a pooled connection
            # drops. Every attempt must be the retry stage's decision and spend a budget
            # token, so that hidden retry is turned off (no public switch exists; pinned by
            # tests/test_proxy.py::test_lost_connection_after_sending_is_not_retried_for_post).
            session._retry_connection = False
            self._sessions[base_url] = session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        base_url = self._base_urls[request.environment]
        session = self._sessions[base_url]
        host, port = self._hosts[base_url]
        url = base_url + request.target
        started = self._clock.monotonic()
        remaining = request.deadline - started
        attempt = AttemptRecord(attempt=request.attempt, delay_ms=request.delay_before_s * 1000)
        request.record.attempts.append(attempt)
        span, traceparent = self._telemetry.start_attempt_span(request, host, port, url.split("?", 1)[0])
        try:
            if remaining <= 0:
                raise errors.UpstreamTimeout("deadline passed before the attempt", sent=False)
            timeout = aiohttp.ClientTimeout(
                total=min(self._attempt_timeout_s, remaining),
                connect=min(self._connect_timeout_s, remaining),
            )
            response = await self._send(session, url, request, traceparent, timeout)
            attempt.status = response.status
        except errors.UpstreamFailure as exc:
            attempt.error = exc.code
            raise
        finally:
            elapsed = self._clock.monotonic() - started
            attempt.latency_ms = elapsed * 1000
            self._telemetry.end_attempt(span, attempt.status, attempt.error)  # ends the span
            self._telemetry.attempt_finished(request, attempt.status, attempt.error, elapsed)
        return response

    async def _send(
        self,
        session: aiohttp.ClientSession,
        url: str,
        request: UpstreamRequest,
        traceparent: str,
        timeout: aiohttp.ClientTimeout,
    ) -> UpstreamResponse:
        outgoing = [*request.headers, ("X-Request-Id", request.request_id), ("traceparent", traceparent)]
        try:
            async with session.request(
                request.method,
                URL(url, encoded=True),
                headers=outgoing,
                data=request.body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                body = await response.read()
                pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
                return UpstreamResponse(response.status, headers.response_headers(pairs), body)
        except aiohttp.ConnectionTimeoutError as exc:
            raise errors.UpstreamUnavailable("timed out connecting to the upstream", sent=False) from exc
        except aiohttp.ClientConnectorError as exc:
            raise errors.UpstreamUnavailable(
                f"cannot connect to the upstream ({type(exc).__name__})", sent=False
            ) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise errors.UpstreamTimeout("the upstream did not answer within the attempt timeout", sent=True) from exc
        except aiohttp.ClientError as exc:
            raise errors.UpstreamUnavailable(
                f"the upstream connection failed ({type(exc).__name__})", sent=True
            ) from exc
        except asyncio.CancelledError:
            raise
