"""The status board's rolling figures, on a hand-moved clock."""

from __future__ import annotations

from gateway.admin.status import UsageWindow
from gateway.core.clock import ManualClock


def test_usage_counts_attempts_per_environment_and_client_over_the_last_minute() -> None:
    clock = ManualClock()
    usage = UsageWindow(clock)
    usage.add("live", "booking-web", 1)
    usage.add("live", "booking-web", 3)  # a retried request: every attempt spends budget
    clock.advance(30)
    usage.add("sandbox", "reports", 1)
    assert usage.counts() == {"live|booking-web": 4, "sandbox|reports": 1}
    clock.advance(30.5)  # the first two are now older than a minute
    assert usage.counts() == {"sandbox|reports": 1}
    clock.advance(30)
    assert usage.counts() == {}


def test_usage_memory_does_not_grow_with_traffic() -> None:
    clock = ManualClock()
    usage = UsageWindow(clock)
    for _ in range(10 * 60 * 100):  # ten minutes at 100 requests a second
        usage.add("live", "booking-web", 1)
        clock.advance(0.01)
    assert len(usage._slots) <= 61
    assert 5_900 <= usage.counts()["live|booking-web"] <= 6_000
