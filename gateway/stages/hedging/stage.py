"""The hedging stage: between retry and breaker, so each attempt the retry stage makes may be
hedged once, and both tries pass the breaker and the rate budget on their own.

Rules (README "Hedged reads"):
- only GET, only listed routes; POST/PATCH never, whatever their headers;
- the hedge is sent when the attempt is still unanswered after the route's delay, and only while
  the key's admissions in the last 60 s are below ``max_budget_use`` of its limit, the breaker is
  closed and the retry budget gives one (a hedge counts as a retry there); else it is ``skipped``;
- the first usable answer (any status but 5xx and 429) wins; the other try is cancelled, its
  connection closed, its attempt recorded ``abandoned``;
- if one try fails while the other is in flight, the other is awaited; if both fail, the first
  try's failure goes back to the retry stage, which decides as for any failed attempt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from gateway.core.clock import Clock
from gateway.observability.instruments import HEDGES
from gateway.observability.names import OUTCOME
from gateway.observability.stage_facts import CountsFacts
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.settings import HedgingSettings
from gateway.stages.breaker.board import BreakerBoard
from gateway.stages.hedging.latency import LatencyRing
from gateway.stages.rate_budget import KeyUsage
from gateway.stages.retry.retry_budget import RetryBudget


class HedgeGuards(Protocol):
    """What must have room before a hedge is sent."""

    def key_usage(self, environment: str) -> float: ...  # admissions in the last 60 s / limit
    def breaker_closed(self, environment: str, route: str) -> bool: ...
    def take_retry(self) -> bool: ...


def _usable(task: asyncio.Future[UpstreamResponse]) -> bool:
    if task.cancelled() or task.exception() is not None:
        return False
    status = task.result().status
    return status < 500 and status != 429


class HedgingStage:
    name = "hedging"

    def __init__(self, *, settings: HedgingSettings, guards: HedgeGuards, clock: Clock, observer: CountsFacts) -> None:
        self._routes: Mapping[str, LatencyRing] = {
            route: LatencyRing(quantile=settings.quantile, min_s=settings.min_delay_ms / 1000, max_s=settings.max_delay_ms / 1000)
            for route in settings.routes
        }
        self._max_budget_use = settings.max_budget_use
        self._guards = guards
        self._clock = clock
        self._observer = observer
        observer.declare_routes(HEDGES, tuple(settings.routes))

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(self._routes)

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        ring = self._routes.get(request.route)
        if ring is None or request.method != "GET" or request.hedge:
            return await next(request)
        started = self._clock.monotonic()
        first = asyncio.ensure_future(next(request))
        timer = asyncio.ensure_future(self._clock.sleep(ring.delay()))
        try:
            await asyncio.wait((first, timer), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            first.cancel()
            raise
        finally:
            timer.cancel()
        if first.done() or not self._may_hedge(request):
            if not first.done():
                self._observer.count(HEDGES, request, {OUTCOME: "skipped"})
            return await self._observed(first, ring, started)
        hedge = asyncio.ensure_future(next(request.as_hedge(self._clock.monotonic() - started)))
        return await self._race(request, first, hedge, ring, started)

    def _may_hedge(self, request: UpstreamRequest) -> bool:
        return (
            self._guards.key_usage(request.environment) < self._max_budget_use
            and self._guards.breaker_closed(request.environment, request.route)
            and self._guards.take_retry()
        )

    async def _observed(self, task: asyncio.Future[UpstreamResponse], ring: LatencyRing, started: float) -> UpstreamResponse:
        try:
            response = await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        ring.observe(self._clock.monotonic() - started)
        return response

    async def _race(
        self, request: UpstreamRequest, first: asyncio.Future[UpstreamResponse], hedge: asyncio.Future[UpstreamResponse],
        ring: LatencyRing, started: float,
    ) -> UpstreamResponse:
        pending = {first, hedge}
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in (t for t in (first, hedge) if t in done):
                    if _usable(task):
                        ring.observe(self._clock.monotonic() - started)
                        self._observer.count(HEDGES, request, {OUTCOME: "won" if task is hedge else "lost"})
                        return task.result()
            self._observer.count(HEDGES, request, {OUTCOME: "lost"})
            return first.result()  # both failed: the first try's answer or failure, for the retry stage
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)  # the abandoned try's record and connection are settled first


class HedgeRoom:
    """The guards as the running gateway answers them: the key's shared usage (rate budget), the
    route's breaker, the retry budget."""

    def __init__(self, *, usage: KeyUsage, breakers: BreakerBoard, retry_budget: RetryBudget) -> None:
        self._usage, self._breakers, self._retry_budget = usage, breakers, retry_budget

    def key_usage(self, environment: str) -> float:
        return self._usage.share(environment)

    def breaker_closed(self, environment: str, route: str) -> bool:
        return self._breakers.get(environment, route).state == "closed"

    def take_retry(self) -> bool:
        return self._retry_budget.try_withdraw()
