"""Request ids (SPEC §4): keep a valid caller id, else ``req_`` + a ULID."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits → 2 characters
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Request ids need uniqueness, not secrecy: a system-seeded PRNG is enough and avoids a syscall per id.
_entropy = random.Random()


def ulid(now_ms: int | None = None, randomness: bytes | None = None) -> str:
    """A ULID: 48-bit millisecond time then 80 random bits, 26 Crockford base32 chars."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = _entropy.getrandbits(80) if randomness is None else int.from_bytes(randomness, "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand  # 128 bits; the first character carries 3 of them
    pairs = _PAIRS
    out = [_CROCKFORD[value >> 125]]
    for shift in range(115, 4, -10):  # bits 124..5
        out.append(pairs[(value >> shift) & 1023])
    out.append(_CROCKFORD[value & 31])
    return "".join(out)


def new_request_id(make_ulid: Callable[[], str] = ulid) -> str:
    return "req_" + make_ulid()


def accept_or_generate(candidate: str | None) -> str:
    if candidate is not None and VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()
