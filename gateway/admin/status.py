"""``/_gateway/status``: live SLO figures, breakers, budgets, store and webhook health.

Each process publishes a snapshot of its own figures to the store every
``PUBLISH_INTERVAL_S``; the status document merges every live member's snapshot, so
with several workers or replicas on one Redis any of them answers for the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.core.clock import Clock, Pace, real_time_pace
from gateway.core.tasks import stop_task
from gateway.errors import StoreError
from gateway.observability.slo import SloTracker, merge
from gateway.request.record import RequestRecord
from gateway.settings import TelemetrySettings
from gateway.store.protocols import MembershipStore

PUBLISH_INTERVAL_S = 2.0
SNAPSHOT_TTL_S = 10.0
RECENT_FAILURES = 50
READ_KINDS = ("hit", "stale", "collapsed", "miss", "bypass", "hedges")
USAGE_WINDOW_S = 60


class UsageWindow:
    """Per (environment, client) over the last minute, in one-second slots: upstream attempts,
    requests that waited for a budget slot, requests refused by the budget.

    Slots, not one entry per attempt: at thousands of requests a second a per-attempt list
    grows to six figures of entries and costs a full pass at every publish."""

    KINDS = ("attempts", "waited", "refused")

    def __init__(self, clock: Clock, window_s: int = USAGE_WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._slots: deque[tuple[int, dict[tuple[str, str, str], int]]] = deque()  # (second, counts), oldest first

    def add(self, environment: str, client: str, attempts: int, kind: str = "attempts") -> None:
        second = int(self._clock.monotonic())
        if not self._slots or self._slots[-1][0] != second:
            self._slots.append((second, {}))
            self._expire(second)
        counts = self._slots[-1][1]
        key = (environment, client, kind)
        counts[key] = counts.get(key, 0) + attempts

    def _expire(self, second: int) -> None:
        while self._slots and self._slots[0][0] <= second - self._window_s:
            self._slots.popleft()

    def _totals(self, kind: str) -> dict[str, int]:
        self._expire(int(self._clock.monotonic()))
        total: dict[str, int] = {}
        for _, counts in self._slots:
            for (environment, client, counted), n in counts.items():
                if counted == kind:
                    key = f"{environment}|{client}"
                    total[key] = total.get(key, 0) + n
        return total

    def total(self, kind: str) -> int:
        """Every count of ``kind`` over the window."""
        return sum(self._totals(kind).values())

    def counts(self) -> dict[str, int]:
        """``{"environment|client": attempts}`` over the window."""
        return self._totals("attempts")

    def budget(self) -> dict[str, dict[str, int]]:
        """``{kind: {"environment|client": n}}`` over the window, for every kind."""
        return {kind: self._totals(kind) for kind in self.KINDS}


def is_failure(record: RequestRecord) -> bool:
    return (record.status or 0) >= 500 or record.status == 429


class StatusBoard:
    def __init__(
        self,
        *,
        store: MembershipStore,
        clock: Clock,
        member_id: str,
        targets: TelemetrySettings,
        sections: dict[str, Callable[[], Any]],
        extra_snapshot: Callable[[], dict[str, object]] = dict,
        pace: Pace = real_time_pace,
    ) -> None:
        self._store = store
        self._clock = clock
        self._pace = pace
        self._member = member_id
        self._targets = targets
        self._availability_target = targets.availability_target
        self._sections = sections
        self._extra_snapshot = extra_snapshot
        self.slo = SloTracker(clock, tail_ms=targets.latency_tail_ms, added_target_ms=targets.added_latency_target_ms)
        self._failures: deque[dict[str, object]] = deque(maxlen=RECENT_FAILURES)
        self._usage = UsageWindow(clock)
        self._reads = UsageWindow(clock)  # shared-read results and hedges, by kind, last minute
        self._task: asyncio.Task[None] | None = None

    def observe(self, record: RequestRecord) -> None:
        if record.client is None:  # admin, health and webhook calls are not the SLO's traffic
            return
        self.slo.observe(record.route, record.status or 0, record.latency_ms, record.gateway_added_s(record.latency_ms / 1000) * 1000)
        environment = record.environment or ""
        if record.attempts:
            self._usage.add(environment, record.client, len(record.attempts))
        if record.budget_wait_ms > 0:
            self._usage.add(environment, record.client, 1, "waited")
        if record.error_code == "RATE_BUDGET_EXHAUSTED":
            self._usage.add(environment, record.client, 1, "refused")
        if record.cache is not None:
            self._reads.add("", "", 1, record.cache.status)
        hedges = sum(1 for attempt in record.attempts if attempt.hedge)
        if hedges:
            self._reads.add("", "", hedges, "hedges")
        if is_failure(record):
            self._failures.appendleft(
                {
                    "requestId": record.request_id,
                    "traceId": record.trace_id,
                    "status": record.status,
                    "errorCode": record.error_code,
                    "route": record.route,
                    "method": record.method,
                    "client": record.client,
                    "environment": record.environment,
                    "at": record.started_at,
                    "latencyMs": round(record.latency_ms, 1),
                }
            )

    def snapshot(self) -> dict[str, object]:
        return {
            "member": self._member,
            "slo": self.slo.snapshot(),
            "failures": list(self._failures),
            "usage": self._usage.counts(),
            "budgetUse": self._usage.budget(),
            "reads": {kind: self._reads.total(kind) for kind in READ_KINDS},
            **self._extra_snapshot(),
        }

    async def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever(), name="status-publish")

    async def close(self) -> None:
        await stop_task(self._task)

    async def publish(self) -> None:
        with contextlib.suppress(StoreError):
            await self._store.put_snapshot(self._member, json.dumps(self.snapshot()).encode(), SNAPSHOT_TTL_S)

    async def _publish_forever(self) -> None:
        while True:
            await self._pace(PUBLISH_INTERVAL_S)
            await self.publish()

    async def other_members(self) -> list[dict[str, Any]]:
        """The latest snapshots of every other live process sharing the store."""
        try:
            blobs = await self._store.snapshots()
        except StoreError:
            return []
        return [s for s in (json.loads(b) for b in blobs) if s.get("member") != self._member]

    async def document(self) -> dict[str, object]:
        snapshots = [self.snapshot(), *await self.other_members()]
        failures = sorted(
            (f for s in snapshots for f in s["failures"]), key=lambda f: f["at"], reverse=True
        )[:RECENT_FAILURES]
        usage: dict[str, int] = {}
        budget_use: dict[str, dict[str, int]] = {kind: {} for kind in UsageWindow.KINDS}
        for s in snapshots:
            for key, count in s["usage"].items():
                usage[key] = usage.get(key, 0) + count
            for kind, counts in s.get("budgetUse", {}).items():
                for key, count in counts.items():
                    budget_use[kind][key] = budget_use[kind].get(key, 0) + count
        document: dict[str, object] = {
            "members": [s["member"] for s in snapshots],
            "targets": {
                "latencyMs": self._targets.latency_target_ms,
                "availability": self._availability_target,
                "latencyTailMs": self._targets.latency_tail_ms,
                "latencyTailObjective": self._targets.latency_tail_objective,
                "addedLatencyMs": self._targets.added_latency_target_ms,
                "addedLatencyObjective": self._targets.added_latency_objective,
            },
            "slo": merge([s["slo"] for s in snapshots], self._availability_target),
            "recentFailures": failures,
            "budgetUseLastMinute": usage,
            "budgetByClientLastMinute": budget_use,
            "readsLastMinute": {kind: sum(s.get("reads", {}).get(kind, 0) for s in snapshots) for kind in READ_KINDS},
        }
        for name, section in self._sections.items():
            document[name] = section()
        return document
