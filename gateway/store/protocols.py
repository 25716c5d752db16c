"""The store, as small protocols: each stage takes the one it uses, and every backend
(memory://, redis://, the resilient wrapper) implements them all as ``Store``.

Each method is one decision and, on Redis, one round trip. Backends raise
``StoreError`` on any failure or timeout; ``resilient.py`` decides what to do then.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.store.rolling_budget import Admission, BudgetAsk

__all__ = [
    "Admission",
    "BreakerStore",
    "BreakerTransition",
    "BudgetAsk",
    "BudgetStore",
    "IdempotencyEntry",
    "IdempotencyState",
    "IdempotencyStore",
    "JobStore",
    "MembershipStore",
    "ReadLookup",
    "ReadStore",
    "RecordStore",
    "Store",
    "StoreHealth",
    "TriageStore",
    "WebhookQueue",
    "WebhookStore",
]


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


@dataclass(frozen=True, slots=True)
class StoreHealth:
    kind: str  # memory | redis
    healthy: bool
    error: str | None  # the last failure, while unhealthy
    members: int  # live replicas sharing the store

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "healthy": self.healthy, "error": self.error, "members": self.members}


class StoreLifecycle(Protocol):
    kind: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def reset(self) -> None: ...  # forget connections that may be stale
    def health(self) -> StoreHealth: ...


class BudgetStore(Protocol):
    """The rate budget of one API key (rolling_budget.py): ``key`` is ``BudgetAsk.key``."""

    async def admit(self, ask: BudgetAsk, *, first: bool) -> Admission: ...
    async def pause(self, key: str, seconds: float) -> None: ...
    async def rate_limit_seen(self, key: str, remaining: int, reset_s: float, seq: int) -> None: ...


class BreakerStore(Protocol):
    """Circuit transitions shared between replicas, and the one-trial-at-a-time claim."""

    async def publish_breaker(self, name: str, transition: BreakerTransition) -> None: ...
    async def breaker_transitions(self) -> dict[str, BreakerTransition]: ...
    async def claim_probe(self, name: str, ttl_s: float, token: str) -> bool: ...
    async def release_probe(self, name: str, token: str) -> None: ...  # only the claim ``token`` made


class IdempotencyStore(Protocol):
    async def idempotency_begin(self, scope: str, fingerprint: str, lock_ttl_s: float) -> IdempotencyEntry: ...
    async def idempotency_complete(self, scope: str, fingerprint: str, response: bytes, ttl_s: float) -> None: ...
    async def idempotency_release(self, scope: str, fingerprint: str) -> None: ...


class JobStore(Protocol):
    """Async jobs (stages/jobs.py): one entry per jobId, fields as strings. A final entry
    (``final`` set) never goes back to pending; ``polls`` adds up across replicas. The timeline
    is what happened to one booking or job, oldest first (webhook events and their deliveries)."""

    async def job_update(self, job_id: str, fields: Mapping[str, str], polls: int, ttl_s: float) -> None: ...
    async def job_get(self, job_id: str) -> dict[str, str] | None: ...
    async def job_poll_claim(self, job_id: str, interval_s: float) -> bool: ...  # one upstream poll per interval
    async def timeline_add(self, key: str, entry: bytes, ttl_s: float) -> None: ...
    async def timeline(self, key: str) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class ReadLookup:
    generation: int  # the scope's current generation
    entry: bytes | None  # the stored answer, only when it was stored under ``generation``
    age_s: float  # how long ago it was stored, on the store's clock (0 without an entry)


class ReadStore(Protocol):
    """Shared reads (stages/reads/): per scope (one environment's route) a generation that every
    invalidation bumps, cached answers stamped with the generation they were fetched under, and
    in-flight calls (a claim per generation and key, an answer per leader). An entry or a call of
    an older generation is never handed out: that comparison is what read-your-writes rests on."""

    async def read_lookup(self, scope: str, key: str) -> ReadLookup: ...
    # None: the caller now leads the call; else the id of the leader already holding it
    async def read_claim(self, scope: str, key: str, generation: int, leader: str, ttl_s: float) -> str | None: ...
    # The leader's answer for its followers; ``entry`` is cached only while ``generation`` is current.
    async def read_publish(
        self, scope: str, key: str, generation: int, leader: str, answer: bytes, answer_ttl_s: float,
        entry: bytes | None, entry_ttl_s: float,
    ) -> bool: ...
    # (the leader's answer once published, whether its claim still stands)
    async def read_answer(self, scope: str, key: str, generation: int, leader: str) -> tuple[bytes | None, bool]: ...
    async def read_invalidate(self, scopes: Sequence[str]) -> None: ...
    async def read_purge(self, scopes: Sequence[str]) -> int: ...  # entries dropped


class RecordStore(Protocol):
    """Triage records by requestId."""

    async def put_records(self, records: Sequence[tuple[str, bytes]], ttl_s: float) -> None: ...
    async def get_record(self, request_id: str) -> bytes | None: ...


class MembershipStore(Protocol):
    """Who shares the store: heartbeats, status snapshots, first sightings."""

    async def heartbeat(self, member: str, ttl_s: float) -> int: ...
    # When any replica first saw ``name`` (wall seconds): set once to ``now_wall``, then kept.
    async def first_seen(self, name: str, now_wall: float) -> float: ...
    async def put_snapshot(self, member: str, blob: bytes, ttl_s: float) -> None: ...
    async def snapshots(self) -> list[bytes]: ...


class WebhookQueue(Protocol):
    """Webhook events: an acknowledged queue. ``blob`` is the event's JSON (webhooks/event.py)."""

    async def webhook_accept(self, event_id: str, blob: bytes, dedupe_ttl_s: float, due: float) -> bool: ...
    async def webhook_claim(self, now: float, lease_s: float, limit: int) -> list[bytes]: ...
    async def webhook_finish(self, event_id: str, outcome: str, blob: bytes, score: float) -> None: ...
    async def webhook_counts(self) -> tuple[int, int]: ...  # (backlog, dead letters)
    async def webhook_dead_letters(self, limit: int) -> list[bytes]: ...
    async def webhook_get(self, event_id: str) -> bytes | None: ...
    async def webhook_replay(self, event_id: str, blob: bytes, due: float) -> bool: ...


class WebhookStore(WebhookQueue, JobStore, Protocol):
    """Webhook ingress and relay: the queue, and the job and booking timelines events join."""


class TriageStore(RecordStore, JobStore, Protocol):
    """Triage: the records, and the job and webhook timeline a record points at."""


class Store(
    StoreLifecycle,
    BudgetStore,
    BreakerStore,
    IdempotencyStore,
    JobStore,
    RecordStore,
    MembershipStore,
    WebhookQueue,
    ReadStore,
    Protocol,
):
    """Everything a backend implements; the composition root holds one and hands each part out."""
