"""Drives the rate-budget algorithm through time without a clock: every request asks at its
arrival and, when told to wait within its ``max_wait_s``, asks again at that moment."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.store.rolling_budget import Admission, BudgetAsk, KeyState


@dataclass
class Outcome:
    client: str
    arrived: float
    admitted: float | None = None
    limit: str = ""  # what refused it

    @property
    def waited(self) -> float:
        return 0.0 if self.admitted is None else self.admitted - self.arrived


def run(
    arrivals: Iterable[tuple[float, str]],
    asks: dict[str, BudgetAsk],
    max_wait_s: float,
    admit: Callable[[KeyState, BudgetAsk, float, bool], Admission],
    state: KeyState | None = None,
) -> list[Outcome]:
    state = state or KeyState()
    outcomes = [Outcome(client, t) for t, client in arrivals]
    queue = [(o.arrived, i, True) for i, o in enumerate(outcomes)]
    heapq.heapify(queue)
    while queue:
        now, i, first = heapq.heappop(queue)
        outcome = outcomes[i]
        admission = admit(state, asks[outcome.client], now, first)
        if admission.granted:
            outcome.admitted = now
        elif now + admission.wait_s - outcome.arrived <= max_wait_s:
            heapq.heappush(queue, (now + admission.wait_s, i, False))
        else:
            outcome.limit = admission.limit
    return outcomes


def most_in_any_window(times: Iterable[float], window_s: float) -> int:
    """The most admissions inside any half-open window [t, t + window_s)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)), default=0)
