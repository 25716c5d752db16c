"""Bookkeeping after the answer (gateway/observability/after_answer.py): held while requests keep coming,
run in a quiet moment, never later than its delay bound, everything on drain."""

from __future__ import annotations

import asyncio

import pytest

from gateway.observability.after_answer import AfterAnswer


class Now:
    """The queue's idea of time, moved by hand; its timers are the loop's, so tests still
    yield to let them fire, but what they decide does not depend on how fast they fire."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def timers_fire() -> None:
    await asyncio.sleep(0.01)


async def test_bookkeeping_waits_until_nothing_was_deferred_for_the_quiet_time() -> None:
    now, done = Now(), list[int]()
    after = AfterAnswer(quiet_s=0.001, max_delay_s=10, now=now)
    for i in range(5):
        after.defer(done.append, i)
        now.t += 0.0005  # a request answered every half quiet time: a burst
        await timers_fire()
    assert done == [] and len(after) == 5
    now.t += 0.001
    await timers_fire()
    assert done == [0, 1, 2, 3, 4] and len(after) == 0


async def test_a_loop_that_is_never_quiet_still_runs_what_waited_too_long() -> None:
    now, done = Now(), list[int]()
    after = AfterAnswer(quiet_s=0.001, max_delay_s=0.02, now=now)
    for i in range(8):
        after.defer(done.append, i)
    now.t += 0.025  # the oldest have waited past the bound...
    after.defer(done.append, 8)  # ...and requests are still being answered
    await timers_fire()
    assert done == list(range(8))  # the overdue ones, oldest first
    assert len(after) == 1  # the newest has not waited long: it waits for quiet
    now.t += 0.001  # quiet at last
    await timers_fire()
    assert done == list(range(9))


async def test_drain_runs_everything_now_and_a_failure_does_not_lose_the_rest() -> None:
    done: list[int] = []
    after = AfterAnswer(quiet_s=60, max_delay_s=60)

    def broken(_: int) -> None:
        raise RuntimeError("bug in one request's bookkeeping")

    after.defer(done.append, 1)
    after.defer(broken, 2)
    after.defer(done.append, 3)
    after.drain()
    assert done == [1, 3] and len(after) == 0
    after.drain()  # nothing left: nothing runs twice
    assert done == [1, 3]


async def test_the_queue_is_bounded_even_if_its_timer_never_gets_to_run() -> None:
    done: list[int] = []
    after = AfterAnswer(quiet_s=60, max_delay_s=60, max_queued=100)
    for i in range(250):
        after.defer(done.append, i)
    assert done == list(range(200)) and len(after) == 50


@pytest.mark.parametrize("deferred", [0, 1])
async def test_nothing_is_left_scheduled_after_a_drain(deferred: int) -> None:
    after = AfterAnswer(quiet_s=0.001, max_delay_s=0.02)
    for _ in range(deferred):
        after.defer(lambda: None)
    after.drain()
    assert after._timer is None
