"""One circuit: pybreaker counting outcomes, plus the single-trial guard it lacks under asyncio.

pybreaker only ever sees *synchronous* outcome calls (``cb.call(_succeed)`` / ``cb.call(_fail,
exc)``) after an attempt finished; nothing is awaited inside it, so its thread lock is never held
across an ``await`` and every outcome counts. Admission is decided here, on the injected clock:
open and within ``reset_timeout`` → ``CircuitOpen``; once it has passed (or half-open) exactly one
trial goes through, guarded locally and, across replicas, by a probe claim in the store. An
answer that arrives while the circuit is open was sent before the trip and changes nothing.
Transitions are published to the store for the other replicas (``board.py`` applies theirs).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pybreaker

from gateway.core.clock import Clock
from gateway.errors import CircuitOpen, StoreError, UpstreamFailure
from gateway.request.types import UpstreamResponse
from gateway.store.protocols import BreakerStore, BreakerTransition

STATES = (pybreaker.STATE_CLOSED, pybreaker.STATE_HALF_OPEN, pybreaker.STATE_OPEN)


class ClockedStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker's memory storage, stamping ``opened_at`` from the injected clock (pybreaker
    itself reads ``datetime.now``): the open period is timed where the trial is decided."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._clock = clock

    @property
    def opened_at(self) -> datetime | None:
        return self._opened_at

    @opened_at.setter
    def opened_at(self, _ignored: datetime) -> None:
        self._opened_at = datetime.fromtimestamp(self._clock.wall(), UTC)

    def stamp_opened(self, at: float) -> None:
        """Another replica's open, at its own time."""
        self._opened_at = datetime.fromtimestamp(at, UTC)


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
        store: BreakerStore,
        member_id: str,
        probe_ttl_s: float,
        on_transition: Callable[[GuardedBreaker, str, str], None],
        clock: Clock,
    ) -> None:
        self.name = name
        self._clock = clock
        self.storage = ClockedStorage(clock)
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
        return (opened_at.timestamp() + self.reset_timeout_s) - self._clock.wall()

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
        if self.storage.state == pybreaker.STATE_OPEN:
            self.cb.half_open()  # the trial is decided here, on the injected clock, not by pybreaker's
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
        if self.storage.state == pybreaker.STATE_OPEN:
            return  # sent before the trip: only the trial may close the circuit
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            self.cb.call(_succeed)

    def record_failure(self, exc: BaseException) -> None:
        if self.storage.state == pybreaker.STATE_OPEN:
            return  # sent before the trip: it must not restart the open period
        with contextlib.suppress(pybreaker.CircuitBreakerError, UpstreamServerError, UpstreamFailure):
            self.cb.call(_fail, exc)

    # -- sharing state -------------------------------------------------------
    def transitioned(self, old: str, new: str) -> None:
        self.changed_at = self._clock.wall()
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
                self.storage.stamp_opened(transition.at)
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
