"""Triage records: written to the store in batches off the critical path, read back by
requestId (``GET /_gateway/requests/{requestId}``), and rendered for ``pmc-gateway triage``."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import structlog

from gateway.core import json_bytes
from gateway.core.clock import Pace, iso_utc_ms, real_time_pace
from gateway.core.tasks import stop_task
from gateway.errors import StoreError
from gateway.request.record import RequestRecord
from gateway.stages.jobs.domain import job_story
from gateway.store.protocols import TriageStore

log = structlog.get_logger("gateway.triage")

RECORD_TTL_S = 7 * 86400


class RecordWriter:
    """Queues finished records and flushes them in one store round trip per batch."""

    def __init__(
        self,
        store: TriageStore,
        *,
        ttl_s: float = RECORD_TTL_S,
        flush_interval_s: float = 0.25,
        max_batch: int = 500,
        max_pending: int = 20_000,
        before_read: Callable[[], None] = lambda: None,
        pace: Pace = real_time_pace,
    ) -> None:
        self._pace = pace
        self._store = store
        self._before_read = before_read  # submits what answered requests still owe (after_answer.py)
        self._ttl_s = ttl_s
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: OrderedDict[str, RequestRecord] = OrderedDict()
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def submit(self, record: RequestRecord) -> None:
        self._pending[record.request_id] = record
        if len(self._pending) > self._max_pending:  # store too slow: shed the oldest, count it
            self._pending.popitem(last=False)
            self.dropped += 1

    def pending(self, request_id: str) -> RequestRecord | None:
        return self._pending.get(request_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="triage-writer")

    async def close(self) -> None:
        await stop_task(self._task)
        while self._pending:
            if not await self.flush():
                break

    async def _run(self) -> None:
        while True:
            await self._pace(self._interval)
            try:
                while self._pending and await self.flush():
                    pass
            except Exception:  # a bug here must cost records, never the writer itself
                log.exception("triage_writer_failed", pending=len(self._pending))

    async def flush(self) -> bool:
        """Write up to one batch; True when it was written."""
        batch = []
        for request_id in list(self._pending)[: self._max_batch]:
            batch.append((request_id, json_bytes.dumps(self._pending[request_id].to_json())))
        if not batch:
            return False
        try:
            await self._store.put_records(batch, self._ttl_s)
        except StoreError as exc:
            log.warning("triage_write_failed", error=str(exc), pending=len(self._pending))
            return False
        for request_id, _ in batch:
            self._pending.pop(request_id, None)
        return True

    async def get(self, request_id: str) -> dict[str, object] | None:
        self._before_read()
        record = self.pending(request_id)
        found = record.to_json() if record is not None else None
        if found is None:
            raw = await self._store.get_record(request_id)
            found = None if raw is None else json.loads(raw)  # orjson refuses escaped lone surrogates
        if found is None:
            return None
        try:
            return await job_story(self._store, found)
        except StoreError:
            return found  # the record without what was learnt later: still the record


def render(record: dict[str, object]) -> str:
    """A record as an on-call engineer reads it: who, what, outcome, then where the time went."""
    lines = [
        f"request   {record['requestId']}",
        f"trace     {record.get('traceId') or '-'}",
        f"started   {record.get('startedAt')}",
        f"caller    {record.get('client') or '-'} → environment {record.get('environment') or '-'}",
        f"call      {record.get('method')} {record.get('path')}   (route {record.get('route')})",
        f"outcome   {record.get('status')}"
        + (f" {record['errorCode']}" if record.get("errorCode") else "")
        + (" (replayed from idempotency store)" if record.get("replayed") else "")
        + f" in {record.get('latencyMs')} ms",
        f"upstream  requestId {record.get('upstreamRequestId') or '-'}"
        + (f", jobId {record['jobId']}" if record.get("jobId") else ""),
        f"breaker   {record.get('breakerState') or '-'}",
    ]
    if record.get("idempotencyKey"):
        lines.append(f"idem key  {record['idempotencyKey']}")
    attempts = cast(list[dict[str, Any]], record.get("attempts") or [])
    # Each stretch of time once: a hedge ran beside its attempt, a job's polls inside the job's time.
    own = [a for a in attempts if not a.get("hedge") and not a.get("jobPoll")]
    upstream_ms = sum(float(a.get("latencyMs") or 0) for a in own)
    backoff_ms = sum(float(a.get("delayMs") or 0) for a in own)
    budget_ms = float(record.get("budgetWaitMs") or 0)  # type: ignore[arg-type]
    job_ms = float(record.get("jobWaitMs") or 0)  # type: ignore[arg-type]
    total = float(record.get("latencyMs") or 0)  # type: ignore[arg-type]
    lines.append("")
    polls = sum(1 for a in attempts if a.get("jobPoll"))
    lines.append(f"attempts  {len(attempts) - polls}" + (f" (and {polls} poll(s) while following its job)" if polls else ""))
    for a in attempts:
        outcome = a.get("status") or a.get("error") or "?"
        label = "poll" if a.get("jobPoll") else f"#{a['attempt']}" + (" hedge" if a.get("hedge") else "")
        lines.append(
            f"  {label:<9} waited {float(a.get('delayMs') or 0):8.1f} ms  →  {outcome!s:<22}"
            f" in {float(a.get('latencyMs') or 0):8.1f} ms"
        )
    lines.append("")
    lines.append("where the time went")
    other = max(0.0, total - upstream_ms - backoff_ms - budget_ms - job_ms)
    for label, value in (
        ("rate-budget wait", budget_ms),
        ("the job's time", job_ms),
        ("retry backoff", backoff_ms),
        ("upstream", upstream_ms),
        ("gateway", other),
    ):
        lines.append(f"  {label:<17}{value:9.1f} ms")
    lines += _timeline(record)
    return "\n".join(lines)


def _when(moment: object) -> str:
    return moment if isinstance(moment, str) else "-"  # RFC 3339 already


def _timeline(record: dict[str, object]) -> list[str]:
    """The job this request created and the webhook events of its booking, in time order."""
    job = cast(dict[str, Any] | None, record.get("job"))
    events = cast(list[dict[str, Any]], record.get("events") or [])
    if not job and not events:
        return []
    blank = " " * 24
    moments: list[tuple[str, list[str]]] = []  # RFC 3339 UTC strings sort as times; "~" after all
    if job:
        finished = job.get("finishedAt")
        line = f"job {job['jobId']} {job.get('state')} after {job.get('polls')} upstream poll(s)"
        moments.append((str(finished) if finished else "~", [f"  {_when(finished) if finished else blank}  {line}"]))
    for event in events:
        lines = [f"  {_when(event.get('receivedAt'))}  webhook {event.get('type')} {event['eventId']}"]
        lines += [f"  {blank}    → {d['subscriber']}: {d['status']} (attempt {d['attempts']})" for d in event.get("deliveries", [])]
        moments.append((str(event.get("receivedAt") or ""), lines))
    answered = _answered_at(record)
    answer = [f"  {answered}  request answered {record.get('status')}"]
    if record.get("bookingId"):
        answer.append(f"  {blank}  booking {record['bookingId']}")
    moments.append((answered, answer))
    out = ["", "what happened next", f"  {record.get('startedAt')}  request received"]
    for _, lines in sorted(moments, key=lambda m: m[0]):  # RFC 3339 UTC with milliseconds: sorts as time
        out += lines
    return out


def _answered_at(record: dict[str, object]) -> str:
    """When the answer left: the start plus the request's latency, in the record's own format."""
    started = record.get("startedAt")
    if not isinstance(started, str):
        return "~"
    try:
        at = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return started
    return iso_utc_ms(at + float(record.get("latencyMs") or 0) / 1000)  # type: ignore[arg-type]
