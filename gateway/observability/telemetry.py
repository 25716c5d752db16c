"""Traces and metrics (SPEC §8): every instrument, built once from its declaration in instruments.py.

The gateway records its own spans (the contrib aiohttp instrumentations keep module
globals, emit old semantic conventions by default and never set
``http.request.resend_count``), through ``gateway.observability.tracing`` (the SDK's sampler, resource
and batch export, without its per-span machinery). Providers are per application, never
global; spans are exported by a batch processor and metrics by a periodic reader, both
off the request's critical path. Exemplars are off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` asks
for them (see ``_exemplar_filter``). Duration histograms use explicit second-based boundaries that include
the 0.18 s latency target and resolve 100–500 ms; they are aggregated by the gateway itself
(otlp/histograms.py), and so are the counters (otlp/counters.py), unless exemplars or
delta/exponential output ask for the SDK's.
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
from gateway.observability.instruments import (
    ADDED_LATENCY,
    API_KEY_AGE,
    BREAKER_STATE,
    BUDGET_USED,
    CLIENT_DURATION,
    INSTRUMENTS,
    SERVER_DURATION,
    STORE_UP,
    WEBHOOK_BACKLOG,
    Instrument,
)
from gateway.observability.names import (
    ERROR_TYPE,
    HTTP_METHOD,
    HTTP_RESEND_COUNT,
    HTTP_ROUTE,
    HTTP_STATUS,
    PMC_CLIENT,
    PMC_ENVIRONMENT,
    PMC_HEDGE,
    PMC_REQUEST_ID,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_FULL,
)
from gateway.observability.otlp.counters import Counting
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
    return [
        View(instrument_name=i.name, aggregation=ExplicitBucketHistogramAggregation(i.buckets))
        for i in INSTRUMENTS
        if i.kind == "histogram"
    ]


def zero_series(instrument: Instrument, callers: Iterable[tuple[str, str]], routes: Iterable[str] = ()) -> list[dict[str, str]]:
    """The attribute sets of an instrument's start-up zero series (``Instrument.zero``)."""
    spans = instrument.zero or ()
    rows: list[dict[str, str]] = [{}]
    if PMC_CLIENT in spans:
        rows = [{PMC_ENVIRONMENT: env, PMC_CLIENT: client} for client, env in dict.fromkeys(callers)]
    elif PMC_ENVIRONMENT in spans:
        rows = [{PMC_ENVIRONMENT: env} for env in dict.fromkeys(env for _, env in callers)]
    if HTTP_ROUTE in spans:
        rows = [{**row, HTTP_ROUTE: route} for row in rows for route in routes]
    for name, values in instrument.zero_values.items():
        rows = [{**row, name: value} for row in rows for value in values]
    return rows


def _exemplar_filter(environ: Mapping[str, str]) -> ExemplarFilter | None:
    """Off by default; ``None`` lets the SDK read ``OTEL_METRICS_EXEMPLAR_FILTER`` when it is set.

    The SDK's default (trace_based) offers every measurement made under a sampled span to an
    exemplar reservoir, three records a request, and the Prometheus exposition drops
    exemplars anyway (the cost: bench/README.md). Only OTLP metrics carry them."""
    return None if environ.get(OTEL_METRICS_EXEMPLAR_FILTER) else AlwaysOffExemplarFilter()


def _records_locally(environ: Mapping[str, str]) -> bool:
    """True when the histograms and counters may bypass the SDK (otlp/histograms.py,
    otlp/counters.py): the output wanted is cumulative, without exemplars, exactly what they produce."""
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
        self._budget_used: dict[str, tuple[float, float]] = {}  # environment → (ratio, monotonic time)
        self._environments: set[str] = set()
        self._callers: list[tuple[str, str]] = []
        observe = {
            BREAKER_STATE: self._observe_breakers,
            WEBHOOK_BACKLOG: self._observe_backlog,
            STORE_UP: self._observe_store,
            API_KEY_AGE: self._observe_key_ages,
            BUDGET_USED: self._observe_budget_used,
        }
        self._counters: dict[Instrument, Counting] = {}
        self._histograms: dict[Instrument, DurationHistogram] = {}
        for instrument in INSTRUMENTS:
            if instrument.kind == "counter" and local is not None:
                self._counters[instrument] = local.create_counter(
                    instrument.name, unit=instrument.unit, description=instrument.description, attribute_names=instrument.attributes
                )
            elif instrument.kind == "counter":
                self._counters[instrument] = meter.create_counter(instrument.name, description=instrument.description)
            elif instrument.kind == "gauge":
                meter.create_observable_gauge(instrument.name, [observe[instrument]], unit=instrument.unit, description=instrument.description)
            elif local is not None:
                self._histograms[instrument] = local.create(
                    instrument.name, unit=instrument.unit, description=instrument.description,
                    boundaries=instrument.buckets, attribute_names=instrument.attributes,
                )
            else:
                created = meter.create_histogram(instrument.name, unit=instrument.unit, description=instrument.description)
                self._histograms[instrument] = SdkDurationHistogram(created, instrument.attributes)
        self._server_duration = self._histograms[SERVER_DURATION]
        self._client_duration = self._histograms[CLIENT_DURATION]
        self._declare_zero(callers=())

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
        self._callers = list(dict.fromkeys(callers))
        for _, environment in self._callers:
            self._budget_used.setdefault(environment, (0.0, self._clock.monotonic()))
            self._environments.add(environment)
        self._declare_zero(self._callers)

    def declare_routes(self, instrument: Instrument, routes: Iterable[str]) -> None:
        """Zero series over the routes a stage counts ``instrument`` on (shared reads, hedging)."""
        self._declare_zero(self._callers, instrument, tuple(routes))

    def _declare_zero(self, callers: Iterable[tuple[str, str]], only: Instrument | None = None, routes: tuple[str, ...] = ()) -> None:
        callers = list(callers)
        for instrument in (only,) if only is not None else INSTRUMENTS:
            if instrument.zero is None or (only is None and HTTP_ROUTE in instrument.zero):
                continue
            if not callers and (PMC_ENVIRONMENT in instrument.zero or PMC_CLIENT in instrument.zero):
                continue
            for row in zero_series(instrument, callers, routes):
                if instrument.kind == "counter":
                    self._counters[instrument].add(0, row)
                else:
                    self._histograms[instrument].declare(tuple(row.get(name) for name in instrument.attributes))

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

    # -- facts, through the stages' observer (stage_facts.py) ------------------------------
    def count(self, instrument: Instrument, attributes: Mapping[str, Any], event: Mapping[str, Any] | None = None) -> None:
        """One more on a counter, and its span event on the current span when it declares one."""
        self._counters[instrument].add(1, attributes)
        if instrument.event is not None:
            trace.get_current_span().add_event(instrument.event, event)

    def histogram(self, instrument: Instrument) -> DurationHistogram:
        return self._histograms[instrument]

    @staticmethod
    def event(name: str, attributes: Mapping[str, Any]) -> None:
        trace.get_current_span().add_event(name, attributes)

    def measure(self, instrument: Instrument, value: float, values: tuple[Any, ...]) -> None:
        """A histogram reading; ``values`` in the order of ``instrument.attributes``."""
        self._histograms[instrument].record(value, values)

    def budget_used(self, environment: str, used: int, limit: int) -> None:
        self._budget_used[environment] = (used / limit, self._clock.monotonic())

    def attempt_finished(self, request: UpstreamRequest, status: int | None, error: str | None, seconds: float) -> None:
        self._client_duration.record(seconds, (request.method, request.route, request.environment, status, error))

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
        self._server_duration.record(seconds, (method, route, status, client or None, environment or None, source))
        if added_s is not None:
            self._histograms[ADDED_LATENCY].record(added_s, (route, environment or None))

    def shutdown(self) -> None:
        self.tracer.shutdown()
        self.meter_provider.shutdown()
