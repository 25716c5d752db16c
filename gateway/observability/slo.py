"""Live SLO figures for ``/_gateway/status``: availability and latency over rolling windows.

Requests are counted into 10-second slots (one hour kept) and a cumulative total, each
with a fixed log-spaced latency histogram, so quantiles cost nothing per request and
memory stays constant. A request is *unavailable* when the gateway answered 5xx
(including CIRCUIT_OPEN and upstream 5xx passed through); 4xx are the caller's. Latency is
judged as the alert rules judge it (dashboards/slo.py): the average against the target, the
share under the tail threshold, and the share whose gateway-added latency is under its own.
Snapshots from several processes merge by adding counts (``merge``).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from gateway.core.clock import Clock

SLOT_S = 10
SLOTS = 360  # one hour
# Latency boundaries in ms: 1 ms … 30 s, ~12 % apart, so quantiles are within ~6 %.
BOUNDS_MS = [round(1.12**i, 3) for i in range(0, 92)]


@dataclass
class Tally:
    count: int = 0
    errors: int = 0
    under_tail: int = 0
    added_under: int = 0
    latency_sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))

    def add(self, other: Tally) -> None:
        self.count += other.count
        self.errors += other.errors
        self.under_tail += other.under_tail
        self.added_under += other.added_under
        self.latency_sum_ms += other.latency_sum_ms
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]

    def to_json(self) -> dict[str, object]:
        return {"c": self.count, "e": self.errors, "u": self.under_tail, "a": self.added_under, "s": self.latency_sum_ms, "b": self.buckets}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Tally:
        return cls(int(data["c"]), int(data["e"]), int(data["u"]), int(data.get("a", data["c"])), float(data["s"]), list(data["b"]))  # type: ignore[arg-type,call-overload]

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.buckets):
            if seen + n >= rank and n:
                low = BOUNDS_MS[i - 1] if i > 0 else 0.0
                high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1] * 2
                return round(low + (high - low) * ((rank - seen) / n), 3)
            seen += n
        return BOUNDS_MS[-1]

    def summary(self, target_availability: float) -> dict[str, object]:
        availability = None if self.count == 0 else 1 - self.errors / self.count
        budget = 1 - target_availability
        # the window's error ratio over the allowed one: 1.0 spends the budget exactly (a burn rate)
        spent = None if availability is None else (1 - availability) / budget
        return {
            "requests": self.count,
            "errors": self.errors,
            "availability": availability,
            "errorBudgetSpent": spent,
            "latencyAvgMs": None if self.count == 0 else round(self.latency_sum_ms / self.count, 3),
            "latencyP50Ms": self.quantile(0.50),
            "latencyP95Ms": self.quantile(0.95),
            "latencyP99Ms": self.quantile(0.99),
            "underTailRatio": None if self.count == 0 else self.under_tail / self.count,
            "addedUnderTargetRatio": None if self.count == 0 else self.added_under / self.count,
        }


class SloTracker:
    def __init__(self, clock: Clock, *, tail_ms: float, added_target_ms: float) -> None:
        self._clock = clock
        self._tail_ms = tail_ms
        self._added_target_ms = added_target_ms
        self.started = clock.monotonic()
        self.total = Tally()
        self._slots = [Tally() for _ in range(SLOTS)]
        self._slot_index = [-1] * SLOTS
        self.by_route: dict[str, Tally] = {}

    def _slot(self, index: int) -> Tally:
        position = index % SLOTS
        if self._slot_index[position] != index:
            self._slot_index[position] = index
            self._slots[position] = Tally()
        return self._slots[position]

    def observe(self, route: str, status: int, latency_ms: float, added_ms: float = 0.0) -> None:
        index = int(self._clock.monotonic() // SLOT_S)
        bucket = bisect.bisect_left(BOUNDS_MS, latency_ms)
        error = status >= 500
        under = latency_ms <= self._tail_ms
        added_under = added_ms <= self._added_target_ms
        route_tally = self.by_route.get(route)
        if route_tally is None:
            if len(self.by_route) >= 200:  # bounded: routes are templates, this is a backstop
                route = "/{other}"
            route_tally = self.by_route.setdefault(route, Tally())
        for tally in (self.total, self._slot(index), route_tally):
            tally.count += 1
            tally.errors += error
            tally.under_tail += under
            tally.added_under += added_under
            tally.latency_sum_ms += latency_ms
            tally.buckets[bucket] += 1

    def window(self, seconds: int) -> Tally:
        now = int(self._clock.monotonic() // SLOT_S)
        tally = Tally()
        for back in range(max(1, seconds // SLOT_S)):
            index = now - back
            position = index % SLOTS
            if self._slot_index[position] == index:
                tally.add(self._slots[position])
        return tally

    def snapshot(self) -> dict[str, object]:
        """What one process contributes to the group's figures."""
        return {
            "uptimeS": self._clock.monotonic() - self.started,
            "total": self.total.to_json(),
            "last5m": self.window(300).to_json(),
            "last1h": self.window(3600).to_json(),
            "routes": {route: tally.to_json() for route, tally in self.by_route.items()},
        }


def merge(snapshots: list[dict[str, object]], target_availability: float) -> dict[str, object]:
    """Add several processes' snapshots into the status document's SLO section."""
    windows = {"sinceStart": Tally(), "last5m": Tally(), "last1h": Tally()}
    routes: dict[str, Tally] = {}
    uptime = 0.0
    for snap in snapshots:
        windows["sinceStart"].add(Tally.from_json(snap["total"]))  # type: ignore[arg-type]
        windows["last5m"].add(Tally.from_json(snap["last5m"]))  # type: ignore[arg-type]
        windows["last1h"].add(Tally.from_json(snap["last1h"]))  # type: ignore[arg-type]
        for route, data in snap["routes"].items():  # type: ignore[attr-defined]
            routes.setdefault(route, Tally()).add(Tally.from_json(data))
        uptime = max(uptime, float(snap["uptimeS"]))  # type: ignore[arg-type]
    last5m = windows["last5m"]
    return {
        "uptimeS": round(uptime, 1),
        "requestRatePerS": round(last5m.count / min(300.0, max(uptime, 1.0)), 3),
        "windows": {name: tally.summary(target_availability) for name, tally in windows.items()},
        "routes": {route: tally.summary(target_availability) for route, tally in sorted(routes.items())},
    }
