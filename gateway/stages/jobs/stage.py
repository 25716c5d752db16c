"""Async jobs (SPEC §5): follow a 202 to its end for a caller that asks, and share polls.

- A request answered ``202 {"jobId":…,"eta":…}`` is noted under its jobId (who created it).
  With ``Prefer: wait=N`` (RFC 7240; a malformed preference is ignored), the job is followed:
  the first poll at the answer's ``eta`` or 1 s, whichever is sooner, then backing off, each
  poll through the rest of the chain (budget, breaker, retries). The caller gets the final job
  answer as the upstream gave it, with ``Preference-Applied: wait=N``, or the original 202 when
  the job is not final within N s (capped by ``jobs.max_wait_s`` and the request's deadline).
  The follow runs in a task of its own: a caller hanging up does not stop it before its bound,
  so the job's entry still learns how it ended.
- ``GET /v1/jobs/{jobId}``, from any caller on any replica: a final answer, however learnt, is
  replayed from the store (``X-Gateway-Cache: hit``); a pending job is polled upstream at most
  once per ``jobs.poll_interval_ms``, the others get that poll's answer (``X-Gateway-Cache:
  shared``). Each caller sees the upstream's status, headers and body as they were.
- The entry (``environment:jobId``) keeps the creating requestId, state, upstream polls, end
  time and the result's bookingId: ``job_story`` joins them, and the booking's webhook events
  and deliveries, to that request's triage record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.clock import Clock
from gateway.observability.instruments import JOB_POLLS
from gateway.observability.names import JOB_POLL_SOURCES, SOURCE
from gateway.observability.stage_facts import CountsFacts
from gateway.request.record import RequestRecord
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.stages.jobs.domain import (
    FINAL_STATES,
    JOB_PATH,
    booking_of,
    decode,
    encode,
    eta_s,
    job_entry_key,
    preferred_wait,
    state_of,
)
from gateway.store.protocols import JobStore

FIRST_POLL_MAX_S = 1.0
POLL_BACKOFF = 1.5
POLL_MAX_S = 5.0
SHARED_POLL_CHECK_S = 0.05
LAST_POLL_ALLOWANCE_S = 0.5  # the poll at the bound gets this much of the deadline to be answered


class BookingChanges(Protocol):
    """Told when a job is learnt completed: its booking changes what availability is true."""

    async def booking_changed(self, source: str, environment: str | None) -> None: ...


class JobObserver(CountsFacts, Protocol):
    def job_created(self, request: UpstreamRequest, job_id: str, upstream_request_id: str | None) -> None: ...
    def job_waited(self, request: UpstreamRequest, seconds: float, polls: RequestRecord | None) -> None: ...
    def job_followed(self, request: UpstreamRequest, outcome: str, seconds: float | None) -> None: ...


@dataclass(frozen=True, slots=True)
class JobsStage:
    store: JobStore
    clock: Clock
    max_wait_s: float
    poll_interval_s: float
    ttl_s: float
    observer: JobObserver
    bookings: BookingChanges | None = None
    name: str = field(default="jobs")
    following: set[asyncio.Task[UpstreamResponse | None]] = field(default_factory=set)
    polls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_POLL_SOURCES, 0))  # this process's

    def status_section(self) -> dict[str, object]:
        return {"following": len(self.following), "polls": dict(self.polls)}

    def _polled(self, request: UpstreamRequest, source: str) -> None:
        self.polls[source] += 1
        self.observer.count(JOB_POLLS, request, {SOURCE: source})

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        job_path = JOB_PATH.match(request.target.split("?", 1)[0]) if request.method == "GET" else None
        if job_path is not None:
            return await self.poll(request, job_path.group(1), next)
        response = await next(request)
        if response.status != 202:  # the common case: nothing to parse
            return response
        payload = response.payload()
        if not payload or not isinstance(payload.get("jobId"), str):
            return response
        job_id = payload["jobId"][:128]
        upstream_id = payload.get("requestId")
        self.observer.job_created(request, job_id, upstream_id[:128] if isinstance(upstream_id, str) else None)
        await self.store.job_update(
            job_entry_key(request.environment, job_id),
            {"jobId": job_id, "requestId": request.request_id, "state": "accepted", "createdAt": repr(self.clock.wall())},
            0,
            self.ttl_s,
        )
        wait = preferred_wait(request.headers)
        if not wait:
            return response
        # The last poll is made at the bound and must still fit the request's deadline.
        bound = min(float(wait), self.max_wait_s, request.deadline - self.clock.monotonic() - LAST_POLL_ALLOWANCE_S)
        # The follow's polls go to a record of their own, taken into the caller's once the caller
        # has its answer: a caller that hung up has had its access line written, and the follow
        # (which goes on, so the job's story and the shared polls stay whole) must not add to it.
        polls = RequestRecord(request.request_id, request.record.started_at)
        task = asyncio.create_task(self._follow(request, polls, job_id, eta_s(payload), bound, next))
        self.following.add(task)
        task.add_done_callback(self.following.discard)
        started = self.clock.monotonic()
        caller_gone = False
        try:
            final = await asyncio.shield(task)  # the caller hanging up does not end the follow
        except asyncio.CancelledError:
            caller_gone = True
            raise
        finally:
            self.observer.job_waited(request, self.clock.monotonic() - started, None if caller_gone else polls)
        if final is None:
            return response  # not final within the wait: the original 202, unchanged
        return UpstreamResponse(final.status, (*final.headers, ("Preference-Applied", f"wait={wait}")), final.body)

    async def _follow(
        self, request: UpstreamRequest, polls: RequestRecord, job_id: str, eta: float | None, bound_s: float, next: Upstream
    ) -> UpstreamResponse | None:
        started = self.clock.monotonic()
        end = started + bound_s
        delay = min(eta if eta is not None and eta > 0 else FIRST_POLL_MAX_S, FIRST_POLL_MAX_S)
        poll = UpstreamRequest(
            method="GET",
            target=f"/v1/jobs/{job_id}",
            route="/v1/jobs/{id}",
            headers=tuple((k, v) for k, v in request.headers if k.lower() not in ("content-type", "idempotency-key", "prefer")),
            body=b"",
            client=request.client,
            environment=request.environment,
            request_id=request.request_id,
            deadline=request.deadline,
            record=polls,
            follow=True,
        )
        while True:
            # the next poll, or the last one at the bound: a job final by then is answered final
            last = self.clock.monotonic() + delay >= end
            await self.clock.sleep(max(0.0, min(delay, end - self.clock.monotonic())))
            # the poll at the bound goes upstream even inside another's interval: it is the last word
            answer = await self.poll(poll, job_id, next, within_interval=not last)
            state = state_of(answer)
            if state in FINAL_STATES:
                self.observer.job_followed(request, str(state), self.clock.monotonic() - started)
                return answer
            if state is None or answer.status != 200:
                # not a job answer (not JSON, no state, an error): the follow ends with what was sent
                self.observer.job_followed(request, "failed", None)
                return answer
            if self.clock.monotonic() >= end:
                self.observer.job_followed(request, "not_final", None)
                return None
            delay = min(delay * POLL_BACKOFF, POLL_MAX_S)

    async def _answer_of_the_poll_in_flight(self, key: str) -> dict[str, str]:
        """Another caller holds this interval's poll and its answer is not stored yet: wait for
        it (a short while, within the interval) rather than poll the upstream a second time."""
        waited = 0.0
        while waited < self.poll_interval_s:
            await self.clock.sleep(SHARED_POLL_CHECK_S)
            waited += SHARED_POLL_CHECK_S
            entry = await self.store.job_get(key) or {}
            if "last" in entry or "final" in entry:
                return entry
        return {}

    async def poll(self, request: UpstreamRequest, job_id: str, next: Upstream, *, within_interval: bool = True) -> UpstreamResponse:
        """One caller's poll of a job: from the store when it can be, else one upstream poll."""
        key = job_entry_key(request.environment, job_id)
        entry = await self.store.job_get(key) or {}
        if "final" in entry:
            self._polled(request, "cache")
            return decode(entry["final"], "hit")
        if within_interval and not await self.store.job_poll_claim(key, self.poll_interval_s):
            shared = entry if "last" in entry else await self._answer_of_the_poll_in_flight(key)
            if "final" in shared:
                self._polled(request, "cache")
                return decode(shared["final"], "hit")
            if "last" in shared:
                self._polled(request, "shared")
                return decode(shared["last"], "shared")
        response = await next(request)
        self._polled(request, "upstream")
        state = state_of(response)
        fields = {"jobId": job_id, "state": state or f"http {response.status}", "lastPolledAt": repr(self.clock.wall())}
        if response.status == 200 and state in FINAL_STATES:
            fields["final"] = encode(response)
            fields["finishedAt"] = repr(self.clock.wall())
            booking = booking_of(response.payload())
            if booking:
                fields["bookingId"] = booking
            if state == "completed" and self.bookings is not None and "final" not in entry:
                await self.bookings.booking_changed("job", request.environment)
        elif response.status == 200 and state is not None:
            fields["last"] = encode(response)
        await self.store.job_update(key, fields, 1, self.ttl_s)
        return response
