"""Circuit breaking per environment and route template, with pybreaker (SPEC §5).

How pybreaker is driven from asyncio (it has no native support):

- pybreaker only ever sees *synchronous* outcome calls (``cb.call(_succeed)`` /
  ``cb.call(_fail, exc)``) after an attempt finished; nothing is awaited inside it,
  so its thread lock is never held across an ``await`` and every outcome counts.
- Admission is decided here: open and within ``reset_timeout`` → 503 ``CIRCUIT_OPEN``
  without touching the upstream; once the timeout has passed (or half-open) exactly one
  trial goes through, guarded locally and, across replicas, by a probe claim in the store.
- pybreaker keeps its state in memory; transitions are published to the store and a
  background sync (every 0.5 s) applies other replicas' newer transitions here.

Failures: connect errors, timeouts, 5xx. Not failures: 4xx, 429. The gateway's own
refusals (rate budget, idempotency) say nothing about the upstream and are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pybreaker
import structlog

from gateway.core.tasks import stop_task
from gateway.errors import CircuitOpen, StoreError, UpstreamFailure
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.store.protocols import BreakerTransition, Store

log = structlog.get_logger("gateway.breaker")

SYNC_INTERVAL_S = 0.5
STATES = (pybreaker.STATE_CLOSED, pybreaker.STATE_HALF_OPEN, pybreaker.STATE_OPEN)


class UpstreamServerError(Exception):
    """A 5xx answer, raised only to show pybreaker a failure."""


def _succeed() -> None:
    return None


def _fail(exc: BaseException) -> None:
    raise exc


def is_failure(response: UpstreamResponse) -> bool:
    return response.status >= 500


class GuardedBreaker:
    """One pybreaker breaker plus the single-probe guard pybreaker lacks under asyncio."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_timeout_s: float,
        store: Store,
        member_id: str,
        probe_ttl_s: float,
        on_transition: Callable[[GuardedBreaker, str, str], None],
    ) -> None:
        self.name = name
        self.storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.reset_timeout_s = reset_timeout_s
        self.changed_at = 0.0
        self._store = store
        self._member_id = member_id
        self._probe_ttl_s = probe_ttl_s
        self._on_transition = on_transition
        self._probe_in_flight = False
        self._trials = 0
        self._probe_token = ""
        self._applying_remote = False
        self._pending: set[asyncio.Task[None]] = set()
        self.cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            state_storage=self.storage,
            throw_new_error_on_trip=False,
            name=name,
            listeners=[_Listener(self)],
        )

    @property
    def state(self) -> str:
        return self.storage.state

    def seconds_until_trial(self) -> float:
        opened_at = self.storage.opened_at
        if opened_at is None:
            return 0.0
        return (opened_at.timestamp() + self.reset_timeout_s) - datetime.now(UTC).timestamp()

    async def admit(self) -> bool:
        """Return whether this call is the half-open trial; raise ``CircuitOpen`` to refuse."""
        state = self.storage.state
        if state == pybreaker.STATE_CLOSED:
            return False
        if state == pybreaker.STATE_OPEN:
            remaining = self.seconds_until_trial()
            if remaining > 0:
                raise CircuitOpen(
                    f"circuit {self.name} is open", retry_after_s=max(1, math.ceil(remaining))
                )
        if self._probe_in_flight:
            raise CircuitOpen(f"circuit {self.name} is half-open; its trial is in flight", retry_after_s=1)
        self._probe_in_flight = True
        self._trials += 1
        self._probe_token = f"{self._member_id}:{self._trials}"
        try:
            claimed = await self._store.claim_probe(self.name, self._probe_ttl_s, self._probe_token)
        except StoreError:
            claimed = True  # the resilient store already fell back; never block on it
        if not claimed:
            self._probe_in_flight = False
            raise CircuitOpen(f"circuit {self.name} is half-open; another replica is probing", retry_after_s=1)
        return True

    async def end_trial(self) -> None:
        """The trial answered: its claim goes, so the next open period can have its own trial
        (the claim's TTL is only for a replica that dies mid-trial)."""
        self._probe_in_flight = False
        with contextlib.suppress(StoreError):
            await self._store.release_probe(self.name, self._probe_token)

    def record_success(self) -> None:
        if self.storage.state == pybreaker.STATE_CLOSED and self.storage.counter == 0:
            return  # all pybreaker would do is zero a zero fail count, under its lock (most calls)
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            self.cb.call(_succeed)

    def record_failure(self, exc: BaseException) -> None:
        with contextlib.suppress(pybreaker.CircuitBreakerError, UpstreamServerError, UpstreamFailure):
            self.cb.call(_fail, exc)

    # -- sharing state -------------------------------------------------------
    def transitioned(self, old: str, new: str) -> None:
        self.changed_at = datetime.now(UTC).timestamp()
        self._on_transition(self, old, new)
        if self._applying_remote or new == pybreaker.STATE_HALF_OPEN:
            return
        transition = BreakerTransition(new, self.changed_at, self._member_id)
        task = asyncio.get_running_loop().create_task(self._publish(transition))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, transition: BreakerTransition) -> None:
        with contextlib.suppress(StoreError):
            await self._store.publish_breaker(self.name, transition)

    def apply_remote(self, transition: BreakerTransition) -> None:
        """Adopt a newer transition another replica made."""
        if transition.origin == self._member_id or transition.at <= self.changed_at:
            return
        self._applying_remote = True
        try:
            if transition.state == pybreaker.STATE_OPEN and self.state != pybreaker.STATE_OPEN:
                self.cb.open()
                self.storage.opened_at = datetime.fromtimestamp(transition.at, UTC)
            elif transition.state == pybreaker.STATE_CLOSED and self.state != pybreaker.STATE_CLOSED:
                self.cb.close()
            self.changed_at = transition.at
        finally:
            self._applying_remote = False


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: GuardedBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._owner.transitioned(old_state.name if old_state else "", new_state.name)


class BreakerBoard:
    """Every breaker of this process, made on first use, kept in sync with the store."""

    def __init__(
        self,
        *,
        store: Store,
        fail_max: int,
        reset_timeout_s: float,
        probe_ttl_s: float,
        member_id: str,
        shared: bool,
        on_transition: Callable[[GuardedBreaker, str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._fail_max = fail_max
        self._reset_timeout_s = reset_timeout_s
        self._probe_ttl_s = probe_ttl_s
        self._member_id = member_id
        self._shared = shared
        self._on_transition = on_transition or (lambda *_: None)
        self.breakers: dict[str, GuardedBreaker] = {}
        self._task: asyncio.Task[None] | None = None

    def get(self, environment: str, route: str) -> GuardedBreaker:
        name = f"{environment}:{route}"
        breaker = self.breakers.get(name)
        if breaker is None:
            breaker = self.breakers[name] = GuardedBreaker(
                name,
                fail_max=self._fail_max,
                reset_timeout_s=self._reset_timeout_s,
                store=self._store,
                member_id=self._member_id,
                probe_ttl_s=self._probe_ttl_s,
                on_transition=self._log_transition,
            )
        return breaker

    def _log_transition(self, breaker: GuardedBreaker, old: str, new: str) -> None:
        log.warning("breaker_state_change", breaker=breaker.name, old=old, new=new)
        self._on_transition(breaker, old, new)

    async def start(self) -> None:
        if self._shared:
            self._task = asyncio.create_task(self._sync_forever(), name="breaker-sync")

    async def close(self) -> None:
        await stop_task(self._task)

    async def sync_once(self) -> None:
        try:
            transitions = await self._store.breaker_transitions()
        except StoreError:
            return
        for name, transition in transitions.items():
            environment, _, route = name.partition(":")
            self.get(environment, route).apply_remote(transition)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            await self.sync_once()


@dataclass(frozen=True, slots=True)
class BreakerStage:
    board: BreakerBoard
    name: str = field(default="breaker")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        breaker = self.board.get(request.environment, request.route)
        request.record.breaker_state = breaker.state
        is_trial = await breaker.admit()
        try:
            response = await next(request)
        except UpstreamFailure as exc:
            breaker.record_failure(exc)
            raise
        finally:
            if is_trial:
                await breaker.end_trial()
        if is_failure(response):
            breaker.record_failure(UpstreamServerError(response.status))
        else:
            breaker.record_success()
        return response
