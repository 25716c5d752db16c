"""The breaker stage against a fake terminal on the memory store: open, half-open, the single
trial, and a second trial after a failed one. Time passes on the injected ManualClock."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import CircuitOpen
from gateway.observability.instruments import BREAKER_REFUSED
from gateway.observability.names import PMC_BREAKER
from gateway.request.types import UpstreamResponse
from gateway.stages.breaker.stage import BreakerBoard, BreakerStage
from gateway.store.memory import MemoryStore
from tests.support.fakes import CountedFacts, make_request


class Answers:
    def __init__(self, *statuses: int) -> None:
        self.statuses, self.sent = list(statuses), 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, _request: object) -> UpstreamResponse:
        self.sent += 1
        await self.release.wait()
        return UpstreamResponse(self.statuses.pop(0), (), b"{}")


def board_and_clock() -> tuple[BreakerBoard, ManualClock]:
    clock = ManualClock()
    breakers = BreakerBoard(
        store=MemoryStore(clock), fail_max=1, reset_timeout_s=30, probe_ttl_s=60, member_id="m", shared=False, clock=clock
    )
    return breakers, clock


def reset_timeout_passes(breakers: BreakerBoard, clock: ManualClock) -> None:
    assert breakers.get("live", "/v1/users/me").storage.opened_at is not None
    clock.advance(31)


async def test_open_refuses_then_one_trial_closes_it() -> None:
    breakers, clock = board_and_clock()
    notes = CountedFacts()
    stage, upstream = BreakerStage(breakers, notes), Answers(500, 200)
    assert (await stage(make_request(clock), upstream)).status == 500
    with pytest.raises(CircuitOpen) as refused:
        await stage(make_request(clock), upstream)
    assert refused.value.retry_after_s == 30 and upstream.sent == 1  # the upstream was not touched
    assert notes.values(BREAKER_REFUSED, PMC_BREAKER) == ["live:/v1/users/me"]  # counted, with its span event's breaker
    reset_timeout_passes(breakers, clock)
    assert (await stage(make_request(clock), upstream)).status == 200
    assert breakers.get("live", "/v1/users/me").state == "closed"


async def test_half_open_lets_exactly_one_trial_through() -> None:
    breakers, clock = board_and_clock()
    stage, upstream = BreakerStage(breakers), Answers(500, 200)
    await stage(make_request(clock), upstream)
    reset_timeout_passes(breakers, clock)
    upstream.release.clear()
    trial = asyncio.create_task(stage(make_request(clock), upstream))
    await asyncio.sleep(0)  # the trial is in flight
    with pytest.raises(CircuitOpen, match="trial is in flight"):
        await stage(make_request(clock), upstream)
    upstream.release.set()
    assert (await trial).status == 200 and upstream.sent == 2


async def test_after_a_failed_trial_the_next_trial_is_not_refused() -> None:
    """Regression: the failed trial's probe claim outlived it, and the next trial after
    reset_timeout_s was refused as "another replica is probing" on a single process."""
    breakers, clock = board_and_clock()
    stage, upstream = BreakerStage(breakers), Answers(500, 500, 200)
    await stage(make_request(clock), upstream)
    reset_timeout_passes(breakers, clock)
    assert (await stage(make_request(clock), upstream)).status == 500  # the trial fails: open again
    assert breakers.get("live", "/v1/users/me").state == "open"
    reset_timeout_passes(breakers, clock)
    assert (await stage(make_request(clock), upstream)).status == 200
    assert breakers.get("live", "/v1/users/me").state == "closed"


async def test_4xx_and_429_are_not_failures() -> None:
    breakers, clock = board_and_clock()
    stage, upstream = BreakerStage(breakers), Answers(404, 429, 422)
    for _ in range(3):
        await stage(make_request(clock), upstream)
    assert breakers.get("live", "/v1/users/me").state == "closed"
