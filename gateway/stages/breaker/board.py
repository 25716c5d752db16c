"""Every circuit of this process, made on first use and kept in step with the other replicas:
a background sync (every ``SYNC_INTERVAL_S``) applies their newer transitions from the store.
Also what the board shows: its status section and the breaker-state gauge's observations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from gateway.core.clock import Clock, Pace, SystemClock, real_time_pace
from gateway.core.tasks import stop_task
from gateway.errors import StoreError
from gateway.stages.breaker.guarded import GuardedBreaker
from gateway.store.protocols import BreakerStore

log = structlog.get_logger("gateway.breaker")

SYNC_INTERVAL_S = 0.5


class BreakerBoard:
    """Every breaker of this process, made on first use, kept in sync with the store."""

    def __init__(
        self,
        *,
        store: BreakerStore,
        fail_max: int,
        reset_timeout_s: float,
        probe_ttl_s: float,
        member_id: str,
        shared: bool,
        on_transition: Callable[[GuardedBreaker, str, str], None] | None = None,
        clock: Clock | None = None,
        pace: Pace = real_time_pace,
    ) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._pace = pace
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
                clock=self._clock,
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
            await self._pace(SYNC_INTERVAL_S)
            await self.sync_once()

    def refuses_after(self, environment: str, route: str, wait_s: float) -> bool:
        """Whether a call after ``wait_s`` would still find the circuit open (retry/stage.py)."""
        breaker = self.get(environment, route)
        return breaker.state == "open" and breaker.seconds_until_trial() > wait_s

    def states(self) -> list[tuple[str, str, str]]:
        """(environment, route, state) of every breaker, for the state gauge."""
        return [(b.name.partition(":")[0], b.name.partition(":")[2], b.state) for b in self.breakers.values()]

    def status_section(self) -> list[dict[str, object]]:
        return [
            {
                "name": b.name,
                "environment": b.name.split(":", 1)[0],
                "route": b.name.split(":", 1)[1],
                "state": b.state,
                "failures": b.storage.counter,
                "retryInS": max(0.0, round(b.seconds_until_trial(), 1)) if b.state == "open" else 0,
            }
            for b in sorted(self.breakers.values(), key=lambda b: b.name)
        ]
