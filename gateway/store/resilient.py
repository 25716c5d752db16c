"""Keeps the gateway serving when the shared store is unreachable (SPEC §5, store faults).

Every call goes to the shared store first. When it fails, the store is marked down and
calls go straight to a local ``MemoryStore`` (no waiting on a dead Redis) until a
background ping succeeds again, checked every ``recheck_s``. What each concern does while down:

- rate budget: a conservative local share, by the same algorithm (fair share included, inside
  this process). The key's limit, its burst and a client's cap each become
  ``floor(value / members)`` (at least 1), where ``members`` is the number of gateway
  processes last seen heart-beating in Redis (at least this host's ``workers``), so the
  group as a whole still stays within the upstream's limit.
- upstream 429 pauses, breaker states, half-open probes: local to this process.
- idempotency: local to this process: a repeat reaching the same process is still
  replayed or refused; one reaching another replica is not protected.
- triage records: kept locally (bounded) and readable from this process.
- shared reads: nothing is cached or shared while down (a local cache could not be invalidated
  by another replica's booking): lookups miss, claims lead alone, answers are not published.
  An invalidation that cannot reach the store is kept and sent first on recovery, and until it
  is, lookups still miss: an entry from before the booking is never served after it.
- webhook events: never accepted locally (a local copy is not durable): accepting raises
  ``StoreError`` so the ingress answers 503 and PinmyCal retries; the relay pauses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import structlog

from gateway.core.clock import Clock, Pace, real_time_pace
from gateway.core.tasks import stop_task
from gateway.errors import ReplicasBehind, StoreError
from gateway.store.memory import MemoryStore
from gateway.store.protocols import (
    Admission,
    BreakerTransition,
    BudgetAsk,
    IdempotencyEntry,
    ReadLookup,
    Store,
    StoreHealth,
)

log = structlog.get_logger("gateway.store")
T = TypeVar("T")

MEMBER_TTL_S = 10.0


def local_share(ask: BudgetAsk, members: int) -> BudgetAsk:
    """The budget one process may spend alone: each figure ``floor(value / members)``."""
    members = max(1, members)

    def part(value: int) -> int:
        return max(1, math.floor(value / members)) if value else 0

    return dataclasses.replace(ask, limit=part(ask.limit), burst=part(ask.burst), client_limit=part(ask.client_limit))


class ResilientStore:
    def __init__(
        self,
        primary: Store,
        *,
        member_id: str,
        min_members: int,
        clock: Clock,
        recheck_s: float = 1.0,
        heartbeat_s: float = 2.0,
        on_health_change: Callable[[bool, str | None], None] | None = None,
        pace: Pace = real_time_pace,
    ) -> None:
        self.kind = primary.kind
        self._primary = primary
        self._fallback = MemoryStore(clock)
        self._clock = clock
        self._pace = pace
        self._member_id = member_id
        self._min_members = min_members
        self.members = min_members
        self.healthy = True
        self.last_error: str | None = None
        self._recheck_s = recheck_s
        self._heartbeat_s = heartbeat_s
        self._on_health_change = on_health_change
        self._task: asyncio.Task[None] | None = None
        self._unsent_invalidations: set[str] = set()

    async def start(self) -> None:
        await self._primary.start()
        try:
            await self._primary.ping()
            await self._heartbeat()
        except StoreError as exc:
            self._mark_down(exc)
        self._task = asyncio.create_task(self._watch(), name="store-watch")

    async def close(self) -> None:
        await stop_task(self._task)
        await self._primary.close()

    def health(self) -> StoreHealth:
        return StoreHealth(self.kind, self.healthy, self.last_error, self.members)

    async def ping(self) -> None:
        if not self.healthy:
            raise StoreError(self.last_error or "store unreachable")

    def _mark_down(self, exc: Exception) -> None:
        self.last_error = str(exc)
        if self.healthy:
            self.healthy = False
            log.error("store_unreachable", store=self.kind, error=self.last_error, fallback="local")
            if self._on_health_change:
                self._on_health_change(False, self.last_error)

    def _mark_up(self) -> None:
        if not self.healthy:
            self.healthy = True
            self.last_error = None
            log.info("store_recovered", store=self.kind)
            if self._on_health_change:
                self._on_health_change(True, None)

    async def _heartbeat(self) -> None:
        seen = await self._primary.heartbeat(self._member_id, MEMBER_TTL_S)
        self.members = max(self._min_members, seen)

    async def _watch(self) -> None:
        while True:
            await self._pace(self._recheck_s if not self.healthy else self._heartbeat_s)
            try:
                if not self.healthy:
                    await self._primary.reset()  # connections from before the outage are dead
                    await self._primary.ping()
                await self._heartbeat()
                if not self.healthy:
                    await self._primary.reset()  # and those opened while it was down
                await self._send_invalidations()
                self._mark_up()
            except StoreError as exc:
                self._mark_down(exc)

    async def reset(self) -> None:
        await self._primary.reset()

    async def _send_invalidations(self) -> None:
        if self._unsent_invalidations:
            scopes = sorted(self._unsent_invalidations)
            await self._primary.read_invalidate(scopes)
            self._unsent_invalidations.difference_update(scopes)

    async def _either(self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        if self.healthy:
            try:
                return await shared()
            except StoreError as exc:
                self._mark_down(exc)
        return await local()

    # -- the Store interface, each with its fallback -----------------------
    async def admit(self, ask: BudgetAsk, *, first: bool) -> Admission:
        # _either spelled out: this runs on every upstream attempt, and the two closures
        # and the extra coroutine showed in the request path's profile.
        if self.healthy:
            try:
                return await self._primary.admit(ask, first=first)
            except StoreError as exc:
                self._mark_down(exc)
        return await self._fallback.admit(local_share(ask, self.members), first=first)

    async def pause(self, key: str, seconds: float) -> None:
        await self._fallback.pause(key, seconds)  # also local: holds this process if Redis dies
        await self._either(lambda: self._primary.pause(key, seconds), _none)

    async def rate_limit_seen(self, key: str, remaining: int, reset_s: float, seq: int) -> None:
        # ``seq`` numbers admissions of the store that made it: the shared one while healthy
        await self._either(
            lambda: self._primary.rate_limit_seen(key, remaining, reset_s, seq),
            lambda: self._fallback.rate_limit_seen(key, remaining, reset_s, seq),
        )

    async def publish_breaker(self, name: str, transition: BreakerTransition) -> None:
        await self._fallback.publish_breaker(name, transition)
        await self._either(lambda: self._primary.publish_breaker(name, transition), _none)

    async def breaker_transitions(self) -> dict[str, BreakerTransition]:
        return await self._either(self._primary.breaker_transitions, self._fallback.breaker_transitions)

    async def claim_probe(self, name: str, ttl_s: float, token: str) -> bool:
        return await self._either(
            lambda: self._primary.claim_probe(name, ttl_s, token),
            lambda: self._fallback.claim_probe(name, ttl_s, token),
        )

    async def release_probe(self, name: str, token: str) -> None:
        await self._fallback.release_probe(name, token)
        await self._either(lambda: self._primary.release_probe(name, token), _none)

    async def idempotency_begin(self, scope: str, fingerprint: str, lock_ttl_s: float) -> IdempotencyEntry:
        return await self._either(
            lambda: self._primary.idempotency_begin(scope, fingerprint, lock_ttl_s),
            lambda: self._fallback.idempotency_begin(scope, fingerprint, lock_ttl_s),
        )

    async def idempotency_complete(self, scope: str, fingerprint: str, response: bytes, ttl_s: float) -> None:
        await self._either(
            lambda: self._primary.idempotency_complete(scope, fingerprint, response, ttl_s),
            lambda: self._fallback.idempotency_complete(scope, fingerprint, response, ttl_s),
        )

    async def idempotency_release(self, scope: str, fingerprint: str) -> None:
        await self._fallback.idempotency_release(scope, fingerprint)
        await self._either(lambda: self._primary.idempotency_release(scope, fingerprint), _none)

    async def job_update(self, job_id: str, fields: Mapping[str, str], polls: int, ttl_s: float) -> None:
        await self._either(
            lambda: self._primary.job_update(job_id, fields, polls, ttl_s),
            lambda: self._fallback.job_update(job_id, fields, polls, ttl_s),
        )

    async def job_get(self, job_id: str) -> dict[str, str] | None:
        return await self._either(lambda: self._primary.job_get(job_id), lambda: self._fallback.job_get(job_id))

    async def job_poll_claim(self, job_id: str, interval_s: float) -> bool:
        return await self._either(
            lambda: self._primary.job_poll_claim(job_id, interval_s),
            lambda: self._fallback.job_poll_claim(job_id, interval_s),
        )

    async def timeline_add(self, key: str, entry: bytes, ttl_s: float) -> None:
        await self._either(
            lambda: self._primary.timeline_add(key, entry, ttl_s), lambda: self._fallback.timeline_add(key, entry, ttl_s)
        )

    async def timeline(self, key: str) -> list[bytes]:
        return await self._either(lambda: self._primary.timeline(key), lambda: self._fallback.timeline(key))

    async def put_records(self, records: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        await self._either(
            lambda: self._primary.put_records(records, ttl_s),
            lambda: self._fallback.put_records(records, ttl_s),
        )

    async def get_record(self, request_id: str) -> bytes | None:
        found = await self._fallback.get_record(request_id)
        if found is None and self.healthy:
            try:
                found = await self._primary.get_record(request_id)
            except StoreError as exc:
                self._mark_down(exc)
        return found

    async def heartbeat(self, member: str, ttl_s: float) -> int:
        return await self._either(lambda: self._primary.heartbeat(member, ttl_s), lambda: self._fallback.heartbeat(member, ttl_s))

    async def first_seen(self, name: str, now_wall: float) -> float:
        return await self._either(
            lambda: self._primary.first_seen(name, now_wall), lambda: self._fallback.first_seen(name, now_wall)
        )

    async def put_snapshot(self, member: str, blob: bytes, ttl_s: float) -> None:
        await self._fallback.put_snapshot(member, blob, ttl_s)
        await self._either(lambda: self._primary.put_snapshot(member, blob, ttl_s), _none)

    async def snapshots(self) -> list[bytes]:
        return await self._either(self._primary.snapshots, self._fallback.snapshots)

    # -- shared reads: shared or not at all ----------------------------------------
    async def read_lookup(self, scope: str, key: str) -> ReadLookup:
        if self.healthy and not self._unsent_invalidations:
            try:
                return await self._primary.read_lookup(scope, key)
            except StoreError as exc:
                self._mark_down(exc)
        return ReadLookup(-1, None, 0.0)

    async def read_claim(self, scope: str, key: str, generation: int, leader: str, ttl_s: float) -> str | None:
        if generation < 0:  # the lookup did not reach the store: lead alone
            return None
        return await self._either(lambda: self._primary.read_claim(scope, key, generation, leader, ttl_s), _none)

    async def read_publish(
        self, scope: str, key: str, generation: int, leader: str, answer: bytes, answer_ttl_s: float,
        entry: bytes | None, entry_ttl_s: float,
    ) -> bool:
        if generation < 0:
            return False
        return await self._either(
            lambda: self._primary.read_publish(scope, key, generation, leader, answer, answer_ttl_s, entry, entry_ttl_s),
            _false,
        )

    async def read_answer(self, scope: str, key: str, generation: int, leader: str) -> tuple[bytes | None, bool]:
        return await self._either(lambda: self._primary.read_answer(scope, key, generation, leader), _no_answer)

    async def read_invalidate(self, scopes: Sequence[str]) -> None:
        if self.healthy:
            try:
                await self._primary.read_invalidate(scopes)
                return
            except StoreError as exc:
                self._mark_down(exc)
        self._unsent_invalidations.update(scopes)

    async def read_purge(self, scopes: Sequence[str]) -> int:
        return await self._shared_only(lambda: self._primary.read_purge(scopes))

    # -- webhooks: durable or not at all ------------------------------------------
    async def _shared_only(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self.healthy:
            raise StoreError(self.last_error or "store unreachable")
        try:
            return await call()
        except ReplicasBehind:
            raise  # Redis answered: one webhook waits for its replicas, nothing else falls back
        except StoreError as exc:
            self._mark_down(exc)
            raise

    async def webhook_accept(self, event_id: str, blob: bytes, dedupe_ttl_s: float, due: float) -> bool:
        return await self._shared_only(lambda: self._primary.webhook_accept(event_id, blob, dedupe_ttl_s, due))

    async def webhook_claim(self, now: float, lease_s: float, limit: int) -> list[bytes]:
        return await self._shared_only(lambda: self._primary.webhook_claim(now, lease_s, limit))

    async def webhook_finish(self, event_id: str, outcome: str, blob: bytes, score: float) -> None:
        await self._shared_only(lambda: self._primary.webhook_finish(event_id, outcome, blob, score))

    async def webhook_counts(self) -> tuple[int, int]:
        return await self._shared_only(self._primary.webhook_counts)

    async def webhook_dead_letters(self, limit: int) -> list[bytes]:
        return await self._shared_only(lambda: self._primary.webhook_dead_letters(limit))

    async def webhook_get(self, event_id: str) -> bytes | None:
        return await self._shared_only(lambda: self._primary.webhook_get(event_id))

    async def webhook_replay(self, event_id: str, blob: bytes, due: float) -> bool:
        return await self._shared_only(lambda: self._primary.webhook_replay(event_id, blob, due))


async def _none() -> None:
    return None


async def _false() -> bool:
    return False


async def _no_answer() -> tuple[bytes | None, bool]:
    return None, False
