"""Ties webhook events back to the requests that caused them (SPEC §5 async jobs, §6 ``events``).

An accepted event whose ``data`` names a ``jobId`` tells that job's entry how it ended (and its
booking); one naming a ``bookingId`` joins that booking's timeline, and so does every delivery
attempt to each subscriber. Best effort: the event itself is already stored durably, so a
store fault here costs only the link, never the event.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from gateway.errors import StoreError
from gateway.stages.jobs.domain import booking_of, job_entry_key
from gateway.store.protocols import JobStore
from gateway.webhooks.event import WebhookEvent

TIMELINE_TTL_S = 7 * 86400  # as long as the triage records they complete


def _data(body: bytes) -> dict[str, object]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def booking_key(booking_id: str) -> str:
    return f"booking:{booking_id}"


async def link_event(store: JobStore, event: WebhookEvent, environments: Sequence[str], now: float) -> None:
    payload = _data(event.body)
    booking = booking_of(payload)
    data = payload.get("data")
    job_id = data.get("jobId") if isinstance(data, dict) else None
    with contextlib.suppress(StoreError):
        if isinstance(job_id, str):
            for environment in environments:
                key = job_entry_key(environment, job_id[:128])
                if await store.job_get(key) is None:
                    continue
                fields = {"bookingId": booking} if booking else {}
                if event.type == "booking.created":
                    fields |= {"state": "completed", "finishedAt": repr(now)}
                await store.job_update(key, fields, 0, TIMELINE_TTL_S)
        if booking:
            entry = {"kind": "event", "eventId": event.event_id, "type": event.type, "receivedAt": now}
            await store.timeline_add(booking_key(booking), json.dumps(entry).encode(), TIMELINE_TTL_S)


async def note_deliveries(store: JobStore, event: WebhookEvent, outcomes: dict[str, str | None]) -> None:
    """One timeline entry per subscriber tried: delivered, or why not, and the attempts so far."""
    booking = booking_of(_data(event.body))
    if not booking:
        return
    with contextlib.suppress(StoreError):
        for subscriber, error in outcomes.items():
            entry = {"kind": "delivery", "eventId": event.event_id, "subscriber": subscriber,
                     "status": "delivered" if error is None else f"failed: {error}", "attempts": event.attempts + 1}
            await store.timeline_add(booking_key(booking), json.dumps(entry).encode(), TIMELINE_TTL_S)
