"""The one route a stage's facts take: a stage tells its observer what happened, and the
observer writes it into the request's record (what the access log, the status board and the
triage record read) and into telemetry (metrics, span events). Stages never write the record
themselves, and telemetry never learns a stage's fact some other way.

``RecordFacts`` is the record half alone (unit tests of a stage use it under their notes);
``StageObservers`` adds telemetry. Each stage declares the small protocol it calls.
"""

from __future__ import annotations

from gateway.observability.telemetry import Telemetry
from gateway.request.record import AttemptRecord, CacheRecord
from gateway.request.types import UpstreamRequest


class RecordFacts:
    """Writes what the stages report into ``request.record``."""

    def attempt_started(self, request: UpstreamRequest) -> AttemptRecord:
        """The record's entry for one upstream attempt; the terminal fills in how it ended."""
        attempt = AttemptRecord(
            attempt=request.attempt, delay_ms=request.delay_before_s * 1000, hedge=request.hedge, job_poll=request.follow
        )
        request.record.attempts.append(attempt)
        return attempt

    def budget_admitted(self, request: UpstreamRequest, waited_s: float, used: int, limit: int) -> None:
        request.record.budget_wait_ms += waited_s * 1000

    def budget_rejected(self, request: UpstreamRequest, limit: str, waited_s: float) -> None:
        request.record.budget_wait_ms += waited_s * 1000

    def upstream_throttled(self, request: UpstreamRequest, pause_s: float) -> None:
        return None

    def breaker_checked(self, request: UpstreamRequest, state: str) -> None:
        request.record.breaker_state = state

    def replayed(self, request: UpstreamRequest) -> None:
        request.record.replayed = True

    def job_created(self, request: UpstreamRequest, job_id: str, upstream_request_id: str | None) -> None:
        request.record.job_id = job_id  # whatever the caller is answered in the end, it made this job
        if upstream_request_id:  # the final job answer carries none: the 202's names the upstream request
            request.record.upstream_request_id = upstream_request_id

    def job_waited(self, request: UpstreamRequest, seconds: float) -> None:
        request.record.job_wait_ms += seconds * 1000

    def job_polled(self, request: UpstreamRequest, source: str) -> None:
        return None

    def job_followed(self, request: UpstreamRequest, outcome: str, seconds: float | None) -> None:
        return None

    def retried(self, request: UpstreamRequest, reason: str) -> None:
        return None

    def retry_budget_exhausted(self, request: UpstreamRequest) -> None:
        return None

    def read_answered(self, request: UpstreamRequest, result: str, age_s: float | None, leader: str | None) -> None:
        request.record.cache = CacheRecord(result, age_s, leader)

    def read_invalidated(self, source: str) -> None:
        return None

    def hedged(self, request: UpstreamRequest, outcome: str) -> None:
        return None  # the record shows the hedge as an attempt of its own (``hedge: true``)


class StageObservers(RecordFacts):
    """The record, then ``Telemetry``: every stage's observer in the running gateway."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def budget_admitted(self, request: UpstreamRequest, waited_s: float, used: int, limit: int) -> None:
        super().budget_admitted(request, waited_s, used, limit)
        self._t.budget_waited(request, waited_s)
        self._t.budget_used(request.environment, used, limit)

    def budget_rejected(self, request: UpstreamRequest, limit: str, waited_s: float) -> None:
        super().budget_rejected(request, limit, waited_s)
        self._t.budget_rejected_for(request, limit)

    def job_polled(self, request: UpstreamRequest, source: str) -> None:
        self._t.job_polled(source)

    def job_followed(self, request: UpstreamRequest, outcome: str, seconds: float | None) -> None:
        self._t.job_followed(outcome, seconds)

    def upstream_throttled(self, request: UpstreamRequest, pause_s: float) -> None:
        self._t.upstream_throttled_for(request, pause_s)

    def retried(self, request: UpstreamRequest, reason: str) -> None:
        self._t.retried(request, reason)

    def retry_budget_exhausted(self, request: UpstreamRequest) -> None:
        self._t.retry_budget_exhausted_for(request)

    def replayed(self, request: UpstreamRequest) -> None:
        super().replayed(request)
        self._t.replayed_for(request)

    def read_answered(self, request: UpstreamRequest, result: str, age_s: float | None, leader: str | None) -> None:
        super().read_answered(request, result, age_s, leader)
        self._t.read_answered(request, result)

    def read_invalidated(self, source: str) -> None:
        self._t.read_invalidated(source)

    def hedged(self, request: UpstreamRequest, outcome: str) -> None:
        self._t.hedged(request, outcome)
