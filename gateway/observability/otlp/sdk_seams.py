"""Every place the gateway reaches past OpenTelemetry's public API, in one file, each checked.

- ``http.py`` hands its own encoding to the OTLP/HTTP span exporter's ``_client`` (the SDK has
  no encoder hook there); ``http_client()`` is that one access, and without it the exporter
  falls back to the SDK's own path.
- ``grpc.py`` overrides ``_translate_data``, the gRPC exporter's own override point.
- ``metrics.py`` overrides ``_receive_metrics``, which ``MetricReader`` documents as the method
  a reader subclass overrides.

``problems()`` names whatever of that a new SDK no longer has (a unit test runs it), so an
upgrade fails loudly in the tests instead of exporting nothing, or exporting slowly, unnoticed.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol


class ExportAnswer(Protocol):
    success: bool


class PayloadClient(Protocol):
    def export(self, data: bytes) -> ExportAnswer: ...


def http_client(exporter: object) -> PayloadClient | None:
    """The OTLP/HTTP exporter's payload client, or None (shut down, or a new SDK without it)."""
    if getattr(exporter, "_shutdown", False):
        return None
    client: Any = getattr(exporter, "_client", None)
    return client if client is not None and callable(getattr(client, "export", None)) else None


def problems() -> list[str]:
    """What the uses above need from the SDK and it no longer provides; [] when all is well."""
    from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.export import MetricReader

    found: list[str] = []
    exporter = HttpSpans(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)  # builds, never connects
    try:
        client = http_client(exporter)
        if client is None:
            found.append("the OTLP/HTTP span exporter has no _client with export(bytes)")
        elif list(inspect.signature(client.export).parameters) != ["data"]:
            found.append(f"its _client.export now takes {list(inspect.signature(client.export).parameters)}")
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    if "_translate_data" not in vars(GrpcSpans):
        found.append("the OTLP/gRPC span exporter no longer defines _translate_data")
    if "self._translate_data(" not in inspect.getsource(OTLPExporterMixin._export):
        found.append("the OTLP/gRPC exporter no longer builds its request with _translate_data")
    if "self._receive_metrics(" not in inspect.getsource(MetricReader.collect):
        found.append("MetricReader.collect no longer hands its collection to _receive_metrics")
    parameters = list(inspect.signature(PrometheusMetricReader._receive_metrics).parameters)
    if parameters[:3] != ["self", "metrics_data", "timeout_millis"]:
        found.append(f"PrometheusMetricReader._receive_metrics now takes {parameters}")
    return found
