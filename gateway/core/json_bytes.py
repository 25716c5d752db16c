"""JSON to bytes: orjson (fast), falling back to the stdlib for what orjson refuses.

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
