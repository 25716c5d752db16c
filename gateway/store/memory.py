"""``memory://``: the store for one process (``workers = 1``), and the local fallback
when Redis is unreachable. Nothing here survives a restart; every structure is bounded."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from gateway.core.clock import Clock, SystemClock
from gateway.store import rolling_budget
from gateway.store.protocols import (
    Admission,
    BreakerTransition,
    BudgetAsk,
    IdempotencyEntry,
    IdempotencyState,
    ReadLookup,
    StoreHealth,
)

MAX_RECORDS = 20_000
MAX_IDEMPOTENCY_ENTRIES = 100_000
MAX_JOBS = 20_000
MAX_TIMELINE = 100  # entries per booking or job
MAX_READ_BYTES = 64 * 1024 * 1024  # shared-read entries, all scopes together
MAX_READ_FLIGHTS = 100_000


class _ExpiringMap:
    """Insertion-ordered map with per-entry expiry; the oldest go first when full."""

    def __init__(self, clock: Clock, max_entries: int) -> None:
        self._clock = clock
        self._max = max_entries
        self._items: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def get(self, key: str) -> object | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock.monotonic():
            del self._items[key]
            return None
        return value

    def set(self, key: str, value: object, ttl_s: float) -> None:
        self._items[key] = (self._clock.monotonic() + ttl_s, value)
        self._items.move_to_end(key)
        self._prune()

    def delete(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[str]:
        return list(self._items)

    def _prune(self) -> None:
        now = self._clock.monotonic()
        while self._items:
            key, (expires, _) = next(iter(self._items.items()))
            if expires > now and len(self._items) <= self._max:
                break
            del self._items[key]


class _ReadEntries:
    """Shared-read entries, bounded by their bytes: the oldest go first when full."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._bytes = 0
        # (scope, key) → (expires monotonic, generation, stored wall, blob)
        self._items: OrderedDict[tuple[str, str], tuple[float, int, float, bytes]] = OrderedDict()

    def get(self, scope: str, key: str, now: float) -> tuple[int, float, bytes] | None:
        item = self._items.get((scope, key))
        if item is None:
            return None
        if item[0] <= now:
            self._drop((scope, key))
            return None
        return item[1], item[2], item[3]

    def put(self, scope: str, key: str, expires: float, generation: int, stored_at: float, blob: bytes) -> None:
        self._drop((scope, key))
        self._items[(scope, key)] = (expires, generation, stored_at, blob)
        self._bytes += len(blob)
        while self._bytes > self._max and self._items:
            self._drop(next(iter(self._items)))

    def purge(self, scope: str) -> int:
        doomed = [k for k in self._items if k[0] == scope]
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def _drop(self, key: tuple[str, str]) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[3])


class MemoryStore:
    kind = "memory"

    def __init__(self, clock: Clock | None = None, *, max_records: int = MAX_RECORDS) -> None:
        self._clock = clock or SystemClock()
        self._budgets: dict[str, rolling_budget.KeyState] = {}
        self._first_seen: dict[str, float] = {}
        self._breakers: dict[str, BreakerTransition] = {}
        self._probes = _ExpiringMap(self._clock, 10_000)
        self._idempotency = _ExpiringMap(self._clock, MAX_IDEMPOTENCY_ENTRIES)
        self._records = _ExpiringMap(self._clock, max_records)
        self._members = _ExpiringMap(self._clock, 1_000)
        self._snapshots = _ExpiringMap(self._clock, 1_000)
        self._webhook_seen = _ExpiringMap(self._clock, 1_000_000)
        self._jobs = _ExpiringMap(self._clock, MAX_JOBS)
        self._poll_claims = _ExpiringMap(self._clock, MAX_JOBS)
        self._timelines = _ExpiringMap(self._clock, MAX_JOBS)
        self._webhook_events: dict[str, bytes] = {}
        self._webhook_due: dict[str, float] = {}
        self._webhook_dead: dict[str, float] = {}
        self._read_generations: dict[str, int] = {}
        self._read_entries = _ReadEntries(MAX_READ_BYTES)
        self._read_claims = _ExpiringMap(self._clock, MAX_READ_FLIGHTS)
        self._read_answers = _ExpiringMap(self._clock, MAX_READ_FLIGHTS)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def health(self) -> StoreHealth:
        return StoreHealth(self.kind, True, None, 1)

    async def ping(self) -> None:
        return None

    async def reset(self) -> None:
        return None

    # -- rate budget --------------------------------------------------------
    def _budget(self, key: str) -> rolling_budget.KeyState:
        state = self._budgets.get(key)
        if state is None:
            state = self._budgets[key] = rolling_budget.KeyState()
        return state

    async def admit(self, ask: BudgetAsk, *, first: bool) -> Admission:
        return rolling_budget.admit(self._budget(ask.key), ask, self._clock.monotonic(), first=first)

    async def pause(self, key: str, seconds: float) -> None:
        rolling_budget.pause(self._budget(key), self._clock.monotonic(), seconds)

    async def rate_limit_seen(self, key: str, remaining: int, reset_s: float, seq: int) -> None:
        rolling_budget.rate_limit_seen(self._budget(key), self._clock.monotonic(), remaining, reset_s, seq)

    # -- breaker ------------------------------------------------------------
    async def publish_breaker(self, name: str, transition: BreakerTransition) -> None:
        current = self._breakers.get(name)
        if current is None or transition.at >= current.at:
            self._breakers[name] = transition

    async def breaker_transitions(self) -> dict[str, BreakerTransition]:
        return dict(self._breakers)

    async def claim_probe(self, name: str, ttl_s: float, token: str) -> bool:
        if self._probes.get(name) is not None:
            return False
        self._probes.set(name, token, ttl_s)
        return True

    async def release_probe(self, name: str, token: str) -> None:
        if self._probes.get(name) == token:
            self._probes.delete(name)

    # -- idempotency --------------------------------------------------------
    async def idempotency_begin(self, scope: str, fingerprint: str, lock_ttl_s: float) -> IdempotencyEntry:
        existing = self._idempotency.get(scope)
        if isinstance(existing, IdempotencyEntry):
            return existing
        self._idempotency.set(scope, IdempotencyEntry(IdempotencyState.IN_FLIGHT, fingerprint), lock_ttl_s)
        return IdempotencyEntry(IdempotencyState.NEW, fingerprint)

    async def idempotency_complete(self, scope: str, fingerprint: str, response: bytes, ttl_s: float) -> None:
        self._idempotency.set(scope, IdempotencyEntry(IdempotencyState.DONE, fingerprint, response), ttl_s)

    async def idempotency_release(self, scope: str, fingerprint: str) -> None:
        existing = self._idempotency.get(scope)
        if (
            isinstance(existing, IdempotencyEntry)
            and existing.state is IdempotencyState.IN_FLIGHT
            and existing.fingerprint == fingerprint
        ):
            self._idempotency.delete(scope)

    # -- async jobs and timelines ---------------------------------------------
    async def job_update(self, job_id: str, fields: Mapping[str, str], polls: int, ttl_s: float) -> None:
        found = self._jobs.get(job_id)
        entry = dict(found) if isinstance(found, dict) else {}
        if "final" in entry:
            fields = {k: v for k, v in fields.items() if k in ("requestId", "bookingId", "finishedAt")}
        if "finishedAt" in entry:  # the first to learn the end knows when
            fields = {k: v for k, v in fields.items() if k != "finishedAt"}
        entry.update(fields)
        entry["polls"] = str(int(entry.get("polls", "0")) + polls)
        self._jobs.set(job_id, entry, ttl_s)

    async def job_get(self, job_id: str) -> dict[str, str] | None:
        found = self._jobs.get(job_id)
        return dict(found) if isinstance(found, dict) else None

    async def job_poll_claim(self, job_id: str, interval_s: float) -> bool:
        if self._poll_claims.get(job_id) is not None:
            return False
        self._poll_claims.set(job_id, True, interval_s)
        return True

    async def timeline_add(self, key: str, entry: bytes, ttl_s: float) -> None:
        found = self._timelines.get(key)
        entries = list(found) if isinstance(found, list) else []
        self._timelines.set(key, [*entries[-(MAX_TIMELINE - 1):], entry], ttl_s)

    async def timeline(self, key: str) -> list[bytes]:
        found = self._timelines.get(key)
        return list(found) if isinstance(found, list) else []

    # -- shared reads -------------------------------------------------------
    async def read_lookup(self, scope: str, key: str) -> ReadLookup:
        generation = self._read_generations.get(scope, 0)
        found = self._read_entries.get(scope, key, self._clock.monotonic())
        if found is None or found[0] != generation:
            return ReadLookup(generation, None, 0.0)
        return ReadLookup(generation, found[2], max(0.0, self._clock.wall() - found[1]))

    async def read_claim(self, scope: str, key: str, generation: int, leader: str, ttl_s: float) -> str | None:
        claim = f"{scope}|{generation}|{key}"
        holder = self._read_claims.get(claim)
        if isinstance(holder, str):
            return holder
        self._read_claims.set(claim, leader, ttl_s)
        return None

    async def read_publish(
        self, scope: str, key: str, generation: int, leader: str, answer: bytes, answer_ttl_s: float,
        entry: bytes | None, entry_ttl_s: float,
    ) -> bool:
        self._read_answers.set(f"{scope}|{leader}", answer, answer_ttl_s)
        claim = f"{scope}|{generation}|{key}"
        if self._read_claims.get(claim) == leader:
            self._read_claims.delete(claim)
        if entry is None or self._read_generations.get(scope, 0) != generation:
            return False
        self._read_entries.put(scope, key, self._clock.monotonic() + entry_ttl_s, generation, self._clock.wall(), entry)
        return True

    async def read_answer(self, scope: str, key: str, generation: int, leader: str) -> tuple[bytes | None, bool]:
        answer = self._read_answers.get(f"{scope}|{leader}")
        holding = self._read_claims.get(f"{scope}|{generation}|{key}") == leader
        return (answer if isinstance(answer, bytes) else None), holding

    async def read_invalidate(self, scopes: Sequence[str]) -> None:
        for scope in scopes:
            self._read_generations[scope] = self._read_generations.get(scope, 0) + 1

    async def read_purge(self, scopes: Sequence[str]) -> int:
        await self.read_invalidate(scopes)
        return sum(self._read_entries.purge(scope) for scope in scopes)

    # -- triage records -----------------------------------------------------
    async def put_records(self, records: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        for request_id, payload in records:
            self._records.set(request_id, payload, ttl_s)

    async def get_record(self, request_id: str) -> bytes | None:
        value = self._records.get(request_id)
        return value if isinstance(value, bytes) else None

    # -- membership ---------------------------------------------------------
    async def heartbeat(self, member: str, ttl_s: float) -> int:
        self._members.set(member, True, ttl_s)
        return len(self._members)

    async def first_seen(self, name: str, now_wall: float) -> float:
        return self._first_seen.setdefault(name, now_wall)

    async def put_snapshot(self, member: str, blob: bytes, ttl_s: float) -> None:
        self._snapshots.set(member, blob, ttl_s)

    async def snapshots(self) -> list[bytes]:
        found = (self._snapshots.get(member) for member in list(self._snapshots.keys()))
        return [blob for blob in found if isinstance(blob, bytes)]

    # -- webhooks (one process, not durable) -----------------------------------
    async def webhook_accept(self, event_id: str, blob: bytes, dedupe_ttl_s: float, due: float) -> bool:
        if self._webhook_seen.get(event_id) is not None:
            return False
        self._webhook_seen.set(event_id, True, dedupe_ttl_s)
        self._webhook_events[event_id] = blob
        self._webhook_due[event_id] = due
        return True

    async def webhook_claim(self, now: float, lease_s: float, limit: int) -> list[bytes]:
        due = sorted((at, event_id) for event_id, at in self._webhook_due.items() if at <= now)[:limit]
        for _, event_id in due:
            self._webhook_due[event_id] = now + lease_s
        return [self._webhook_events[event_id] for _, event_id in due]

    async def webhook_finish(self, event_id: str, outcome: str, blob: bytes, score: float) -> None:
        if outcome == "done":
            self._webhook_due.pop(event_id, None)
            self._webhook_events.pop(event_id, None)
            return
        self._webhook_events[event_id] = blob
        if outcome == "retry":
            self._webhook_due[event_id] = score
        else:
            self._webhook_due.pop(event_id, None)
            self._webhook_dead[event_id] = score

    async def webhook_counts(self) -> tuple[int, int]:
        return len(self._webhook_due), len(self._webhook_dead)

    async def webhook_dead_letters(self, limit: int) -> list[bytes]:
        newest = sorted(self._webhook_dead, key=self._webhook_dead.__getitem__, reverse=True)[:limit]
        return [self._webhook_events[event_id] for event_id in newest]

    async def webhook_get(self, event_id: str) -> bytes | None:
        return self._webhook_events.get(event_id)

    async def webhook_replay(self, event_id: str, blob: bytes, due: float) -> bool:
        if self._webhook_dead.pop(event_id, None) is None:
            return False
        self._webhook_events[event_id] = blob
        self._webhook_due[event_id] = due
        return True
