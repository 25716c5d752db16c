"""The PinmyCal API simulator (SPEC §1, §9): the demo's, the tests' and the benchmark's upstream.

Implements the quickstart's endpoints and payloads with long-tailed latency around a
mean (log-normal), the per-key rate limit with 429 + Retry-After, live/test and expired
keys, 422 field errors, 202 jobs, idempotent bookings, signed webhooks for booking
changes, and fault injection by flags or at runtime through ``/_sim/faults``.
``/_sim/requests`` lists what the simulator received, so tests can check what a
gateway really sent upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import random
import re
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from gateway.webhooks.signature import sign

KEY_PATTERN = re.compile(r"^pmc_(live|test)_[A-Za-z0-9_]{4,}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TIMEZONE = re.compile(r"^(UTC|[A-Za-z]+(/[A-Za-z0-9_+\-]+)+)$")
SIM_REQUEST_ID = web.RequestKey("sim_request_id", str)
SIM_KEY = web.RequestKey("sim_key", str)
SIGMA = 0.6  # log-normal shape: a long tail, p99 ≈ 3× the mean
# A day's bookable slots (UTC), every event type alike; the SPEC's example pair comes first.
DAY_SLOTS = ("09:30", "11:00", "09:00", "10:00", "10:30", "11:30", "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00", "16:30")
RECENT_QUESTIONS = 64  # outside bookings pick among the days availability was recently asked for


@dataclass
class Faults:
    latency_ms: float = 180.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    slow_rate: float = 0.0
    extra_latency_ms: float = 0.0
    storm_until: float = 0.0  # wall time until which every request gets 429
    storm_retry_after_s: int = 5
    hang_s: float = 30.0

    def to_json(self) -> dict[str, object]:
        return {
            "latencyMs": self.latency_ms,
            "errorRate": self.error_rate,
            "timeoutRate": self.timeout_rate,
            "slowRate": self.slow_rate,
            "extraLatencyMs": self.extra_latency_ms,
            "stormRemainingS": max(0.0, round(self.storm_until - time.time(), 3)),
            "stormRetryAfterS": self.storm_retry_after_s,
            "hangS": self.hang_s,
        }


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 8099
    rate_limit: int = 120
    rate_limit_headers: bool = False  # RateLimit-Limit/-Remaining/-Reset on every /v1 answer
    outside_per_minute: float = 0.0  # another caller, outside the gateway, spending every key seen
    expired_keys: tuple[str, ...] = ()
    webhook_url: str = ""
    webhook_secret: bytes = b""
    webhook_base_delay_s: float = 1.0
    webhook_horizon_s: float = 86400.0
    job_eta_s: float = 15.0
    job_fail_rate: float = 0.0  # share of jobs that end "failed"
    job_slow_rate: float = 0.0  # share of jobs that take three times their eta
    outside_bookings_per_minute: float = 0.0  # bookings made on PinmyCal directly, announced by webhook
    webhook_environment: str = ""  # set: events carry "environment" (a gateway drops only that one's reads)
    seed: int | None = None
    record: bool = True  # keep /_sim/requests (tests); the benchmark turns it off
    faults: Faults = field(default_factory=Faults)


def _short_id(rng: random.Random, prefix: str, n: int = 5) -> str:
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = config.faults
        self.rng = random.Random(config.seed)
        self.expired = set(config.expired_keys)
        self.windows: dict[str, list[float]] = {}
        self.outside_next: dict[str, float] = {}
        self.outside_sent = 0
        self.rate_limited = 0  # answers 429 for the per-key limit
        self.bookings: dict[str, dict[str, object]] = {}
        self.taken: dict[tuple[str, str], str] = {}  # (eventTypeId, start) → bookingId holding it
        self.asked: deque[tuple[str, str]] = deque(maxlen=RECENT_QUESTIONS)  # (eventTypeId, date) asked lately
        self.outside_bookings = 0
        self.idempotent: dict[tuple[str, str], tuple[int, dict[str, object]]] = {}
        self.jobs: dict[str, dict[str, object]] = {}
        self.next_booking = 1027
        self.next_job = 4421
        self.received: deque[dict[str, Any]] = deque(maxlen=20_000)
        self.webhooks: asyncio.Queue[tuple[int, bytes, float]] = asyncio.Queue()
        self.webhook_log: list[dict[str, object]] = []
        self.webhook_accepted_at: dict[str, float] = {}  # booking start → first 2xx for its event (monotonic)
        self._sender: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- plumbing ------------------------------------------------------------------------
    def _reply(self, status: int, payload: dict[str, object], headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status,
            body=json.dumps(payload, separators=(",", ":")).encode(),
            content_type="application/json",
            headers=headers,
        )

    def _error(self, status: int, code: str, message: str, request_id: str, **extra: object) -> web.Response:
        headers = {}
        if "retry_after" in extra:
            headers["Retry-After"] = str(extra.pop("retry_after"))
        payload = {"status": "error", "code": code, "message": message, "requestId": request_id, **extra}
        return self._reply(status, payload, headers)

    async def _latency(self, slow: bool) -> None:
        mean = self.faults.latency_ms
        delay = 0.0
        if mean > 0:
            mu = math.log(mean) - SIGMA**2 / 2
            delay = min(self.rng.lognormvariate(mu, SIGMA), mean * 20)
        if slow:
            delay = max(delay, mean) * 10
        delay += self.faults.extra_latency_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)

    def _window(self, key: str, now: float) -> list[float]:
        """The key's sends in the last 60 s, the outside caller's included, oldest first."""
        window = self.windows.setdefault(key, [])
        if self.config.outside_per_minute > 0:
            interval = 60 / self.config.outside_per_minute
            due = self.outside_next.setdefault(key, now)
            while due <= now:
                if len([t for t in window if t > due - 60]) < self.config.rate_limit:
                    bisect.insort(window, due)
                    self.outside_sent += 1
                due += interval
            self.outside_next[key] = due
        cut = bisect.bisect_right(window, now - 60)
        del window[:cut]
        return window

    def _rate_check(self, key: str) -> int | None:
        """Seconds until the key may call again, or None when it may call now."""
        if self.config.rate_limit <= 0:
            return None
        now = time.monotonic()
        window = self._window(key, now)
        if len(window) >= self.config.rate_limit:
            return max(1, math.ceil(window[0] + 60 - now))
        window.append(now)
        return None

    def _rate_limit_headers(self, key: str) -> dict[str, str]:
        now = time.monotonic()
        window = self._window(key, now)
        reset = math.ceil(window[0] + 60 - now) if window else 0
        return {
            "RateLimit-Limit": str(self.config.rate_limit),
            "RateLimit-Remaining": str(max(0, self.config.rate_limit - len(window))),
            "RateLimit-Reset": str(max(0, reset)),
        }

    # -- the middleware every /v1 request passes ------------------------------------------
    @web.middleware
    async def gate(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        request_id = _short_id(self.rng, "req_")
        request[SIM_REQUEST_ID] = request_id
        authorization = request.headers.get("Authorization", "")
        if self.config.record:
            self.received.append(
                {
                    "method": request.method,
                    "path": request.path_qs,
                    "authorization": authorization,
                    "requestId": request.headers.get("X-Request-Id"),
                    "idempotencyKey": request.headers.get("Idempotency-Key"),
                    "traceparent": request.headers.get("traceparent"),
                    "headers": sorted(k.lower() for k in request.headers),
                    "t": time.monotonic(),
                    "wall": time.time(),
                }
            )
        faults = self.faults
        if time.time() < faults.storm_until:
            return self._error(429, "RATE_LIMITED", "Too many requests", request_id, retry_after=faults.storm_retry_after_s)
        scheme, _, key = authorization.partition(" ")
        if scheme != "Bearer" or not KEY_PATTERN.match(key):
            return self._error(401, "INVALID_TOKEN", "Missing or malformed bearer token", request_id)
        if key in self.expired:
            return self._error(401, "INVALID_TOKEN", "Bearer token expired", request_id)
        wait = self._rate_check(key)
        if wait is not None:
            self.rate_limited += 1
            refused = self._error(429, "RATE_LIMITED", f"Rate limit of {self.config.rate_limit} requests/minute exceeded", request_id, retry_after=wait)
            if self.config.rate_limit_headers:
                refused.headers.update(self._rate_limit_headers(key))
            return refused
        roll = self.rng.random()
        if roll < faults.timeout_rate:
            await asyncio.sleep(faults.hang_s)
            return self._error(504, "UPSTREAM_TIMEOUT", "Timed out", request_id)
        roll -= faults.timeout_rate
        if roll < faults.error_rate:
            await self._latency(slow=False)
            status = self.rng.choice((500, 502, 503, 503))
            return self._error(status, "INTERNAL", "Transient upstream error", request_id)
        roll -= faults.error_rate
        await self._latency(slow=roll < faults.slow_rate)
        if "readonly" in key and request.method not in ("GET", "HEAD", "OPTIONS"):
            return self._error(403, "INSUFFICIENT_SCOPE", "This key may only read", request_id)
        request[SIM_KEY] = key
        response = await handler(request)
        if self.config.rate_limit_headers and self.config.rate_limit > 0:
            response.headers.update(self._rate_limit_headers(key))
        return response

    # -- the API ---------------------------------------------------------------------------
    async def users_me(self, request: web.Request) -> web.Response:
        env = "live" if request[SIM_KEY].startswith("pmc_live_") else "test"
        return self._reply(200, {"status": "ok", "user": {"id": "usr_1", "name": "Demo Owner", "email": "owner@company.com", "environment": env}, "requestId": request[SIM_REQUEST_ID]})

    async def availability(self, request: web.Request) -> web.Response:
        query = request.query
        errors = []
        if not query.get("eventTypeId"):
            errors.append({"field": "eventTypeId", "message": "is required"})
        day = query.get("date", "")
        try:
            datetime.strptime(day, "%Y-%m-%d")
        except ValueError:
            errors.append({"field": "date", "message": "must be a date like 2026-03-10"})
        if not TIMEZONE.match(query.get("timezone", "")):
            errors.append({"field": "timezone", "message": "must be an IANA time zone like Asia/Kolkata"})
        if errors:
            return self._error(422, "VALIDATION_FAILED", "Invalid query parameters", request[SIM_REQUEST_ID], errors=errors)
        event_type = query["eventTypeId"]
        if (event_type, day) not in self.asked:
            self.asked.append((event_type, day))
        return self._reply(200, {"status": "ok", "slots": self.free_slots(event_type, day)})

    def free_slots(self, event_type: str, day: str) -> list[str]:
        """The day's slots no booking holds (a booking takes its slot; a cancellation frees it)."""
        return [start for slot in DAY_SLOTS if (event_type, start := f"{day}T{slot}:00Z") not in self.taken]

    def _validate_booking(self, payload: object) -> list[dict[str, str]]:
        if not isinstance(payload, dict):
            return [{"field": "(body)", "message": "must be a JSON object"}]
        errors = []
        if not isinstance(payload.get("eventTypeId"), str) or not payload["eventTypeId"]:
            errors.append({"field": "eventTypeId", "message": "is required"})
        invitee = payload.get("invitee")
        if not isinstance(invitee, dict):
            errors.append({"field": "invitee", "message": "is required"})
        else:
            if not isinstance(invitee.get("name"), str) or not invitee["name"].strip():
                errors.append({"field": "invitee.name", "message": "is required"})
            if not isinstance(invitee.get("email"), str) or not EMAIL.match(invitee["email"]):
                errors.append({"field": "invitee.email", "message": "must be an email address"})
        start = payload.get("start")
        try:
            if not isinstance(start, str) or not start.endswith("Z"):
                raise ValueError
            datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            errors.append({"field": "start", "message": "must be an RFC 3339 UTC time like 2026-03-10T09:30:00Z"})
        if not isinstance(payload.get("timezone"), str) or not TIMEZONE.match(payload["timezone"]):
            errors.append({"field": "timezone", "message": "must be an IANA time zone like Asia/Kolkata"})
        return errors

    async def create_booking(self, request: web.Request) -> web.Response:
        request_id = request[SIM_REQUEST_ID]
        try:
            payload = json.loads(await request.read() or b"null")
        except ValueError:
            return self._error(422, "VALIDATION_FAILED", "Body is not valid JSON", request_id, errors=[{"field": "(body)", "message": "must be JSON"}])
        errors = self._validate_booking(payload)
        if errors:
            return self._error(422, "VALIDATION_FAILED", "Invalid booking", request_id, errors=errors)
        idem = request.headers.get("Idempotency-Key")
        if idem and (request[SIM_KEY], idem) in self.idempotent:
            status, stored = self.idempotent[(request[SIM_KEY], idem)]
            return self._reply(status, stored)
        if "respond-async" in request.headers.get("Prefer", "").replace(" ", "").split(",") or payload.get("async") is True:
            job_id = f"job_{self.next_job}"
            self.next_job += 1
            slow = self.rng.random() < self.config.job_slow_rate
            self.jobs[job_id] = {"payload": payload, "fails": self.rng.random() < self.config.job_fail_rate}
            asyncio.get_running_loop().call_later(self.config.job_eta_s * (3 if slow else 1), self._finish_job, job_id)
            body: dict[str, object] = {"status": "accepted", "jobId": job_id, "eta": f"{self.config.job_eta_s:g}s", "requestId": request_id}
            status = 202
        elif (payload["eventTypeId"], payload["start"]) in self.taken:
            return self._error(409, "SLOT_UNAVAILABLE", "The requested slot is no longer available", request_id)
        else:
            booking = self._book(payload)
            body = {"status": "ok", "bookingId": booking["bookingId"], "meetingUrl": booking["meetingUrl"], "requestId": request_id}
            status = 200
        if idem:
            self.idempotent[(request[SIM_KEY], idem)] = (status, body)
        return self._reply(status, body)

    def _finish_job(self, job_id: str) -> None:
        """A job ends on its own time, whether or not anyone polls it; its webhook names it."""
        job = self.jobs[job_id]
        payload = job["payload"]
        assert isinstance(payload, dict)
        if job["fails"]:  # an injected failure (--job-fail-rate)
            job["error"] = {"code": "SLOT_TAKEN", "message": "The requested slot is no longer available"}
        elif (payload["eventTypeId"], payload["start"]) in self.taken:
            job["error"] = {"code": "SLOT_UNAVAILABLE", "message": "The requested slot is no longer available"}
        else:
            job["booking"] = self._book(job["payload"], job_id=job_id)  # type: ignore[arg-type]

    def _book(self, payload: dict[str, object], job_id: str | None = None) -> dict[str, object]:
        booking_id = f"bk_{self.next_booking}"
        self.next_booking += 1
        booking = {
            "bookingId": booking_id,
            "meetingUrl": "https://meet.google.com/abc-defg-hij",
            "eventTypeId": payload["eventTypeId"],
            "invitee": payload["invitee"],
            "start": payload["start"],
            "timezone": payload["timezone"],
            "state": "confirmed",
        }
        self.bookings[booking_id] = booking
        self.taken[(str(payload["eventTypeId"]), str(payload["start"]))] = booking_id
        self._emit("booking.created", booking, job_id)
        return booking

    def book_outside(self) -> dict[str, object] | None:
        """A booking made on PinmyCal directly (another system, its own pages): a free slot of a
        day callers lately asked about, announced only by its webhook."""
        choices = [(event_type, start) for event_type, day in self.asked for start in self.free_slots(event_type, day)]
        if not choices:
            return None
        event_type, start = self.rng.choice(choices)
        self.outside_bookings += 1
        invitee = {"name": "Walk-in", "email": "walk-in@elsewhere.example"}
        return self._book({"eventTypeId": event_type, "invitee": invitee, "start": start, "timezone": "UTC"})

    async def get_job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return self._error(404, "NOT_FOUND", "No such job", request[SIM_REQUEST_ID])
        job_id = request.match_info["job_id"]
        if "error" in job:
            return self._reply(200, {"status": "ok", "jobId": job_id, "state": "failed", "error": job["error"]})
        if "booking" not in job:
            return self._reply(200, {"status": "ok", "jobId": job_id, "state": "pending"})
        return self._reply(200, {"status": "ok", "jobId": job_id, "state": "completed", "result": job["booking"]})

    async def get_booking(self, request: web.Request) -> web.Response:
        booking = self.bookings.get(request.match_info["booking_id"])
        if booking is None:
            return self._error(404, "NOT_FOUND", "No such booking", request[SIM_REQUEST_ID])
        return self._reply(200, {"status": "ok", "booking": booking, "requestId": request[SIM_REQUEST_ID]})

    async def reschedule(self, request: web.Request) -> web.Response:
        booking = self.bookings.get(request.match_info["booking_id"])
        if booking is None:
            return self._error(404, "NOT_FOUND", "No such booking", request[SIM_REQUEST_ID])
        try:
            payload = json.loads(await request.read() or b"{}")
            start = payload["start"]
            datetime.fromisoformat(start.replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._error(422, "VALIDATION_FAILED", "Invalid reschedule", request[SIM_REQUEST_ID], errors=[{"field": "start", "message": "must be an RFC 3339 UTC time"}])
        slot = (str(booking["eventTypeId"]), start)
        if self.taken.get(slot, booking["bookingId"]) != booking["bookingId"]:
            return self._error(409, "SLOT_UNAVAILABLE", "The requested slot is no longer available", request[SIM_REQUEST_ID])
        self.taken.pop((str(booking["eventTypeId"]), str(booking["start"])), None)
        self.taken[slot] = str(booking["bookingId"])
        booking["start"] = start
        self._emit("booking.rescheduled", booking)
        return self._reply(200, {"status": "ok", "bookingId": booking["bookingId"], "start": start, "requestId": request[SIM_REQUEST_ID]})

    async def cancel(self, request: web.Request) -> web.Response:
        booking = self.bookings.get(request.match_info["booking_id"])
        if booking is None:
            return self._error(404, "NOT_FOUND", "No such booking", request[SIM_REQUEST_ID])
        if booking["state"] != "cancelled":
            self.taken.pop((str(booking["eventTypeId"]), str(booking["start"])), None)
        booking["state"] = "cancelled"
        self._emit("booking.cancelled", booking)
        return self._reply(200, {"status": "ok", "bookingId": booking["bookingId"], "state": "cancelled", "requestId": request[SIM_REQUEST_ID]})

    # -- webhooks ----------------------------------------------------------------------------
    def _emit(self, event_type: str, booking: dict[str, object], job_id: str | None = None) -> None:
        if not self.config.webhook_url:
            return
        event = {
            "eventId": "evt_" + "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(12)),
            "type": event_type,
            "createdAt": datetime.now().astimezone().isoformat(timespec="seconds"),
            "data": {k: booking[k] for k in ("bookingId", "start", "timezone", "state")} | ({"jobId": job_id} if job_id else {}),
        }
        if self.config.webhook_environment:
            event["environment"] = self.config.webhook_environment
        self.webhooks.put_nowait((0, json.dumps(event, separators=(",", ":")).encode(), time.monotonic()))

    async def _send_webhooks(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                attempt, body, first = await self.webhooks.get()
                task = asyncio.create_task(self._deliver(session, attempt, body, first))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, session: aiohttp.ClientSession, attempt: int, body: bytes, first: float) -> None:
        if attempt:
            delay = self.config.webhook_base_delay_s * 2 ** (attempt - 1)
            await asyncio.sleep(delay * (0.5 + self.rng.random() / 2))
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-PMC-Timestamp": timestamp,
            "X-PMC-Signature": sign(self.config.webhook_secret, timestamp, body),
        }
        status: int | None = None
        try:
            async with session.post(self.config.webhook_url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        event = json.loads(body)
        self.webhook_log.append({"eventId": event["eventId"], "attempt": attempt, "status": status})
        if status is not None and status < 300:
            self.webhook_accepted_at.setdefault(str(event["data"].get("start")), time.monotonic())
        if (status is None or status >= 300) and time.monotonic() - first < self.config.webhook_horizon_s:
            self.webhooks.put_nowait((attempt + 1, body, first))

    def start_webhooks(self) -> None:
        """Start sending queued webhooks (at start-up, or once ``config.webhook_url`` is set)."""
        if self._sender is None and self.config.webhook_url:
            self._sender = asyncio.create_task(self._send_webhooks())

    async def _book_outside_on_a_timer(self) -> None:
        interval = 60 / self.config.outside_bookings_per_minute
        while True:
            await asyncio.sleep(interval)
            self.book_outside()

    # -- runtime control -----------------------------------------------------------------
    async def get_faults(self, _: web.Request) -> web.Response:
        return self._reply(200, self.faults.to_json())

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            names = {"latencyMs": "latency_ms", "errorRate": "error_rate", "timeoutRate": "timeout_rate", "slowRate": "slow_rate", "extraLatencyMs": "extra_latency_ms", "stormRetryAfterS": "storm_retry_after_s", "hangS": "hang_s"}
            for key, value in changes.items():
                if key == "stormS":
                    self.faults.storm_until = time.time() + float(value)
                elif key in names:
                    if not isinstance(value, int | float) or value < 0:
                        raise ValueError(f"{key} must be a number >= 0")
                    setattr(self.faults, names[key], type(getattr(self.faults, names[key]))(value))
                else:
                    raise ValueError(f"unknown fault {key!r}; known: {sorted([*names, 'stormS'])}")
        except (ValueError, TypeError) as exc:
            return self._reply(400, {"status": "error", "code": "BAD_REQUEST", "message": str(exc)})
        return self._reply(200, self.faults.to_json())

    async def requests_seen(self, request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0"))
        return self._reply(200, {"requests": [r for r in self.received if r["wall"] >= since]})

    async def reset_requests(self, _: web.Request) -> web.Response:
        self.received.clear()
        self.windows.clear()
        self.outside_next.clear()
        return self._reply(200, {"status": "ok"})

    async def set_keys(self, request: web.Request) -> web.Response:
        changes = json.loads(await request.read())
        self.expired.update(changes.get("expire", []))
        self.expired.difference_update(changes.get("unexpire", []))
        return self._reply(200, {"status": "ok", "expired": len(self.expired)})

    async def outside_booking(self, request: web.Request) -> web.Response:
        """``POST /_sim/outside-bookings`` {eventTypeId, start}? : a booking made outside the gateway
        (by default a free slot of a day lately asked about), announced only by its webhook."""
        try:
            asked = json.loads(await request.read() or b"{}")
        except ValueError:
            asked = None
        if not isinstance(asked, dict):
            return self._error(400, "BAD_REQUEST", "body must be a JSON object", "sim")
        if "start" in asked:
            slot = (str(asked.get("eventTypeId", "evt_demo")), str(asked["start"]))
            if slot in self.taken:
                return self._error(409, "SLOT_UNAVAILABLE", "The requested slot is no longer available", "sim")
            self.outside_bookings += 1
            invitee = {"name": "Walk-in", "email": "walk-in@elsewhere.example"}
            booking: dict[str, object] | None = self._book({"eventTypeId": slot[0], "invitee": invitee, "start": slot[1], "timezone": "UTC"})
        else:
            booking = self.book_outside()
        if booking is None:
            return self._error(409, "SLOT_UNAVAILABLE", "no free slot on a day lately asked about", "sim")
        return self._reply(200, {"status": "ok", "booking": booking})

    async def webhook_status(self, _: web.Request) -> web.Response:
        return self._reply(200, {"deliveries": self.webhook_log, "queued": self.webhooks.qsize()})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.gate])
        app.add_routes(
            [
                web.get("/v1/users/me", self.users_me),
                web.get("/v1/availability", self.availability),
                web.post("/v1/bookings", self.create_booking),
                web.get("/v1/bookings/{booking_id}", self.get_booking),
                web.post("/v1/bookings/{booking_id}/reschedule", self.reschedule),
                web.post("/v1/bookings/{booking_id}/cancel", self.cancel),
                web.delete("/v1/bookings/{booking_id}", self.cancel),
                web.get("/v1/jobs/{job_id}", self.get_job),
                web.get("/_sim/faults", self.get_faults),
                web.post("/_sim/faults", self.set_faults),
                web.get("/_sim/requests", self.requests_seen),
                web.delete("/_sim/requests", self.reset_requests),
                web.post("/_sim/keys", self.set_keys),
                web.get("/_sim/webhooks", self.webhook_status),
                web.post("/_sim/outside-bookings", self.outside_booking),
            ]
        )

        async def webhook_sender(_: web.Application) -> AsyncIterator[None]:
            self.start_webhooks()
            tasks = []
            if self.config.outside_bookings_per_minute > 0:
                tasks.append(asyncio.create_task(self._book_outside_on_a_timer()))
            yield
            for task in [*tasks, *([self._sender] if self._sender else [])]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for pending in list(self._tasks):
                pending.cancel()

        app.cleanup_ctx.append(webhook_sender)
        return app


async def start_sim(config: SimConfig) -> tuple[web.AppRunner, int, Simulator]:
    """Start a simulator on ``config.port`` (0 = any free port); returns its runner and port."""
    simulator = Simulator(config)
    runner = web.AppRunner(simulator.app(), access_log=None, handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=2048)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, port, simulator


def config_from_args(args: argparse.Namespace) -> SimConfig:
    secret = os.environ.get(args.webhook_secret_env, "")
    return SimConfig(
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        rate_limit_headers=args.rate_limit_headers,
        outside_per_minute=args.outside_per_minute,
        record=not args.no_record,
        expired_keys=tuple(args.expired_key),
        webhook_url=args.webhook_url,
        webhook_secret=secret.encode(),
        seed=args.seed,
        job_eta_s=args.job_eta_s,
        job_fail_rate=args.job_fail_rate,
        job_slow_rate=args.job_slow_rate,
        outside_bookings_per_minute=args.outside_bookings_per_minute,
        faults=Faults(
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            timeout_rate=args.timeout_rate,
            slow_rate=args.slow_rate,
            extra_latency_ms=args.extra_latency_ms,
            storm_until=time.time() + args.storm_s if args.storm_s else 0.0,
        ),
    )


def run_from_args(args: argparse.Namespace) -> int:
    from gateway.serve import run_async

    config = config_from_args(args)
    if config.webhook_url and not config.webhook_secret:
        print(f"pmc-gateway sim: error: --webhook-url needs the secret in ${args.webhook_secret_env}", flush=True)
        return 2

    async def main() -> None:
        import signal

        runner, port, _ = await start_sim(config)
        print(json.dumps({"event": "sim_listening", "url": f"http://{config.host}:{port}", "faults": asdict(config.faults)}), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()

    run_async(main)
    return 0
