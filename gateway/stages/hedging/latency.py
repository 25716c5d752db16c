"""A route's recent attempt latencies, and the hedge delay they give (SPEC §5 hedged reads).

A ring of the last ``size`` answered attempts per route; the quantile is recomputed every
``every`` new samples (sorting a small ring is cheaper than a sketch structure at this size, and
a read does not sort). Until ``warm`` samples exist the delay is the configured maximum: a
hedge is not spent on a guess.
"""

from __future__ import annotations

import math


class LatencyRing:
    def __init__(self, *, quantile: float, min_s: float, max_s: float, size: int = 256, every: int = 16, warm: int = 16) -> None:
        self._quantile = quantile
        self._min_s, self._max_s = min_s, max_s
        self._samples: list[float] = []
        self._size, self._every, self._warm = size, every, warm
        self._next = 0
        self._since = 0
        self._delay = max_s

    def observe(self, seconds: float) -> None:
        if len(self._samples) < self._size:
            self._samples.append(seconds)
        else:
            self._samples[self._next] = seconds
            self._next = (self._next + 1) % self._size
        self._since += 1
        if self._since >= self._every and len(self._samples) >= self._warm:
            self._since = 0
            ordered = sorted(self._samples)
            at = ordered[min(len(ordered) - 1, max(0, math.ceil(self._quantile * len(ordered)) - 1))]
            self._delay = min(self._max_s, max(self._min_s, at))

    def delay(self) -> float:
        """Seconds to wait for the first attempt before hedging it."""
        return self._delay
