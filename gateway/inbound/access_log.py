"""One JSON access-log line and one SERVER span per request (SPEC §8), then the record
goes to whoever keeps it (triage writer, SLO figures) — after the answer is decided."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from gateway.core.clock import Clock
from gateway.observability import names
from gateway.observability.after_answer import AfterAnswer
from gateway.observability.log import access_line
from gateway.observability.telemetry import Telemetry
from gateway.request.record import RequestRecord

ADMIN_PREFIX = "/_gateway/"
CLIENT_CLOSED = 499  # the caller went away before the answer (nginx's convention)


def _route_of(request: web.Request, record: RequestRecord) -> str:
    if record.route:
        return record.route
    match = request.match_info
    resource = match.route.resource if match is not None and match.route is not None else None
    if resource is None or (not match.route.name and resource.canonical == "/{tail:.*}"):
        return "/{unmatched}"
    return resource.canonical


class RequestObserver:
    """Times each request inside a SERVER span; when its answer is decided, logs, measures and
    hands on its record."""

    def __init__(
        self,
        *,
        telemetry: Telemetry,
        clock: Clock,
        after_answer: AfterAnswer,
        on_complete: Sequence[Callable[[RequestRecord], None]] = (),
    ) -> None:
        self._telemetry = telemetry
        self._clock = clock
        self._after_answer = after_answer
        self._on_complete = tuple(on_complete)

    def started(self, request: web.Request, record: RequestRecord) -> tuple[float, trace.Span, object]:
        if request.raw_path.startswith(ADMIN_PREFIX):
            self._after_answer.drain()  # status, metrics and triage reads see every request answered before
        headers = request.headers
        carrier = {k: v for k in ("traceparent", "tracestate") if (v := headers.get(k))}
        span, token = self._telemetry.start_server_span(request.method, carrier)
        record.trace_id = f"{span.get_span_context().trace_id:032x}"
        return self._clock.monotonic(), span, token

    def finished(self, request: web.Request, record: RequestRecord, status: int, watch: tuple[float, trace.Span, object]) -> None:
        """Fix the outcome now; account for it once the answer is on its way (``_account``)."""
        started, span, token = watch
        elapsed = self._clock.monotonic() - started
        record.status = status
        record.latency_ms = elapsed * 1000
        record.route = _route_of(request, record)
        self._telemetry.detach_server_span(token)
        # Span, metric, access line, triage record and SLO tally wait for a quiet moment
        # (after_answer.py): the answers of a burst of requests are written before any of
        # their bookkeeping.
        self._after_answer.defer(self._account, request, record, span, self._telemetry.tracer.now_ns(), elapsed)

    def _account(self, request: web.Request, record: RequestRecord, span: trace.Span, end_ns: int, elapsed: float) -> None:
        status = record.status or 0
        if span.is_recording():  # sampled out: no attributes to build
            _describe_span(span, request, record)
        span.end(end_ns)
        proxied = record.proxied
        self._telemetry.server_finished(
            method=record.method,
            route=record.route,
            status=status,
            client=record.client,
            environment=record.environment,
            seconds=elapsed,
            source="gateway" if record.error_code else "upstream" if proxied else None,
            added_s=record.gateway_added_s(elapsed) if proxied else None,
        )
        access_line(
            {
                "requestId": record.request_id,
                "traceId": record.trace_id,
                "client": record.client,
                "environment": record.environment,
                "method": record.method,
                "route": record.route,
                "status": record.status,
                "latencyMs": round(record.latency_ms, 3),
                "attempts": len(record.attempts),
                "upstreamRequestId": record.upstream_request_id,
                "errorCode": record.error_code,
            }
        )
        for consumer in self._on_complete:
            consumer(record)


def _describe_span(span: trace.Span, request: web.Request, record: RequestRecord) -> None:
    span.update_name(f"{record.method} {record.route}")
    attributes: dict[str, Any] = {
        names.HTTP_METHOD: record.method,
        names.HTTP_ROUTE: record.route,
        names.HTTP_STATUS: record.status or 0,
        names.URL_PATH: record.path,
        names.URL_SCHEME: request.scheme,
        names.PMC_REQUEST_ID: record.request_id,
        names.PMC_ATTEMPTS: len(record.attempts),
    }
    if request.remote:
        attributes[names.CLIENT_ADDRESS] = request.remote
    if record.client:
        attributes[names.PMC_CLIENT] = record.client
    if record.environment:
        attributes[names.PMC_ENVIRONMENT] = record.environment
    if record.upstream_request_id:
        attributes[names.PMC_UPSTREAM_REQUEST_ID] = record.upstream_request_id
    span.set_attributes(attributes)
    if record.status is not None and record.status >= 500:
        error_type = record.error_code or str(record.status)
        span.set_attribute(names.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
