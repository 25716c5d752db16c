"""The store interface every backend implements (memory://, redis://).

Each method is one decision and, on Redis, one round trip. Backends raise
``StoreError`` on any failure or timeout; ``resilient.py`` decides what to do then.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Bucket:
    """One rate budget: ``name`` is unique, ``tag`` groups buckets that are admitted together
    (a Redis Cluster hash tag), ``interval_s`` = 60 / requests per minute."""

    name: str
    tag: str
    interval_s: float


@dataclass(frozen=True, slots=True)
class Admission:
    """``granted``: send after ``wait_s``. Otherwise the earliest free slot is ``wait_s`` away."""

    granted: bool
    wait_s: float


class IdempotencyState(enum.Enum):
    NEW = "new"  # nobody holds the key: the caller now does
    IN_FLIGHT = "in_flight"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class IdempotencyEntry:
    state: IdempotencyState
    fingerprint: str = ""
    response: bytes | None = None


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    state: str  # closed | open | half-open
    at: float  # wall seconds of the transition
    origin: str  # member id that made it


class Store(Protocol):
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def reset(self) -> None: ...  # forget connections that may be stale

    async def admit(self, buckets: Sequence[Bucket], pause_tag: str, max_wait_s: float) -> Admission: ...
    async def pause(self, pause_tag: str, seconds: float) -> None: ...
    async def pause_left(self, pause_tag: str) -> float: ...

    async def publish_breaker(self, name: str, transition: BreakerTransition) -> None: ...
    async def breaker_transitions(self) -> dict[str, BreakerTransition]: ...
    async def claim_probe(self, name: str, ttl_s: float) -> bool: ...

    async def idempotency_begin(self, scope: str, fingerprint: str, lock_ttl_s: float) -> IdempotencyEntry: ...
    async def idempotency_complete(self, scope: str, fingerprint: str, response: bytes, ttl_s: float) -> None: ...
    async def idempotency_release(self, scope: str, fingerprint: str) -> None: ...

    async def put_records(self, records: Sequence[tuple[str, bytes]], ttl_s: float) -> None: ...
    async def get_record(self, request_id: str) -> bytes | None: ...

    async def heartbeat(self, member: str, ttl_s: float) -> int: ...

    async def put_snapshot(self, member: str, blob: bytes, ttl_s: float) -> None: ...
    async def snapshots(self) -> list[bytes]: ...

    # Webhook events: an acknowledged queue. ``blob`` is the event's JSON (webhooks/event.py).
    async def webhook_accept(self, event_id: str, blob: bytes, dedupe_ttl_s: float, due: float) -> bool: ...
    async def webhook_claim(self, now: float, lease_s: float, limit: int) -> list[bytes]: ...
    async def webhook_finish(self, event_id: str, outcome: str, blob: bytes, score: float) -> None: ...
    async def webhook_counts(self) -> tuple[int, int]: ...  # (backlog, dead letters)
    async def webhook_dead_letters(self, limit: int) -> list[bytes]: ...
    async def webhook_get(self, event_id: str) -> bytes | None: ...
    async def webhook_replay(self, event_id: str, blob: bytes, due: float) -> bool: ...
