"""OTLP span encoding straight to protobuf wire bytes, for the span exporters.

Why: the SDK's encoder builds a protobuf object per span, attribute and value and hashes
each span's resource through ``json.dumps``, in the exporter thread, competing for the GIL
with the event loop. Writing the same ``ExportTraceServiceRequest`` directly costs a
fraction of that (bench/README.md, "Why the hand-written parts"). tests/unit/observability/otlp/test_otlp_encoding.py decodes both
encodings with the official ``opentelemetry-proto`` classes and requires them equal.

Field numbers are those of opentelemetry/proto/{collector/trace/v1,trace/v1,common/v1,
resource/v1}/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack

# Span.flags: bit 8 says whether the parent's remoteness is known, bit 9 that it is remote.
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 in two's complement, as protobuf does
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = tuple(bytes((i,)) for i in range(128))  # one-byte varints, the common length
_TAGS = tuple(_varint(number << 3 | 2) for number in range(17))  # length-delimited field tags


def _length(payload: bytes) -> bytes:
    size = len(payload)
    return _SMALL[size] if size < 128 else _varint(size)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _TAGS[number] + _length(payload) + payload


def _string(number: int, value: str) -> bytes:
    return _field(number, value.encode("utf-8", "surrogatepass")) if value else b""


def _uint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return _field(1, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _field(7, value)
    if isinstance(value, Sequence):
        return _field(5, b"".join(_field(1, _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(6, _attributes(1, value))
    return _field(1, str(value).encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=1024)  # attribute names repeat on every span: encode each once
def _key(key: str) -> bytes:
    return _field(1, key.encode("utf-8", "surrogatepass"))


def _pair(tag: bytes, key: str, value: Any) -> bytes:
    if type(value) is str:  # most attributes
        text = value.encode("utf-8", "surrogatepass")
        any_value = b"\x0a" + _length(text) + text
    else:
        any_value = _any_value(value)
    pair = _key(key) + b"\x12" + _length(any_value) + any_value
    return tag + _length(pair) + pair


# Encoded KeyValue fields by (field, key, type, value): a request's route, method, host and
# status repeat on every span. Cleared when full rather than evicted one by one: unique
# values (request ids) pass through it cheaply.
_PAIRS: dict[tuple[int, str, type, Any], bytes] = {}
_PAIRS_MAX = 4096


def _attributes(number: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue under ``number``."""
    if not attributes:
        return b""
    tag = _TAGS[number]
    out = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int:  # hashable, and the type keeps True apart from 1
            cache_key = (number, key, kind, value)
            pair = _PAIRS.get(cache_key)
            if pair is None:
                if len(_PAIRS) >= _PAIRS_MAX:
                    _PAIRS.clear()
                pair = _PAIRS[cache_key] = _pair(tag, key, value)
        else:
            pair = _pair(tag, key, value)
        out.append(pair)
    return b"".join(out)


def _trace_state(context: SpanContext) -> bytes:
    return _string(3, context.trace_state.to_header()) if context.trace_state else b""


_TIMES = struct.Struct("<BQBQ").pack  # start (field 7) and end (field 8), both fixed64
_KINDS = {kind: _uint(6, kind.value + 1) for kind in SpanKind}  # SDK INTERNAL=0…; OTLP INTERNAL=1…
_REMOTENESS = {remote: _FIXED32(_FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if remote else 0)) for remote in (False, True)}


def _status(status: Status) -> bytes:
    return _field(15, _string(2, status.description or "") + _uint(3, status.status_code.value))


_STATUS_UNSET = _status(Status(StatusCode.UNSET))


def _span(span: ReadableSpan) -> bytes:
    context = span.context
    parent = span.parent
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        _trace_state(context),
        b"\x22\x08" + parent.span_id.to_bytes(8, "big") if parent is not None else b"",
        _string(5, span.name),
        _KINDS[span.kind],
        _TIMES(0x39, span.start_time or 0, 0x41, span.end_time or 0),
        _attributes(9, span.attributes),
        _uint(10, span.dropped_attributes),
    ]
    for event in span.events:
        parts.append(
            _field(
                11,
                b"\x09" + _FIXED64(event.timestamp) + _string(2, event.name) + _attributes(3, event.attributes)
                + _uint(4, event.dropped_attributes),
            )
        )
    parts.append(_uint(12, span.dropped_events))
    for link in span.links:
        parts.append(
            _field(
                13,
                b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
                + _attributes(4, link.attributes)
                + _uint(5, link.dropped_attributes)
                + b"\x35" + _REMOTENESS[link.context.is_remote],  # field 6, wire type 5
            )
        )
    parts.append(_uint(14, span.dropped_links))
    status = span.status  # always present, as the SDK's encoder sends it
    parts.append(_STATUS_UNSET if status.status_code is StatusCode.UNSET and not status.description else _status(status))
    parts.append(b"\x85\x01" + _REMOTENESS[parent is not None and parent.is_remote])  # field 16, wire type 5
    return _field(2, b"".join(parts))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ``ExportTraceServiceRequest`` for ``spans``, grouped by resource and scope."""
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        scopes = groups.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(_span(span))
    out = []
    for resource, scopes in groups.values():
        body = [_field(1, _attributes(1, resource.attributes))]
        for scope, encoded in scopes.values():
            scope_message = _field(1, b"")
            if scope is not None:
                scope_message = _field(
                    1, _string(1, scope.name) + _string(2, scope.version or "") + _attributes(3, scope.attributes)
                )
            schema = _string(3, scope.schema_url or "") if scope is not None else b""
            body.append(_field(2, scope_message + b"".join(encoded) + schema))
        body.append(_string(3, resource.schema_url or ""))
        out.append(_field(1, b"".join(body)))
    return b"".join(out)
