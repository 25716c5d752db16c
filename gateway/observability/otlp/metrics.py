"""One SDK aggregation behind both metric outputs: the Prometheus exposition and OTLP push.

Why: the SDK keeps one aggregation per reader and consumes every measurement once per
reader (a copy and a hash of its attributes, a lock, the bucket): with a
``PrometheusMetricReader`` and a ``PeriodicExportingMetricReader`` both on, every record
costs half as much again (bench/README.md, "Why the hand-written parts"). Both outputs want cumulative data, so one reader serves both: a scrape collects
for the exposition exactly as the Prometheus reader does, and a timer thread collects
every interval and hands that collection to the OTLP exporter instead.

``shares_aggregation`` says when this applies: the OTLP exporter must want what Prometheus
wants (cumulative temporality, the SDK's default aggregations); otherwise telemetry.py
keeps two readers. Either output may be absent (no exporter: no push thread; nobody
serving the registry: no scrape). This reader is also where the request path's own
histograms (otlp/histograms.py) join each collection, for both outputs alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import Metric, MetricExporter, MetricsData, ScopeMetrics
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

_logger = logging.getLogger(__name__)

# The OTLP exporter's own preferences; when either is set to anything but the default the
# exporter wants data the Prometheus reader does not produce.
_TEMPORALITY = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
_HISTOGRAM_AGGREGATION = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"


def shares_aggregation(environ: Mapping[str, str]) -> bool:
    """True when OTLP push may use the Prometheus reader's cumulative collection."""
    temporality = environ.get(_TEMPORALITY, "cumulative").strip().lower()
    aggregation = environ.get(_HISTOGRAM_AGGREGATION, "explicit_bucket_histogram").strip().lower()
    return temporality == "cumulative" and aggregation == "explicit_bucket_histogram"


def with_local_metrics(metrics_data: MetricsData, scope_name: str, local: list[Metric]) -> MetricsData:
    """``metrics_data`` with ``local`` added to the named scope of its (single) resource."""
    if not local or not metrics_data.resource_metrics:
        return metrics_data
    resource, *others = metrics_data.resource_metrics
    scopes = list(resource.scope_metrics)
    for i, scope in enumerate(scopes):
        if scope.scope.name == scope_name:
            scopes[i] = replace(scope, metrics=[*scope.metrics, *local])
            break
    else:
        scopes.append(ScopeMetrics(scope=InstrumentationScope(scope_name), metrics=local, schema_url=""))
    return replace(metrics_data, resource_metrics=[replace(resource, scope_metrics=scopes), *others])


class ExpositionAndPushReader(PrometheusMetricReader):
    """A Prometheus reader that also pushes its collection to ``exporter`` every ``interval_s``,
    and adds ``local_metrics()`` (in scope ``scope_name``) to every collection."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        exporter: MetricExporter | None,
        interval_s: float,
        timeout_s: float = 30.0,
        scope_name: str = "",
        local_metrics: Callable[[], list[Metric]] = list,
    ) -> None:
        super().__init__(disable_target_info=True, scope_info_enabled=False, registry=registry)
        self._exporter = exporter
        self._interval_s = interval_s
        self._timeout_ms = timeout_s * 1000
        self._scope_name = scope_name
        self._local_metrics = local_metrics
        self._pushing = threading.local()  # which output the collection running on this thread is for
        self._export_lock = threading.Lock()  # the exporter is never called concurrently (OTel spec)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._push_forever, name="otlp-metrics-push", daemon=True)
        if exporter is not None:
            self._thread.start()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        # The SDK calls this only with a non-empty collection; the observable gauges
        # (telemetry.py) always report, so the local histograms are never left out.
        metrics_data = with_local_metrics(metrics_data, self._scope_name, self._local_metrics())
        if not getattr(self._pushing, "active", False) or self._exporter is None:
            super()._receive_metrics(metrics_data, timeout_millis, **kwargs)  # a scrape: to the exposition
            return
        try:
            with self._export_lock:
                self._exporter.export(metrics_data, timeout_millis=timeout_millis)
        except Exception:  # the exporter reports its own failures; a bug must not end the pushes
            _logger.exception("metrics push failed")

    def push(self) -> None:
        """Collect now and send the collection to the OTLP exporter (not to the exposition)."""
        if self._exporter is None:
            return
        self._pushing.active = True
        try:
            self.collect(timeout_millis=self._timeout_ms)
        finally:
            self._pushing.active = False

    def _push_forever(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                self.push()
            except Exception:  # a collection timeout: the next interval tries again
                _logger.warning("metrics collection for OTLP failed", exc_info=True)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        # MetricReader.force_flush collects into the exposition, where a stale copy would
        # double every series at the next scrape; a flush means "push what you have".
        if self._exporter is None:
            return True
        self.push()
        return bool(self._exporter.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._exporter is not None and not self._stopped.is_set():
            self._stopped.set()
            self._thread.join(timeout=timeout_millis / 1000)
            try:
                self.push()  # what was recorded since the last interval
            finally:
                self._exporter.shutdown(timeout_millis=timeout_millis)
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


def interval_from_env(environ: Mapping[str, str], default_s: float = 10.0) -> float:
    """``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds) when set and valid, else ``default_s``."""
    try:
        interval_ms = float(environ.get("OTEL_METRIC_EXPORT_INTERVAL", ""))
    except ValueError:
        return default_s
    return interval_ms / 1000 if interval_ms > 0 else default_s
