"""A real OTLP receiver for tests: gRPC (grpcio) or HTTP/protobuf (aiohttp) on 127.0.0.1,
decoding what it receives with opentelemetry-proto."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[str]
    status_code: int


@dataclass
class Received:
    spans: list[ReceivedSpan] = field(default_factory=list)
    metric_names: set[str] = field(default_factory=set)
    exemplar_trace_ids: set[str] = field(default_factory=set)  # from histogram data points
    metric_pushes: int = 0
    histogram_counts: dict[str, int] = field(default_factory=dict)  # per metric, as of the latest push

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=[e.name for e in span.events],
                            status_code=span.status.code,
                        )
                    )

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        self.metric_pushes += 1
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self.metric_names.add(metric.name)
                    for point in metric.histogram.data_points:
                        self.exemplar_trace_ids.update(e.trace_id.hex() for e in point.exemplars)
                    if metric.histogram.data_points:
                        self.histogram_counts[metric.name] = sum(p.count for p in metric.histogram.data_points)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        self.received.add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        self.received.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class GrpcReceiver:
    def __init__(self) -> None:
        self.received = Received()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self.received), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self.received), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


class HttpReceiver:
    def __init__(self) -> None:
        self.received = Received()
        self.runner: web.AppRunner | None = None
        self.endpoint = ""

    async def start(self) -> None:
        async def traces(request: web.Request) -> web.Response:
            assert request.content_type == "application/x-protobuf"
            self.received.add_traces(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
            return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")

        async def metrics(request: web.Request) -> web.Response:
            self.received.add_metrics(metrics_service_pb2.ExportMetricsServiceRequest.FromString(await request.read()))
            return web.Response(body=metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf")

        app = web.Application()
        app.add_routes([web.post("/v1/traces", traces), web.post("/v1/metrics", metrics)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self.runner.addresses if isinstance(a, tuple))
        self.endpoint = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
