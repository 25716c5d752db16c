"""Request ids (SPEC §4): keep a valid caller id, else ``req_`` + a ULID."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # 10 bits → 2 characters
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def ulid(now_ms: int, randomness: bytes) -> str:
    """A ULID: 48-bit millisecond time then 80 random bits, 26 Crockford base32 chars."""
    ms = now_ms
    rand = int.from_bytes(randomness, "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand  # 128 bits; the first character carries 3 of them
    pairs = _PAIRS
    out = [_CROCKFORD[value >> 125]]
    for shift in range(115, 4, -10):  # bits 124..5
        out.append(pairs[(value >> shift) & 1023])
    out.append(_CROCKFORD[value & 31])
    return "".join(out)


class MonotonicUlids:
    """ULIDs that sort in the order they were made: within one millisecond (or if the clock
    steps back) each is the previous one plus one, the ULID spec's monotonic mode. Random
    ULIDs made in the same millisecond sorted by chance, not by time."""

    # Request ids need uniqueness, not secrecy: a seeded PRNG (the root's) is enough and avoids a
    # syscall per id; the wall clock comes from the root's clock too.
    def __init__(self, rng: random.Random, clock_ms: Callable[[], int]) -> None:
        self._rng = rng
        self._clock_ms = clock_ms
        self._ms = -1
        self._rand = 0

    def __call__(self) -> str:
        ms = self._clock_ms()
        if ms > self._ms:
            self._ms, self._rand = ms, self._rng.getrandbits(80)
        elif self._rand + 1 < 1 << 80:
            self._rand += 1
        else:  # 2^80 ids in one millisecond: borrow the next one
            self._ms, self._rand = self._ms + 1, 0
        return ulid(self._ms, self._rand.to_bytes(10, "big"))


def new_request_id(make_ulid: Callable[[], str]) -> str:
    return "req_" + make_ulid()


def accept_or_generate(candidate: str | None, make_ulid: Callable[[], str]) -> str:
    if candidate is not None and VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id(make_ulid)
