"""The hedging stage on a ManualClock and fake terminals: no socket, no sleep. ManualClock's
sleep returns at once, so a try the terminal holds is 'still unanswered after the delay'."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.clock import ManualClock
from gateway.observability.instruments import HEDGES
from gateway.observability.names import OUTCOME
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.settings import HedgingSettings
from gateway.stages.hedging.latency import LatencyRing
from gateway.stages.hedging.stage import HedgingStage
from tests.support.fakes import CountedFacts, make_request


class Room:
    def __init__(self, usage: float = 0.0, closed: bool = True, retries: int = 100) -> None:
        self.usage, self.closed, self.retries = usage, closed, retries

    def key_usage(self, environment: str) -> float:
        return self.usage

    def breaker_closed(self, environment: str, route: str) -> bool:
        return self.closed

    def take_retry(self) -> bool:
        self.retries -= 1
        return self.retries >= 0


class Outcomes(CountedFacts):
    @property
    def seen(self) -> list[str]:
        return self.values(HEDGES, OUTCOME)


class Tries:
    """The upstream: the first try hangs until released (or forever); hedges answer at once."""

    def __init__(self, first: UpstreamResponse | Exception | None = None, hedge: UpstreamResponse | Exception | None = None) -> None:
        self.first, self.hedge = first, hedge
        self.sent: list[UpstreamRequest] = []
        self.cancelled: list[bool] = []
        self.release = asyncio.Event()

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        self.sent.append(request)
        answer = self.hedge if request.hedge else self.first
        try:
            if not request.hedge:
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.hedge)
            raise
        if isinstance(answer, Exception):
            raise answer
        return answer or UpstreamResponse(200, (), b"hedge" if request.hedge else b"first")


def stage(room: Room | None = None, **settings: object) -> tuple[HedgingStage, Outcomes, ManualClock]:
    clock = ManualClock()
    outcomes = Outcomes()
    config = HedgingSettings(routes=("/v1/availability",), **settings)  # type: ignore[arg-type]
    return HedgingStage(settings=config, guards=room or Room(), clock=clock, observer=outcomes), outcomes, clock


def availability(clock: ManualClock, method: str = "GET") -> UpstreamRequest:
    return make_request(clock, method=method, target="/v1/availability?date=2026-03-10")


def test_the_delay_is_the_routes_recent_quantile_within_its_bounds() -> None:
    ring = LatencyRing(quantile=0.95, min_s=0.02, max_s=1.0)
    assert ring.delay() == 1.0  # nothing learnt yet: no hedge on a guess
    for i in range(96):
        ring.observe(0.010 + i * 0.0004)  # 10 … 48 ms
    assert ring.delay() == pytest.approx(0.0464)  # the 92nd of 96: the 95th percentile
    for _ in range(256):
        ring.observe(0.001)
    assert ring.delay() == 0.02  # never sooner than min_delay_ms
    for _ in range(256):
        ring.observe(9.0)
    assert ring.delay() == 1.0  # never later than max_delay_ms


async def test_a_slow_first_try_is_hedged_and_the_hedge_wins_the_first_is_abandoned() -> None:
    hedging, outcomes, clock = stage()
    tries = Tries()
    answer = await hedging(availability(clock), tries)
    assert answer.body == b"hedge" and outcomes.seen == ["won"]
    assert [r.hedge for r in tries.sent] == [False, True] and tries.cancelled == [False]
    assert tries.sent[1].attempt == tries.sent[0].attempt and tries.sent[1].delay_before_s >= 0


async def test_a_first_try_that_answers_in_time_is_not_hedged() -> None:
    hedging, outcomes, clock = stage()
    tries = Tries()
    tries.release.set()
    answer = await hedging(availability(clock), tries)
    assert answer.body == b"first" and outcomes.seen == [] and len(tries.sent) == 1


@pytest.mark.parametrize("room", [Room(usage=0.5), Room(closed=False), Room(retries=0)], ids=["budget", "breaker", "retry-budget"])
async def test_no_hedge_without_room_in_the_budget_the_breaker_or_the_retry_budget(room: Room) -> None:
    hedging, outcomes, clock = stage(room, max_budget_use=0.5)
    tries = Tries()
    pending = asyncio.create_task(hedging(availability(clock), tries))
    await asyncio.sleep(0.01)
    tries.release.set()
    assert (await pending).body == b"first" and outcomes.seen == ["skipped"] and len(tries.sent) == 1


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT", "DELETE"])
async def test_never_a_hedge_but_for_get(method: str) -> None:
    hedging, outcomes, clock = stage()
    tries = Tries()
    pending = asyncio.create_task(hedging(availability(clock, method), tries))
    await asyncio.sleep(0.01)
    assert len(tries.sent) == 1
    tries.release.set()
    await pending
    assert outcomes.seen == []


async def test_a_failed_hedge_leaves_the_first_try_to_answer() -> None:
    hedging, outcomes, clock = stage()
    tries = Tries(hedge=UpstreamResponse(503, (), b"busy"))
    pending = asyncio.create_task(hedging(availability(clock), tries))
    await asyncio.sleep(0.01)
    tries.release.set()
    assert (await pending).body == b"first" and outcomes.seen == ["lost"]


async def test_both_failing_gives_the_first_tries_failure_to_the_retry_stage() -> None:
    from gateway.errors import UpstreamTimeout

    hedging, _, clock = stage()
    tries = Tries(first=UpstreamTimeout("slow", sent=True), hedge=UpstreamResponse(503, (), b"busy"))
    pending = asyncio.create_task(hedging(availability(clock), tries))
    await asyncio.sleep(0.01)
    tries.release.set()
    with pytest.raises(UpstreamTimeout):
        await pending


async def test_a_caller_gone_cancels_both_tries() -> None:
    hedging, _, clock = stage()
    tries = Tries(hedge=UpstreamResponse(503, (), b"busy"))
    tries.hedge = None

    async def hang(request: UpstreamRequest) -> UpstreamResponse:
        tries.sent.append(request)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            tries.cancelled.append(request.hedge)
            raise
        raise AssertionError

    pending = asyncio.create_task(hedging(availability(clock), hang))
    await asyncio.sleep(0.01)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert sorted(tries.cancelled) == [False, True]
