"""Request ids (SPEC §4): keep a valid caller id, else ``req_`` + a ULID."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def ulid(now_ms: int | None = None, randomness: bytes | None = None) -> str:
    """A ULID: 48-bit millisecond time then 80 random bits, 26 Crockford base32 chars."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    entropy = os.urandom(10) if randomness is None else randomness
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(entropy, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_request_id(make_ulid: Callable[[], str] = ulid) -> str:
    return "req_" + make_ulid()


def accept_or_generate(candidate: str | None) -> str:
    if candidate is not None and VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()
