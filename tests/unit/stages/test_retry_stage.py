"""The retry stage against a fake terminal and a ManualClock: what is retried, how long it
waits, when Retry-After wins, and when the retry budget or the deadline says no."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.observability.instruments import RETRIES, RETRY_BUDGET_EXHAUSTED
from gateway.observability.names import REASON
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.stages.retry.backoff import Backoff
from gateway.stages.retry.retry_budget import RetryBudget
from gateway.stages.retry.stage import RetryStage
from tests.support.fakes import CountedFacts, make_request


class Notes(CountedFacts):
    @property
    def retries(self) -> list[str]:
        return self.values(RETRIES, REASON)

    @property
    def exhausted(self) -> int:
        return self.times(RETRY_BUDGET_EXHAUSTED)


class Script:
    """Answers or raises, in order; notes each attempt number and when it came."""

    def __init__(self, clock: ManualClock, *outcomes: UpstreamResponse | Exception) -> None:
        self.clock, self.outcomes = clock, list(outcomes)
        self.attempts: list[tuple[int, float]] = []

    async def __call__(self, attempt: UpstreamRequest) -> UpstreamResponse:
        self.attempts.append((attempt.attempt, self.clock.monotonic()))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def answer(status: int, **headers: str) -> UpstreamResponse:
    return UpstreamResponse(status, tuple(headers.items()), b"{}")


def stage(clock: ManualClock, notes: Notes, *, attempts: int = 3, percent: float = 100, floor: float = 10) -> RetryStage:
    budget = RetryBudget(percent=percent, min_per_second=floor, window_s=10, clock=clock)
    return RetryStage(attempts, Backoff(0.1, 2.0, random.Random(1)), budget, clock, notes)


async def test_a_get_is_retried_on_5xx_with_jittered_exponential_backoff() -> None:
    clock, notes = ManualClock(), Notes()
    upstream = Script(clock, answer(503), answer(502), answer(200))
    assert (await stage(clock, notes)(make_request(clock), upstream)).status == 200
    assert [a for a, _ in upstream.attempts] == [1, 2, 3] and notes.retries == ["status_503", "status_502"]
    assert 0 <= clock.slept[0] <= 0.2 and 0 <= clock.slept[1] <= 0.4  # uniform(0, min(2, 0.1 * 2^n))


async def test_retry_after_overrides_the_schedule_and_a_long_one_returns_the_answer() -> None:
    clock, notes = ManualClock(), Notes()
    upstream = Script(clock, answer(429, **{"Retry-After": "2"}), answer(200))
    assert (await stage(clock, notes)(make_request(clock), upstream)).status == 200
    assert clock.slept == [2.0]
    late = Script(clock, answer(503, **{"Retry-After": "30"}))
    assert (await stage(clock, notes)(make_request(clock, deadline_s=8), late)).status == 503  # past the deadline: at once
    assert len(late.attempts) == 1


async def test_a_post_without_a_key_is_sent_once_but_a_refused_connect_is_retried() -> None:
    clock, notes = ManualClock(), Notes()
    post = replace(make_request(clock), method="POST")
    once = Script(clock, UpstreamTimeout("timed out", sent=True))
    with pytest.raises(UpstreamTimeout):
        await stage(clock, notes)(post, once)
    assert len(once.attempts) == 1
    refused = Script(clock, UpstreamUnavailable("refused", sent=False), answer(200))
    assert (await stage(clock, notes)(post, refused)).status == 200 and notes.retries[-1] == "connect_error"


async def test_4xx_and_deterministic_failures_are_final() -> None:
    clock, notes = ManualClock(), Notes()
    for outcome in (answer(404), answer(422)):
        upstream = Script(clock, outcome)
        assert (await stage(clock, notes)(make_request(clock), upstream)).status == outcome.status
        assert len(upstream.attempts) == 1
    too_large = Script(clock, UpstreamUnavailable("over max_response_bytes", sent=True, retryable=False))
    with pytest.raises(UpstreamUnavailable):
        await stage(clock, notes)(make_request(clock), too_large)
    assert len(too_large.attempts) == 1


async def test_the_retry_budget_caps_retries() -> None:
    clock, notes = ManualClock(), Notes()
    retrying = stage(clock, notes, percent=0, floor=0.1)  # one retry per 10 s window, no more
    outcomes = [answer(503)] * 10
    upstream = Script(clock, *outcomes)
    for _ in range(5):
        await retrying(make_request(clock), upstream)
    assert notes.retries == ["status_503"] and notes.exhausted == 5  # the first request wanted a second retry too


class RotatedOnce:
    """Credentials whose key changed after the first attempt's 401 INVALID_TOKEN."""

    def __init__(self) -> None:
        self.current = 0

    def generation(self, environment: str) -> int:
        return self.current

    async def changed_since(self, environment: str, generation: int, response: UpstreamResponse) -> bool:
        self.current = 1
        return response.status == 401 and generation != self.current


async def test_a_rotated_key_is_tried_once_more_outside_the_budget() -> None:
    clock, notes = ManualClock(), Notes()
    rotated = UpstreamResponse(401, (), b'{"code":"INVALID_TOKEN"}')
    upstream = Script(clock, rotated, answer(200))
    retrying = replace(stage(clock, notes, percent=0, floor=0), keys=RotatedOnce())
    assert (await retrying(make_request(clock), upstream)).status == 200
    assert notes.retries == ["credentials_rotated"] and clock.slept == [0.0]


async def test_no_backoff_is_slept_toward_a_circuit_that_would_refuse_the_retry() -> None:
    class OpenCircuit:
        def __init__(self) -> None:
            self.asked: list[float] = []

        def refuses_after(self, environment: str, route: str, wait_s: float) -> bool:
            self.asked.append(wait_s)
            return True

    clock, notes = ManualClock(), Notes()
    circuits = OpenCircuit()
    retry = replace(stage(clock, notes), circuits=circuits)
    upstream = Script(clock, answer(503), answer(200))
    answered = await retry(make_request(clock), upstream)
    assert answered.status == 503 and len(upstream.attempts) == 1  # the upstream's own answer, at once
    assert clock.slept == [] and len(circuits.asked) == 1 and notes.retries == []
