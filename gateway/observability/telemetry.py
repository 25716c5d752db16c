"""Traces and metrics (SPEC §8): every instrument, built once from the names in names.py.

The gateway records its own spans (the contrib aiohttp instrumentations keep module
globals, emit old semantic conventions by default and never set
``http.request.resend_count``), through ``gateway.observability.tracing`` (the SDK's sampler, resource
and batch export, without its per-span machinery). Providers are per application, never
global; spans are exported by a batch processor and metrics by a periodic reader, both
off the request's critical path. Exemplars are off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` asks
for them (see ``_exemplar_filter``). Duration histograms use explicit second-based boundaries that include
the 0.18 s latency target and resolve 100–500 ms; they are aggregated by the gateway itself
(otlp/histograms.py) unless exemplars or delta/exponential output ask for the SDK's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.environment_variables import OTEL_METRICS_EXEMPLAR_FILTER, OTEL_SDK_DISABLED
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry

from gateway.core.clock import Clock, SystemClock
from gateway.core.histogram_buckets import (
    ADDED_LATENCY_BUCKETS,
    BUDGET_WAIT_BUCKETS,
    JOB_DURATION_BUCKETS,
    SECONDS_BUCKETS,
)
from gateway.observability.names import (
    ADDED_LATENCY,
    ADDED_LATENCY_ATTRIBUTES,
    API_KEY_AGE,
    BREAKER_STATE,
    BUDGET_LIMIT,
    BUDGET_LIMITS,
    BUDGET_REJECTED,
    BUDGET_USED,
    BUDGET_WAIT,
    BUDGET_WAIT_ATTRIBUTES,
    CLIENT_DURATION,
    CLIENT_DURATION_ATTRIBUTES,
    ERROR_TYPE,
    HEDGE_OUTCOMES,
    HEDGES,
    HTTP_METHOD,
    HTTP_RESEND_COUNT,
    HTTP_ROUTE,
    HTTP_STATUS,
    IDEMPOTENT_REPLAYS,
    INVALIDATION_SOURCES,
    JOB_DURATION,
    JOB_OUTCOMES,
    JOB_POLL_SOURCES,
    JOB_POLLS,
    JOBS,
    OUTCOME,
    PMC_BREAKER,
    PMC_CLIENT,
    PMC_ENVIRONMENT,
    PMC_HEDGE,
    PMC_REQUEST_ID,
    READ_INVALIDATIONS,
    READ_RESULTS,
    READS,
    REASON,
    RESULT,
    RETRIES,
    RETRY_BUDGET_EXHAUSTED,
    SERVER_ADDRESS,
    SERVER_DURATION,
    SERVER_DURATION_ATTRIBUTES,
    SERVER_PORT,
    SOURCE,
    STORE_UP,
    UPSTREAM_THROTTLED,
    URL_FULL,
    WEBHOOK_BACKLOG,
    WEBHOOK_REJECTED,
)
from gateway.observability.otlp.histograms import (
    DurationHistogram,
    LocalHistograms,
    SdkDurationHistogram,
)
from gateway.observability.otlp.metrics import (
    ExpositionAndPushReader,
    interval_from_env,
    shares_aggregation,
)
from gateway.observability.tracing import ReadableSpanExporter, RequestTracer
from gateway.request.types import UpstreamRequest
from gateway.settings import TelemetrySettings

METER_SCOPE = "pmc-gateway"
BUDGET_USED_FRESH_S = 60.0  # a usage figure older than the window says nothing: the key is idle
_ROOT = otel_context.Context()  # a SERVER span without a caller's traceparent starts a trace
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}


def _views() -> list[View]:
    buckets = ExplicitBucketHistogramAggregation(SECONDS_BUCKETS)
    return [
        *(View(instrument_name=name, aggregation=buckets) for name in (SERVER_DURATION, CLIENT_DURATION)),
        View(instrument_name=ADDED_LATENCY, aggregation=ExplicitBucketHistogramAggregation(ADDED_LATENCY_BUCKETS)),
        View(instrument_name=BUDGET_WAIT, aggregation=ExplicitBucketHistogramAggregation(BUDGET_WAIT_BUCKETS)),
        View(instrument_name=JOB_DURATION, aggregation=ExplicitBucketHistogramAggregation(JOB_DURATION_BUCKETS)),
    ]


def _exemplar_filter(environ: Mapping[str, str]) -> ExemplarFilter | None:
    """Off by default; ``None`` lets the SDK read ``OTEL_METRICS_EXEMPLAR_FILTER`` when it is set.

    The SDK's default (trace_based) offers every measurement made under a sampled span to an
    exemplar reservoir, three records a request, and the Prometheus exposition drops
    exemplars anyway (the cost: bench/README.md). Only OTLP metrics carry them."""
    return None if environ.get(OTEL_METRICS_EXEMPLAR_FILTER) else AlwaysOffExemplarFilter()


def _records_locally(environ: Mapping[str, str]) -> bool:
    """True when the duration histograms may bypass the SDK (otlp/histograms.py): the
    output wanted is cumulative explicit buckets without exemplars, exactly what they produce."""
    return shares_aggregation(environ) and not environ.get(OTEL_METRICS_EXEMPLAR_FILTER)


def _metric_readers(
    prometheus: bool,
    otlp: MetricExporter | None,
    registry: CollectorRegistry,
    interval_s: float | None,
    local_metrics: Callable[[], list[Metric]],
    environ: Mapping[str, str],
) -> list[MetricReader]:
    """The exposition and OTLP push from one aggregation when they can share it (otlp/metrics.py)."""
    interval_s = interval_s or interval_from_env(environ)
    if (prometheus or otlp is not None) and shares_aggregation(environ):
        # OTLP alone still needs this reader (the local histograms join its collections), but
        # the registry that /_gateway/metrics and the status snapshots read must stay empty.
        exposed_to = registry if prometheus else CollectorRegistry()
        return [
            ExpositionAndPushReader(
                registry=exposed_to, exporter=otlp, interval_s=interval_s, scope_name=METER_SCOPE, local_metrics=local_metrics
            )
        ]
    readers: list[MetricReader] = []
    if prometheus:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader

        readers.append(PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry))
    if otlp is not None:
        readers.append(PeriodicExportingMetricReader(otlp, export_interval_millis=interval_s * 1000))
    return readers


def _otlp_exporters(settings: TelemetrySettings) -> tuple[SpanExporter | None, Any]:
    if not settings.otlp_endpoint:
        return None, None
    base = settings.otlp_endpoint.rstrip("/")
    if settings.otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        from gateway.observability.otlp.grpc import GrpcSpanExporter

        insecure = base.startswith("http://")
        endpoint = base.split("://", 1)[1]
        return (
            GrpcSpanExporter(endpoint=endpoint, insecure=insecure, timeout=3),
            OTLPMetricExporter(endpoint=endpoint, insecure=insecure, timeout=3),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )

    from gateway.observability.otlp.http import HttpSpanExporter

    return HttpSpanExporter(endpoint=f"{base}/v1/traces", timeout=3), HttpMetrics(endpoint=f"{base}/v1/metrics", timeout=3)


@dataclass
class GaugeSources:
    """Callables read at collection time for the observable gauges."""

    breaker_states: Callable[[], Iterable[tuple[str, str, str]]] = lambda: ()
    webhook_backlog: Callable[[], int] = lambda: 0
    store_up: Callable[[], bool] = lambda: True
    api_key_ages: Callable[[], Iterable[tuple[str, float]]] = lambda: ()


class Telemetry:
    """Owns this application's tracer and meter providers and every instrument."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        member_id: str,
        span_exporter: SpanExporter | None = None,
        export_interval_s: float | None = None,  # else OTEL_METRIC_EXPORT_INTERVAL, else 10 s
        gauges: GaugeSources | None = None,  # each read from the module that owns the fact
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,  # the process environment: OTEL_* switches
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        environ = environ if environ is not None else {}
        resource = Resource.create(
            {"service.name": settings.service_name, "service.instance.id": member_id}
        )
        otlp_spans, otlp_metrics = _otlp_exporters(settings)
        exporters = [e for e in (span_exporter and ReadableSpanExporter(span_exporter), otlp_spans) if e is not None]
        self.tracer = RequestTracer(
            resource=resource,
            scope_name="pmc-gateway",
            processors=[BatchSpanProcessor(e, schedule_delay_millis=500, max_export_batch_size=512) for e in exporters],
            enabled=environ.get(OTEL_SDK_DISABLED, "").strip().lower() != "true",
        )
        self.propagator = TraceContextTextMapPropagator()

        self.registry = CollectorRegistry(auto_describe=True)
        local = LocalHistograms() if _records_locally(environ) else None
        self.meter_provider = MeterProvider(
            resource=resource,
            metric_readers=_metric_readers(
                settings.prometheus, otlp_metrics, self.registry, export_interval_s, local.collect if local else list, environ
            ),
            views=_views(),
            exemplar_filter=_exemplar_filter(environ),
        )
        meter = self.meter_provider.get_meter(METER_SCOPE)
        self.gauges = gauges or GaugeSources()

        def duration_histogram(
            name: str, description: str, attribute_names: tuple[str, ...], boundaries: tuple[float, ...] = SECONDS_BUCKETS
        ) -> DurationHistogram:
            if local is not None:
                return local.create(name, unit="s", description=description, boundaries=boundaries, attribute_names=attribute_names)
            return SdkDurationHistogram(meter.create_histogram(name, unit="s", description=description), attribute_names)

        self.server_duration = duration_histogram(SERVER_DURATION, "Duration of requests the gateway served", SERVER_DURATION_ATTRIBUTES)
        self.client_duration = duration_histogram(CLIENT_DURATION, "Duration of each upstream attempt", CLIENT_DURATION_ATTRIBUTES)
        self.added_latency = duration_histogram(
            ADDED_LATENCY,
            "What the gateway itself added to a proxied request: its duration less upstream attempts, backoff and rate-budget wait",
            ADDED_LATENCY_ATTRIBUTES,
            ADDED_LATENCY_BUCKETS,
        )
        self.retries = meter.create_counter(RETRIES, description="Upstream attempts that were retries, by reason")
        self.retry_budget_exhausted = meter.create_counter(RETRY_BUDGET_EXHAUSTED, description="Retries skipped because the retry budget was spent")
        self.budget_wait = duration_histogram(
            BUDGET_WAIT, "Time attempts waited for a rate-budget slot", BUDGET_WAIT_ATTRIBUTES, BUDGET_WAIT_BUCKETS
        )
        self.budget_rejected = meter.create_counter(BUDGET_REJECTED, description="Requests answered 429 RATE_BUDGET_EXHAUSTED, by the limit that held them back")
        self._budget_used: dict[str, tuple[float, float]] = {}
        self._environments: set[str] = set()
        self.jobs = meter.create_counter(JOBS, description="Jobs followed for a caller's Prefer: wait, by how they ended")
        self.job_duration = duration_histogram(JOB_DURATION, "From a followed job's 202 to its final answer", (), JOB_DURATION_BUCKETS)
        self.job_duration.declare(())
        self.job_polls = meter.create_counter(JOB_POLLS, description="Callers' and follows' job polls, by who answered: upstream, a shared poll, the cache")
        for outcome in JOB_OUTCOMES:
            self.jobs.add(0, {OUTCOME: outcome})
        for source in JOB_POLL_SOURCES:
            self.job_polls.add(0, {SOURCE: source})  # environment → (ratio, monotonic time)
        self.upstream_throttled = meter.create_counter(UPSTREAM_THROTTLED, description="Upstream 429 answers (each pauses the key)")
        self.idempotent_replays = meter.create_counter(IDEMPOTENT_REPLAYS, description="Answers replayed from the idempotency store")
        self.webhook_rejected = meter.create_counter(WEBHOOK_REJECTED, description="Webhook posts refused, by reason")
        meter.create_observable_gauge(BREAKER_STATE, [self._observe_breakers], description="Breaker state: 0 closed, 1 half-open, 2 open")
        meter.create_observable_gauge(WEBHOOK_BACKLOG, [self._observe_backlog], description="Webhook deliveries not yet delivered")
        meter.create_observable_gauge(STORE_UP, [self._observe_store], description="1 when the shared store answers")
        meter.create_observable_gauge(API_KEY_AGE, [self._observe_key_ages], unit="d", description="Days since each environment's API key was rotated")
        meter.create_observable_gauge(BUDGET_USED, [self._observe_budget_used], description="Admissions on each environment's key in the last 60 s, over its limit")
        self.reads = meter.create_counter(READS, description="Answers on shared-read routes and joined calls, by how they were served")
        self.read_invalidations = meter.create_counter(READ_INVALIDATIONS, description="Shared-read invalidations, by what caused them")
        for source in INVALIDATION_SOURCES:
            self.read_invalidations.add(0, {SOURCE: source})
        self.hedges = meter.create_counter(HEDGES, description="Hedged reads, by outcome: won (the hedge answered first), lost, skipped (no room)")
        # Pre-create the counters' zero series so dashboards and alerts see them from the start.
        self.webhook_rejected.add(0, {REASON: "invalid_signature"})

    # -- observable gauges --------------------------------------------------------------
    def _observe_breakers(self, _: CallbackOptions) -> Iterable[Observation]:
        seen = set()
        for environment, route, state in self.gauges.breaker_states():
            seen.add(environment)
            yield Observation(BREAKER_VALUES.get(state, 0), {PMC_ENVIRONMENT: environment, HTTP_ROUTE: route})
        for environment in self._environments - seen:  # no circuit used yet: closed, and said so
            yield Observation(0, {PMC_ENVIRONMENT: environment})

    def _observe_backlog(self, _: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.gauges.webhook_backlog())

    def _observe_store(self, _: CallbackOptions) -> Iterable[Observation]:
        yield Observation(1 if self.gauges.store_up() else 0)

    def _observe_budget_used(self, _: CallbackOptions) -> Iterable[Observation]:
        now = self._clock.monotonic()
        for environment, (ratio, at) in self._budget_used.items():
            yield Observation(ratio if now - at < BUDGET_USED_FRESH_S else 0.0, {PMC_ENVIRONMENT: environment})

    def declare_series(self, callers: Iterable[tuple[str, str]]) -> None:
        """Zero series for every (client, environment) known at start-up, so panels and alerts
        on refusals, throttling and usage see them before the first event."""
        for client, environment in callers:
            for limit in BUDGET_LIMITS:
                self.budget_rejected.add(0, {PMC_ENVIRONMENT: environment, PMC_CLIENT: client, BUDGET_LIMIT: limit})
            self._budget_used.setdefault(environment, (0.0, self._clock.monotonic()))
            self.budget_wait.declare((environment, client))
            self.upstream_throttled.add(0, {PMC_ENVIRONMENT: environment})
            self.retry_budget_exhausted.add(0, {PMC_ENVIRONMENT: environment})
            # the request and attempt families too, so rules and panels read 0, not nothing
            self.server_duration.declare((None, None, None, client, environment, None))
            self.client_duration.declare((None, None, environment, None, None))
            self.added_latency.declare((None, environment))
            self.retries.add(0, {PMC_ENVIRONMENT: environment})
            self.idempotent_replays.add(0, {PMC_ENVIRONMENT: environment, PMC_CLIENT: client})
            self._environments.add(environment)

    def declare_hedged_routes(self, routes: Iterable[str]) -> None:
        for route in routes:
            for outcome in HEDGE_OUTCOMES:
                self.hedges.add(0, {HTTP_ROUTE: route, OUTCOME: outcome})

    def hedged(self, request: UpstreamRequest, outcome: str) -> None:
        self.hedges.add(1, {HTTP_ROUTE: request.route, OUTCOME: outcome})
        trace.get_current_span().add_event("pmc.hedge", {OUTCOME: outcome})

    def declare_read_routes(self, routes: Iterable[str]) -> None:
        """Zero series for every shared-read route, so the hit-ratio panels exist from start-up."""
        for route in routes:
            for result in READ_RESULTS:
                self.reads.add(0, {HTTP_ROUTE: route, RESULT: result})

    def _observe_key_ages(self, _: CallbackOptions) -> Iterable[Observation]:
        for environment, days in self.gauges.api_key_ages():
            yield Observation(days, {PMC_ENVIRONMENT: environment})

    # -- spans --------------------------------------------------------------------------
    # Plain start/end pairs rather than context managers: these run twice per request.
    def start_server_span(self, method: str, carrier: dict[str, str]) -> tuple[trace.Span, object]:
        """A SERVER span, current until ``end_server_span``; continues the caller's trace."""
        parent = self.propagator.extract(carrier) if carrier else _ROOT
        remote = trace.get_current_span(parent).get_span_context() if carrier else None
        span = self.tracer.start(method, SpanKind.SERVER, remote, parent)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def detach_server_span(token: object) -> None:
        """The SERVER span stops being current; whoever holds it ends it."""
        otel_context.detach(token)  # type: ignore[arg-type]

    def start_attempt_span(self, request: UpstreamRequest, host: str, port: int, url: str) -> tuple[trace.Span, str]:
        """A CLIENT span for one upstream attempt, and the traceparent to send with it.

        Attributes are built only for a span that records: with a ratio sampler most spans
        do not, and then an attempt costs no more than its ids."""
        span = self.tracer.start(request.method, SpanKind.CLIENT, trace.get_current_span().get_span_context())
        if span.is_recording():
            attributes: dict[str, Any] = {
                HTTP_METHOD: request.method,
                HTTP_ROUTE: request.route,
                SERVER_ADDRESS: host,
                SERVER_PORT: port,
                URL_FULL: url,
                PMC_REQUEST_ID: request.request_id,
            }
            if request.attempt > 1 or request.hedge:
                attributes[HTTP_RESEND_COUNT] = request.attempt - 1 + request.hedge
            if request.hedge:
                attributes[PMC_HEDGE] = True
            span.set_attributes(attributes)
        context = span.get_span_context()
        if not context.is_valid:
            return span, ""
        # W3C traceparent, formatted here rather than through a propagator's carrier dict
        return span, f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"

    @staticmethod
    def end_attempt(span: trace.Span, status: int | None, error: str | None, end_ns: int | None = None) -> None:
        if not span.is_recording():
            span.end(end_ns)
            return
        if status is not None:
            span.set_attribute(HTTP_STATUS, status)
        if error is not None or (status is not None and status >= 500):
            error_type = error or str(status)
            span.set_attribute(ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end(end_ns)

    # -- observer methods the stages call -----------------------------------------------
    def attempt_finished(self, request: UpstreamRequest, status: int | None, error: str | None, seconds: float) -> None:
        self.client_duration.record(seconds, (request.method, request.route, request.environment, status, error))

    def retried(self, request: UpstreamRequest, reason: str) -> None:
        self.retries.add(1, {PMC_ENVIRONMENT: request.environment, HTTP_ROUTE: request.route, REASON: reason})
        trace.get_current_span().add_event("pmc.retry", {REASON: reason, "pmc.attempt": request.attempt + 1})

    def retry_budget_exhausted_for(self, request: UpstreamRequest) -> None:
        self.retry_budget_exhausted.add(1, {PMC_ENVIRONMENT: request.environment})
        trace.get_current_span().add_event("pmc.retry_budget_exhausted")

    def budget_waited(self, request: UpstreamRequest, seconds: float) -> None:
        self.budget_wait.record(seconds, (request.environment, request.client))
        if seconds > 0:
            trace.get_current_span().add_event("pmc.budget.wait", {"pmc.wait_ms": seconds * 1000})

    def job_polled(self, source: str) -> None:
        self.job_polls.add(1, {SOURCE: source})

    def job_followed(self, outcome: str, seconds: float | None) -> None:
        self.jobs.add(1, {OUTCOME: outcome})
        if seconds is not None:
            self.job_duration.record(seconds, ())

    def budget_used(self, environment: str, used: int, limit: int) -> None:
        self._budget_used[environment] = (used / limit, self._clock.monotonic())

    def budget_rejected_for(self, request: UpstreamRequest, limit: str) -> None:
        self.budget_rejected.add(1, {PMC_ENVIRONMENT: request.environment, PMC_CLIENT: request.client, BUDGET_LIMIT: limit})
        trace.get_current_span().add_event("pmc.budget.rejected", {BUDGET_LIMIT: limit})

    def upstream_throttled_for(self, request: UpstreamRequest, pause_s: float) -> None:
        self.upstream_throttled.add(1, {PMC_ENVIRONMENT: request.environment})
        trace.get_current_span().add_event("pmc.upstream.throttled", {"pmc.pause_s": pause_s})

    def breaker_refused(self, request: UpstreamRequest, breaker: str) -> None:
        trace.get_current_span().add_event("pmc.breaker.open", {PMC_BREAKER: breaker})

    def replayed_for(self, request: UpstreamRequest) -> None:
        self.idempotent_replays.add(1, {PMC_ENVIRONMENT: request.environment, PMC_CLIENT: request.client})
        trace.get_current_span().add_event("pmc.idempotent.replayed")

    def read_answered(self, request: UpstreamRequest, result: str) -> None:
        self.reads.add(1, {HTTP_ROUTE: request.route, RESULT: result})
        if result != "miss":
            trace.get_current_span().add_event("pmc.read", {RESULT: result})

    def read_invalidated(self, source: str) -> None:
        self.read_invalidations.add(1, {SOURCE: source})

    def webhook_rejected_for(self, reason: str) -> None:
        self.webhook_rejected.add(1, {REASON: reason})

    def server_finished(
        self,
        *,
        method: str,
        route: str,
        status: int,
        client: str | None,
        environment: str | None,
        seconds: float,
        source: str | None = None,
        added_s: float | None = None,
    ) -> None:
        self.server_duration.record(seconds, (method, route, status, client or None, environment or None, source))
        if added_s is not None:
            self.added_latency.record(added_s, (route, environment or None))

    def shutdown(self) -> None:
        self.tracer.shutdown()
        self.meter_provider.shutdown()
