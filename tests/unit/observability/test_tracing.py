"""The request path's own spans (gateway/observability/tracing.py): what reaches a collector must be what
the SDK would have sent, under the sampler the operator configured."""

from __future__ import annotations

import random

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
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
from gateway.observability.tracing import ReadableSpanExporter, RequestSpan, RequestTracer

RESOURCE = Resource.create({"service.name": "pmc-gateway", "service.instance.id": "h:1:x"})
REMOTE = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1")]))


def _tracer(exporter: InMemorySpanExporter | None = None, seed: int = 7, enabled: bool = True) -> tuple[RequestTracer, InMemorySpanExporter]:
    exporter = exporter or InMemorySpanExporter()
    processor = SimpleSpanProcessor(ReadableSpanExporter(exporter))
    return RequestTracer(resource=RESOURCE, scope_name="pmc-gateway", processors=[processor], rng=random.Random(seed), enabled=enabled), exporter


def _request(tracer: RequestTracer, parent: SpanContext | None = None) -> tuple[RequestSpan, RequestSpan]:
    context = set_span_in_context(NonRecordingSpan(parent)) if parent else None
    server = tracer.start("GET", SpanKind.SERVER, parent, context)
    client = tracer.start("GET", SpanKind.CLIENT, server.get_span_context(), set_span_in_context(server))
    assert isinstance(server, RequestSpan) and isinstance(client, RequestSpan)
    return server, client


def test_request_spans_reach_the_wire_as_sdk_spans_would() -> None:
    tracer, exporter = _tracer()
    server, client = _request(tracer, REMOTE)
    server.set_attributes({"http.request.method": "GET", "pmc.attempts": 2, "url.path": "/v1/bookings/ünï"})
    server.add_event("pmc.retry", {"reason": "status_503", "pmc.attempt": 2})
    server.update_name("GET /v1/bookings/{id}")
    client.set_attribute("server.port", 8080)
    client.set_status(Status(StatusCode.ERROR, "UPSTREAM_TIMEOUT"))
    client.end()
    server.set_status(Status(StatusCode.ERROR, "502"))
    server.end()

    exported = list(exporter.get_finished_spans())
    assert all(type(s) is ReadableSpan for s in exported)  # other exporters get the SDK's type
    assert [s.name for s in exported] == ["GET", "GET /v1/bookings/{id}"]
    assert client.parent == server.context and server.parent == REMOTE
    assert server.context.trace_id == REMOTE.trace_id and server.context.trace_state == REMOTE.trace_state
    # a RequestSpan encodes as a ReadableSpan does
    ours = ExportTraceServiceRequest.FromString(encode_spans([client, server]))  # type: ignore[list-item]
    theirs = ExportTraceServiceRequest.FromString(sdk_encode_spans(exported).SerializeToString())
    assert ours == theirs


def test_a_new_trace_gets_random_nonzero_ids_and_w3c_flags() -> None:
    tracer, _ = _tracer()
    server, client = _request(tracer)
    assert server.parent is None and server.context.trace_id and server.context.span_id
    assert server.context.trace_flags == TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID
    assert client.context.trace_id == server.context.trace_id != _request(tracer)[0].context.trace_id


def test_an_ended_span_no_longer_changes() -> None:
    tracer, exporter = _tracer()
    span = tracer.start("GET", SpanKind.SERVER, None)
    span.set_status(Status(StatusCode.OK))
    span.set_status(Status(StatusCode.ERROR, "late"))  # OK is final, as in the SDK
    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.end()  # a second end exports nothing more
    (exported,) = exporter.get_finished_spans()
    assert exported.status.status_code is StatusCode.OK and "late" not in (exported.attributes or {})
    assert not exported.events


def test_invalid_attribute_values_are_dropped_not_exported() -> None:
    tracer, exporter = _tracer()
    span = tracer.start("GET", SpanKind.SERVER, None)
    span.set_attributes({"ok": "yes", "nested": {"a": 1}, "mixed": [1, object()], "list": [1, 2], "": "no key"})  # type: ignore[list-item]
    span.end()
    span.set_attributes({"late": 1})  # an ended span is frozen
    (exported,) = exporter.get_finished_spans()
    assert dict(exported.attributes or {}) == {"ok": "yes", "list": (1, 2)}


@pytest.mark.parametrize(
    ("sampler", "arg", "parent", "exported_share"),
    [
        ("always_off", None, None, (0, 0)),
        ("parentbased_always_on", None, SpanContext(REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(0)), (0, 0)),
        ("parentbased_always_on", None, REMOTE, (1, 1)),
        ("traceidratio", "0.25", None, (0.18, 0.32)),
    ],
)
def test_the_operators_sampler_decides(monkeypatch: pytest.MonkeyPatch, sampler: str, arg: str | None,
                                       parent: SpanContext | None, exported_share: tuple[float, float]) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    tracer, exporter = _tracer()
    requests = 400
    for _ in range(requests):
        context = set_span_in_context(NonRecordingSpan(parent)) if parent else None
        server = tracer.start("GET", SpanKind.SERVER, parent, context)
        client = tracer.start("GET", SpanKind.CLIENT, server.get_span_context(), set_span_in_context(server))
        # a sampled-out span still carries valid ids, so the trace continues upstream
        assert client.get_span_context().is_valid
        assert client.get_span_context().trace_flags.sampled == server.get_span_context().trace_flags.sampled
        client.end()
        server.end()
    share = len(exporter.get_finished_spans()) / (2 * requests)
    assert exported_share[0] <= share <= exported_share[1]


def test_otel_sdk_disabled_turns_spans_off() -> None:
    from gateway.observability.telemetry import Telemetry
    from gateway.settings import TelemetrySettings

    disabled = Telemetry(TelemetrySettings(), member_id="t", environ={"OTEL_SDK_DISABLED": "true"})
    assert not disabled.tracer.enabled  # the composition root's environment decides
    disabled.shutdown()
    tracer, exporter = _tracer(enabled=False)
    span = tracer.start("GET", SpanKind.SERVER, None)
    assert not span.is_recording()
    span.end()
    assert not exporter.get_finished_spans()
