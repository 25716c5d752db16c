"""The jobs stage on a ManualClock, the memory store and a scripted upstream: the follow's
schedule (first poll at the eta or 1 s, backing off, the last at the bound), replays, shared polls."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.core.clock import ManualClock
from gateway.observability.instruments import JOB_POLLS, JOBS
from gateway.observability.names import OUTCOME, SOURCE
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.stages.jobs.domain import eta_s, preferred_wait
from gateway.stages.jobs.stage import JobsStage
from gateway.store.memory import MemoryStore
from tests.support.fakes import CountedFacts, make_request


class Notes(CountedFacts):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    def job_created(self, request: UpstreamRequest, job_id: str, upstream_request_id: str | None) -> None:
        super().job_created(request, job_id, upstream_request_id)
        self.created.append(job_id)

    @property
    def polled(self) -> list[str]:
        return self.values(JOB_POLLS, SOURCE)

    @property
    def followed(self) -> list[str]:
        return self.values(JOBS, OUTCOME)


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def booking_changed(self, source: str, environment: str | None) -> None:
        self.seen.append((source, environment))


def job_answer(state: str) -> UpstreamResponse:
    body: dict[str, object] = {"status": "ok", "jobId": "job_1", "state": state}
    if state == "completed":
        body["result"] = {"bookingId": "bk_1"}
    return UpstreamResponse(200, (), json.dumps(body).encode())


class Upstream:
    """202 for the booking; the job pending until ``done_at`` (monotonic), then completed."""

    def __init__(self, clock: ManualClock, done_at: float) -> None:
        self.clock, self.done_at = clock, done_at
        self.polls_at: list[float] = []

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.method == "POST":
            return UpstreamResponse(202, (), b'{"status":"accepted","jobId":"job_1","eta":"15s"}')
        self.polls_at.append(self.clock.monotonic())
        return job_answer("completed" if self.clock.monotonic() >= self.done_at else "pending")


def stage(clock: ManualClock, notes: Notes, changes: Changes | None = None) -> JobsStage:
    return JobsStage(store=MemoryStore(clock), clock=clock, max_wait_s=30, poll_interval_s=1.0, ttl_s=3600, observer=notes, bookings=changes)


def booking(clock: ManualClock, wait: int) -> UpstreamRequest:
    return make_request(clock, method="POST", target="/v1/bookings", body=b"{}", headers=(("Prefer", f"respond-async, wait={wait}"),), deadline_s=60)


def test_the_preference_and_the_eta_are_read_leniently() -> None:
    assert preferred_wait((("Prefer", "respond-async, wait=10"),)) == 10
    assert preferred_wait((("Prefer", "wait=soon"),)) is None
    assert (eta_s({"eta": "15s"}), eta_s({"eta": "500ms"}), eta_s({"eta": "2m"}), eta_s({"eta": "?"})) == (15.0, 0.5, 120.0, None)


async def test_a_job_final_before_the_bound_is_answered_final_by_the_last_poll_at_the_bound() -> None:
    clock, notes, changes = ManualClock(), Notes(), Changes()
    started = clock.monotonic()
    upstream = Upstream(clock, done_at=started + 2.8)
    answer = await stage(clock, notes, changes)(booking(clock, wait=3), upstream)
    assert answer.status == 200 and json.loads(answer.body)["state"] == "completed"
    assert ("Preference-Applied", "wait=3") in answer.headers
    assert [round(t - started, 2) for t in upstream.polls_at] == [1.0, 2.5, 3.0]  # eta capped at 1 s, ×1.5, the bound
    assert notes.followed == ["completed"] and changes.seen == [("job", "live")]  # availability dropped


async def test_a_job_not_final_by_the_bound_returns_the_original_202() -> None:
    clock, notes = ManualClock(), Notes()
    upstream = Upstream(clock, done_at=clock.monotonic() + 100)
    answer = await stage(clock, notes)(booking(clock, wait=2), upstream)
    assert answer.status == 202 and notes.followed == ["not_final"] and len(upstream.polls_at) == 2


async def test_a_final_answer_is_replayed_and_a_pending_one_shared_within_the_interval() -> None:
    clock, notes = ManualClock(), Notes()
    jobs = stage(clock, notes)
    upstream = Upstream(clock, done_at=clock.monotonic() + 5)
    poll = make_request(clock, target="/v1/jobs/job_1")
    first = await jobs(poll, upstream)
    second = await jobs(make_request(clock, target="/v1/jobs/job_1", request_id="req_2"), upstream)
    assert json.loads(first.body)["state"] == "pending" and ("X-Gateway-Cache", "shared") in second.headers
    clock.advance(6)
    await jobs(make_request(clock, target="/v1/jobs/job_1", request_id="req_3"), upstream)  # learns it completed
    replay = await jobs(make_request(clock, target="/v1/jobs/job_1", request_id="req_4"), upstream)
    assert ("X-Gateway-Cache", "hit") in replay.headers and len(upstream.polls_at) == 2
    assert notes.polled == ["upstream", "shared", "upstream", "cache"]


class RecordingUpstream(Upstream):
    """The same upstream, noting each attempt in the record it was sent with (as the terminal
    does), and holding polls while ``hold`` is clear."""

    def __init__(self, clock: ManualClock, done_at: float, notes: Notes) -> None:
        super().__init__(clock, done_at)
        self.notes = notes
        self.hold = asyncio.Event()
        self.hold.set()
        self.polling = asyncio.Event()

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        self.notes.attempt_started(request)
        if request.method == "GET":
            self.polling.set()
            await self.hold.wait()
        return await super().__call__(request)


async def test_a_waiting_caller_takes_the_follows_polls_into_its_record() -> None:
    clock, notes = ManualClock(), Notes()
    upstream = RecordingUpstream(clock, done_at=clock.monotonic() + 2.8, notes=notes)
    request = booking(clock, wait=3)
    await stage(clock, notes)(request, upstream)
    assert [a.job_poll for a in request.record.attempts] == [False, True, True, True]


async def test_a_caller_that_hung_up_gets_nothing_written_into_its_record_by_the_follow() -> None:
    clock, notes = ManualClock(), Notes()
    jobs = stage(clock, notes)
    upstream = RecordingUpstream(clock, done_at=clock.monotonic() + 2.8, notes=notes)
    upstream.hold.clear()
    request = booking(clock, wait=3)
    caller = asyncio.create_task(jobs(request, upstream))
    await upstream.polling.wait()
    caller.cancel()  # the caller hangs up while the first poll is out
    with pytest.raises(asyncio.CancelledError):
        await caller
    written = [a.job_poll for a in request.record.attempts]  # what its access line saw
    upstream.hold.set()
    await asyncio.gather(*jobs.following)
    assert written == [False] and [a.job_poll for a in request.record.attempts] == [False]
    assert notes.followed == ["completed"]  # the follow went on to the end all the same
