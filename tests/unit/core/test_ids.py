"""Request ids sort in the order they were made, even within one millisecond."""

from __future__ import annotations

import random

from gateway.core.ids import MonotonicUlids


def test_ids_made_in_one_millisecond_sort_in_order() -> None:
    ulids = MonotonicUlids(random.Random(1), clock_ms=lambda: 1_773_135_000_000)
    made = [ulids() for _ in range(1000)]
    assert made == sorted(made) and len(set(made)) == 1000


def test_a_clock_step_back_keeps_the_order() -> None:
    times = iter([1_000, 2_000, 1_500, 2_000, 3_000])
    ulids = MonotonicUlids(random.Random(2), clock_ms=lambda: next(times))
    made = [ulids() for _ in range(5)]
    assert made == sorted(made)
