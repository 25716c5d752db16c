"""Async jobs, the domain (SPEC §1, §5): what a job answer says (its state, its booking, its eta),
what a caller prefers (``Prefer: wait``), where a job's entry lives, and the story a triage record
tells of the job it created. No stage logic here: ``stage.py`` follows and polls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.core.clock import iso_utc_ms
from gateway.request.stored import decode_answer, encode_answer
from gateway.request.types import UpstreamResponse
from gateway.store.protocols import JobStore

JOB_PATH = re.compile(r"^/v1/jobs/([A-Za-z0-9._:\-]{1,128})$")
PREFER_WAIT = re.compile(r"^\s*wait\s*=\s*(\d{1,9})\s*$", re.IGNORECASE)
FINAL_STATES = frozenset({"completed", "failed"})
ETA = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_ETA_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0}
CACHE_HEADER = "X-Gateway-Cache"


def preferred_wait(headers: tuple[tuple[str, str], ...]) -> int | None:
    """The ``wait`` of the caller's ``Prefer`` header(s), or None (absent or malformed: ignored)."""
    for name, value in headers:
        if name.lower() == "prefer":
            for preference in value.split(","):
                match = PREFER_WAIT.match(preference.split(";", 1)[0])
                if match:
                    return int(match.group(1))
    return None


def state_of(response: UpstreamResponse) -> str | None:
    payload = response.payload()
    state = payload.get("state") if payload else None
    return state if isinstance(state, str) else None


def booking_of(payload: Mapping[str, Any] | None) -> str | None:
    if not payload:
        return None
    for holder in (payload, payload.get("result"), payload.get("data")):
        if isinstance(holder, dict) and isinstance(holder.get("bookingId"), str):
            return str(holder["bookingId"])[:128]
    return None


def eta_s(payload: Mapping[str, Any]) -> float | None:
    match = ETA.match(str(payload.get("eta", "")))
    return float(match.group(1)) * _ETA_UNITS[match.group(2)] if match else None


def encode(response: UpstreamResponse) -> str:
    return encode_answer(response).decode()


def decode(blob: str, cache: str) -> UpstreamResponse:
    return decode_answer(blob, added=((CACHE_HEADER, cache),))[0]


def job_entry_key(environment: str, job_id: str) -> str:
    return f"{environment}:{job_id}"


async def job_story(store: JobStore, record: dict[str, Any]) -> dict[str, Any]:
    """The triage record with what the gateway has learnt since: the job it created (however
    learnt: following, any caller's poll, a webhook) and the webhook events of its booking."""
    job_id, environment = record.get("jobId"), record.get("environment")
    booking = record.get("bookingId")
    if isinstance(job_id, str) and isinstance(environment, str):
        entry = await store.job_get(job_entry_key(environment, job_id))
        if entry:
            finished = entry.get("finishedAt")
            record["job"] = {
                "jobId": job_id,
                "state": entry.get("state"),
                "polls": int(entry.get("polls", "0")),
                "finishedAt": iso_utc_ms(float(finished)) if finished else None,  # RFC 3339, as startedAt
            }
            booking = booking or entry.get("bookingId")
    if isinstance(booking, str):
        record["bookingId"] = booking
        events: dict[str, dict[str, Any]] = {}
        for raw in await store.timeline(f"booking:{booking}"):
            item = json.loads(raw)
            event = events.setdefault(item["eventId"], {"eventId": item["eventId"], "type": None, "receivedAt": None, "deliveries": []})
            if item["kind"] == "event":
                event["type"], event["receivedAt"] = item["type"], iso_utc_ms(float(item["receivedAt"]))
            else:
                deliveries = [d for d in event["deliveries"] if d["subscriber"] != item["subscriber"]]
                event["deliveries"] = [*deliveries, {"subscriber": item["subscriber"], "status": item["status"], "attempts": item["attempts"]}]
        record["events"] = list(events.values())
    return record
