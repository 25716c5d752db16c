"""What each request owes after its answer — span ends, duration metrics, the access line,
the triage record, the SLO tally — queued, and run when the gateway has a quiet moment.

Why: one event loop serves callers one after another. Callers that arrive together (a
client's fan-out, a retry wave, the benchmark's lockstep connections) are answered in
turn, and when each request's bookkeeping ran right behind its answer, the last answer of
a burst also waited for every earlier request's bookkeeping. Deferring it cut the added
p99 to about a third at unchanged CPU (bench/README.md). The work is the same; only its
place in the loop changes.

``quiet_s`` is 3 ms: longer than a burst of 16 callers takes to be served, their Redis
admissions included — shorter, the queue ran inside bursts, between a caller's admission
and its upstream send, and gained little.

The caller fixes the outcome and the times before it defers (a span's end time, a
duration), so running later changes nothing that is reported. The queue runs:

- whole, once nothing was deferred for ``quiet_s`` (the burst is over);
- otherwise, what has waited ``max_delay_s`` runs at each timer tick (a loop that is never
  quiet: sustained load), so bookkeeping stays near real time and the queue holds about
  ``max_delay_s`` of answers;
- whole, when it holds ``max_queued`` entries (a loop stalled so long that ticks lag);
- whole, on ``drain()``: before an admin endpoint answers (``/_gateway/status``, metrics
  and triage reads see every request answered before them) and at shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("gateway.after_answer")


class AfterAnswer:
    def __init__(
        self,
        *,
        quiet_s: float = 0.003,
        max_delay_s: float = 0.02,
        max_queued: int = 10_000,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet_s = quiet_s
        self._max_delay_s = max_delay_s
        self._max_queued = max_queued
        self._now = now
        self._queue: collections.deque[tuple[float, Callable[..., None], tuple[Any, ...]]] = collections.deque()
        self._last_deferred = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def defer(self, work: Callable[..., None], *args: Any) -> None:
        now = self._now()
        self._last_deferred = now
        self._queue.append((now, work, args))
        if len(self._queue) >= self._max_queued:
            self.drain()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._quiet_s, self._on_timer)

    def drain(self) -> None:
        """Run everything queued, now."""
        self._cancel_timer()
        self._run()

    def __len__(self) -> int:
        return len(self._queue)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._queue:
            return
        now = self._now()
        if now - self._last_deferred >= self._quiet_s:
            self._run()  # the burst is over
        else:
            self._run(deferred_before=now - self._max_delay_s)  # never quiet: what is overdue
        if self._queue:
            self._timer = asyncio.get_running_loop().call_later(self._quiet_s, self._on_timer)

    def _run(self, deferred_before: float = float("inf")) -> None:
        queue = self._queue
        for _ in range(len(queue)):  # what the work itself might defer waits for the next run
            if queue[0][0] > deferred_before:
                break
            _, work, args = queue.popleft()
            try:
                work(*args)
            except Exception:  # one request's bookkeeping failing must not lose the others'
                log.exception("bookkeeping_failed")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
