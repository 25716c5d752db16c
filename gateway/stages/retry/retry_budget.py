"""The retry budget (SPEC §5): retries may add at most ``percent`` % to live traffic over a
sliding window, but at least ``min_per_second`` are always allowed (Finagle's RetryBudget).

Kept per process: it guards the upstream from this process's retry storm without a
store round trip; with N replicas the group's retries stay within the same percentage.
"""

from __future__ import annotations

from gateway.core.clock import Clock


class RetryBudget:
    def __init__(self, *, percent: float, min_per_second: float, window_s: int, clock: Clock) -> None:
        self._ratio = percent / 100
        self._floor = min_per_second * window_s
        self._window = window_s
        self._clock = clock
        self._requests = [0] * window_s
        self._retries = [0] * window_s
        self._slot_second = [0] * window_s

    def _slot(self) -> int:
        second = int(self._clock.monotonic())
        slot = second % self._window
        if self._slot_second[slot] != second:  # a new second reuses the oldest slot
            self._slot_second[slot] = second
            self._requests[slot] = 0
            self._retries[slot] = 0
        return slot

    def _live(self, counts: list[int]) -> int:
        oldest = int(self._clock.monotonic()) - self._window
        return sum(c for c, s in zip(counts, self._slot_second, strict=True) if s > oldest)

    def deposit(self) -> None:
        """Count one live request (not a retry)."""
        self._requests[self._slot()] += 1

    def allowed(self) -> float:
        return max(self._ratio * self._live(self._requests), self._floor)

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget has room."""
        slot = self._slot()
        if self._live(self._retries) + 1 > self.allowed():
            return False
        self._retries[slot] += 1
        return True
