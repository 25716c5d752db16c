"""The SDK's OTLP/HTTP span exporter with gateway.observability.otlp.encoding's encoder."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpOTLPSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from gateway.observability.otlp import sdk_seams
from gateway.observability.otlp.encoding import encode_spans


class HttpSpanExporter(HttpOTLPSpanExporter):
    """OTLP/HTTP: the SDK exporter's transport (retries, compression, headers), this encoding.

    The SDK has no hook for the encoder here, so this uses its exporter's payload client
    (``sdk_seams.http_client``); without it, export falls back to the SDK's own (slower) path.
    """

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = sdk_seams.http_client(self)
        if client is None:
            return super().export(spans)
        try:
            data = encode_spans(spans)
        except Exception:  # an attribute value the encoder cannot take: let the SDK report it
            return super().export(spans)
        return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE
