"""Property tests of the rate-budget algorithm (GCRA with reservations), clock injected."""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store import gcra
from gateway.store.base import Bucket

arrivals = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=3.0, allow_nan=False),  # gap since the previous arrival, s
        st.sampled_from([0.0, 0.25, 1.0, 5.0]),  # the arrival's max wait, s
    ),
    min_size=1,
    max_size=400,
)


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + window) - i)  # half-open [start, start+window)
    return best


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(min_value=1, max_value=240))
def test_no_window_exceeds_the_limit_and_no_refusal_while_a_slot_was_free(pattern: list[tuple[float, float]], limit: int) -> None:
    bucket = Bucket("env:live", "env:live", 60 / limit)
    tats: dict[str, float] = {}
    now, sends = 0.0, []
    for gap, max_wait in pattern:
        now += gap
        earliest_free = max([now, *(s + bucket.interval_s for s in sends[-1:])])
        admission = gcra.admit(tats, 0.0, [bucket], now, max_wait)
        if admission.granted:
            assert admission.wait_s <= max_wait + 1e-9
            sends.append(now + admission.wait_s)
        else:
            # refused only when the next free slot lies beyond this request's wait
            assert earliest_free - now > max_wait - 1e-9
            assert admission.wait_s > max_wait
    assert max_in_any_window(sends, 60.0) <= limit
    assert sends == sorted(sends)  # served in arrival order


@settings(max_examples=200, deadline=None)
@given(arrivals, st.integers(min_value=2, max_value=200), st.integers(min_value=1, max_value=200))
def test_client_cap_and_key_budget_are_taken_together(pattern: list[tuple[float, float]], key_limit: int, client_limit: int) -> None:
    key = Bucket("env:live", "env:live", 60 / key_limit)
    client = Bucket("client:live:web", "env:live", 60 / client_limit)
    tats: dict[str, float] = {}
    now, sends = 0.0, []
    for gap, max_wait in pattern:
        now += gap
        admission = gcra.admit(tats, 0.0, [key, client], now, max_wait)
        if admission.granted:
            sends.append(now + admission.wait_s)
    assert max_in_any_window(sends, 60.0) <= min(key_limit, client_limit)


@settings(max_examples=200, deadline=None)
@given(arrivals, st.floats(min_value=0.1, max_value=30))
def test_a_pause_holds_every_send_until_it_ends(pattern: list[tuple[float, float]], pause: float) -> None:
    bucket = Bucket("env:live", "env:live", 0.5)
    tats: dict[str, float] = {}
    now = 0.0
    for gap, max_wait in pattern:
        now += gap
        admission = gcra.admit(tats, pause, [bucket], now, max_wait)
        if admission.granted:
            assert now + admission.wait_s >= pause - 1e-9


def test_refusal_reserves_nothing() -> None:
    bucket = Bucket("env:live", "env:live", 1.0)
    tats: dict[str, float] = {}
    assert gcra.admit(tats, 0.0, [bucket], 0.0, 0.0).granted
    before = dict(tats)
    refused = gcra.admit(tats, 0.0, [bucket], 0.1, 0.5)
    assert not refused.granted and abs(refused.wait_s - 0.9) < 1e-9
    assert tats == before
