"""JSON to and from bytes. Out: orjson (fast), falling back to the stdlib for what orjson refuses.
In: ``json_object``, the one parser of upstream answer bodies (jobs, credentials, the /v1 handler).

orjson rejects strings holding lone surrogates, which is how Python carries bytes that were
not valid UTF-8 (a fuzzed header or path decoded with ``surrogateescape``); the stdlib
escapes them as ``\\udcXX``. A log line or triage record must never fail to encode."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any, **_: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        return json.dumps(value, default=str, separators=(",", ":")).encode()


def json_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object ``body`` holds, or None (not JSON, not UTF-8, not an object, past 64-bit integers)."""
    try:
        payload = orjson.loads(body)
    except ValueError:  # orjson's JSONDecodeError is one
        return None
    return payload if isinstance(payload, dict) else None
