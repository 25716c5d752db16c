"""The OpenTelemetry internals the exporters use are still there. An SDK upgrade that moves
them fails here, by name, instead of exporting nothing or exporting slowly."""

from __future__ import annotations

from gateway.observability.otlp import sdk_seams
from gateway.observability.otlp.http import HttpSpanExporter


def test_the_sdk_still_has_what_the_exporters_use() -> None:
    assert sdk_seams.problems() == []


def test_a_shut_down_exporter_has_no_client_so_export_takes_the_sdks_path() -> None:
    exporter = HttpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    assert sdk_seams.http_client(exporter) is not None
    exporter.shutdown()
    assert sdk_seams.http_client(exporter) is None
