"""The hand-written OTLP span encoding must decode to exactly what the SDK's encoder sends."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from gateway.observability.otlp.encoding import encode_spans


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "pmc-gateway", "service.instance.id": "h:1:x"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _same(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode_spans(spans).SerializeToString())
    assert ours == theirs, f"ours:\n{ours}\ntheirs:\n{theirs}"


def test_the_gateways_own_spans_encode_exactly_as_the_sdk_does() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("pmc-gateway", "0.1.0")
    remote_parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                                trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1")]))
    server = tracer.start_span("GET /v1/bookings/{id}", context=set_span_in_context(NonRecordingSpan(remote_parent)), kind=SpanKind.SERVER)
    server.set_attributes({"http.request.method": "GET", "http.response.status_code": 502, "pmc.attempts": 3,
                           "pmc.request_id": "req_01HABC", "url.path": "/v1/bookings/bk_1/ünïcode"})
    server.add_event("pmc.retry", {"reason": "status_503", "pmc.attempt": 2})
    server.add_event("pmc.budget.wait", {"pmc.wait_ms": 12.5})
    client = tracer.start_span("GET", context=set_span_in_context(server), kind=SpanKind.CLIENT,
                               attributes={"server.port": 8080, "http.request.resend_count": 2},
                               links=[Link(remote_parent, {"why": "first attempt"})])
    client.set_status(Status(StatusCode.ERROR, "UPSTREAM_TIMEOUT"))
    client.end()
    server.set_status(Status(StatusCode.ERROR, "502"))
    server.end()
    tracer.start_span("internal", kind=SpanKind.INTERNAL).end()
    _same(list(exporter.get_finished_spans()))


attribute_values = st.one_of(
    st.text(max_size=20), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False), st.lists(st.text(max_size=5), max_size=3), st.lists(st.integers(-5, 5), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(attributes=st.dictionaries(st.text(min_size=1, max_size=12), attribute_values, max_size=6),
       name=st.text(max_size=30), kind=st.sampled_from(list(SpanKind)))
def test_any_attributes_encode_as_the_sdk_does(attributes: dict[str, object], name: str, kind: SpanKind) -> None:
    provider, exporter = _provider()
    span = provider.get_tracer("t").start_span(name, kind=kind, attributes=attributes)  # type: ignore[arg-type]
    span.add_event("e", attributes)  # type: ignore[arg-type]
    span.end()
    _same(list(exporter.get_finished_spans()))


def test_the_http_exporter_really_takes_the_fast_path() -> None:
    """It falls back to the SDK's encoder when the SDK's private client is gone; say so loudly here."""
    from gateway.observability.otlp.http import HttpSpanExporter

    exporter = HttpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    assert callable(getattr(exporter, "_client", None) and exporter._client.export)
    exporter.shutdown()
