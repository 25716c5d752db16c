"""The SDK's OTLP/gRPC span exporter with gateway.observability.otlp.encoding's encoder (imported only for grpc:
grpcio is large: bench/README.md, "Memory")."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcOTLPSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

from gateway.observability.otlp.encoding import encode_spans


class GrpcSpanExporter(GrpcOTLPSpanExporter):
    """OTLP/gRPC: ``_translate_data`` is the SDK's own override point; upb parses the bytes in C."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(encode_spans(data))
        return request
