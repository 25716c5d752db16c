"""The request path's spans: OpenTelemetry spans without the SDK's per-span machinery.

Why not ``Tracer.start_span``: every SDK span takes a lock per call, validates each
attribute into a ``BoundedAttributes``, builds bounded lists for events and links and
records tracer self-metrics — for the two spans of a proxied request, a third of what the
gateway spends per request besides the two HTTP hops (bench/README.md, "Why the
hand-written parts"). The gateway's spans are few and its own (the SERVER span and one CLIENT span per
attempt, with attributes it builds itself), so ``RequestSpan`` keeps only what they
need: ids, times, a plain attribute dict, events, status.

What stays the SDK's: the sampler (``OTEL_TRACES_SAMPLER`` / ``_ARG``, resolved by
``TracerProvider`` exactly as for any SDK tracer), the resource, ``OTEL_SDK_DISABLED``,
and the export path — ended spans go to ``BatchSpanProcessor`` and from there to the
OTLP exporters (``gateway.observability.otlp`` encodes them). A ``RequestSpan`` reads like a
``ReadableSpan`` for the encoder; any other exporter gets real ``ReadableSpan`` copies.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

MAX_EVENTS = 128  # the SDK's default OTEL_SPAN_EVENT_COUNT_LIMIT
_UNSET = Status(StatusCode.UNSET)
_ATTRIBUTE_TYPES = (str, bool, int, float)
_SCALAR_TYPES = frozenset(_ATTRIBUTE_TYPES)


def _valid_attribute(value: object) -> bool:
    if isinstance(value, _ATTRIBUTE_TYPES):
        return True
    return isinstance(value, Sequence) and not isinstance(value, bytes) and all(
        isinstance(item, _ATTRIBUTE_TYPES) for item in value
    )


class RequestSpan(trace.Span):
    """A recording span; ``end()`` hands it to the tracer's processors."""

    __slots__ = ("_tracer", "attributes", "context", "end_time", "events", "kind", "name", "parent", "start_time", "status")

    links: Sequence[Link] = ()
    dropped_attributes = dropped_events = dropped_links = 0

    def __init__(self, tracer: RequestTracer, name: str, context: SpanContext, parent: SpanContext | None, kind: SpanKind, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.events: list[Event] = []
        self.status = _UNSET
        self.start_time = tracer.now_ns()
        self.end_time: int | None = None

    # -- what the exporters read (ReadableSpan's names) ------------------------------------
    @property
    def resource(self) -> Resource:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    def to_readable(self) -> ReadableSpan:
        return ReadableSpan(
            name=self.name, context=self.context, parent=self.parent, resource=self.resource,
            attributes=dict(self.attributes), events=tuple(self.events), links=tuple(self.links),
            kind=self.kind, status=self.status, start_time=self.start_time, end_time=self.end_time,
            instrumentation_scope=self.instrumentation_scope,
        )  # fmt: skip

    # -- the trace.Span API -------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        # Inlined, with an exact-type check first: ~17 attributes a request, all plain scalars.
        if self.end_time is not None:
            return
        own = self.attributes
        for key, value in attributes.items():
            if type(value) in _SCALAR_TYPES:
                if key:
                    own[key] = value
            else:
                self.set_attribute(key, value)

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is None and key and _valid_attribute(value):
            self.attributes[key] = tuple(value) if isinstance(value, list) else value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        if self.end_time is None and len(self.events) < MAX_EVENTS:
            clean = {k: v for k, v in (attributes or {}).items() if _valid_attribute(v)}
            self.events.append(Event(name, clean, timestamp or self._tracer.now_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        pass  # the gateway's spans carry no links

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None, escaped: bool = False) -> None:
        self.add_event(
            "exception",
            {"exception.type": type(exception).__qualname__, "exception.message": str(exception), **(attributes or {})},
            timestamp,
        )

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or self._tracer.now_ns()
        for processor in self._tracer.processors:
            processor.on_end(self)  # type: ignore[arg-type]  # reads as a ReadableSpan


class RequestTracer:
    """Starts ``RequestSpan``s under the SDK's sampler; owns the span processors."""

    def __init__(
        self,
        *,
        resource: Resource,
        scope_name: str,
        processors: Sequence[SpanProcessor],
        now_ns: Callable[[], int] = time.time_ns,
        rng: random.Random | None = None,
        enabled: bool = True,  # False: OTEL_SDK_DISABLED=true, read by the composition root
    ) -> None:
        provider = TracerProvider(resource=resource)  # resolves OTEL_TRACES_SAMPLER as the SDK does
        self.sampler = provider.sampler
        self.resource = resource
        self.scope = InstrumentationScope(scope_name)
        self.processors = tuple(processors)
        self.now_ns = now_ns
        self._bits = (rng or random.Random()).getrandbits
        self.enabled = enabled

    def start(self, name: str, kind: SpanKind, parent: SpanContext | None, parent_context: Any = None) -> trace.Span:
        """A new span, child of ``parent`` (a remote or local span context) when it is valid.

        ``parent_context`` is the OpenTelemetry context holding the parent, for samplers."""
        if not self.enabled:
            return trace.NonRecordingSpan(parent or trace.INVALID_SPAN_CONTEXT)
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
        else:
            parent, trace_id, random_id = None, self._nonzero(128), True
        result = self.sampler.should_sample(parent_context, trace_id, name, kind)
        sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]  # the SDK's Decision is unannotated
        flags = (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
        context = SpanContext(trace_id, self._nonzero(64), False, _TRACE_FLAGS[flags], result.trace_state)
        if not result.decision.is_recording():  # type: ignore[no-untyped-call]  # the SDK's Decision is unannotated
            return trace.NonRecordingSpan(context)
        return RequestSpan(self, name, context, parent, kind, dict(result.attributes or {}))

    def _nonzero(self, bits: int) -> int:
        while not (value := self._bits(bits)):
            pass
        return value

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self.processors)


_TRACE_FLAGS = tuple(TraceFlags(value) for value in range(4))


class ReadableSpanExporter(SpanExporter):
    """Hands any other exporter (console, in-memory, a vendor's) real ``ReadableSpan`` copies."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([s.to_readable() if isinstance(s, RequestSpan) else s for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
