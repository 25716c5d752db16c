"""The one route a stage's facts take: a stage tells its observer what happened, and the
observer writes it into the request's record (what the access log, the status board and the
triage record read) and into telemetry (metrics, span events). Stages never write the record
themselves, and telemetry never learns a stage's fact some other way.

A fact that is only counted is ``count(INSTRUMENT, request, labels)``: the instrument's
declaration (instruments.py) says which attributes come from the request, which from the
labels, and which span event goes with it, so a new counter needs nothing here. The facts
below it also write the record.

``RecordFacts`` is the record half alone (unit tests of a stage use it under their notes);
``StageObservers`` adds telemetry. Each stage declares the small protocol it calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from gateway.observability.instruments import (
    BUDGET_REJECTED,
    BUDGET_WAIT,
    IDEMPOTENT_REPLAYS,
    JOB_DURATION,
    JOBS,
    READS,
    Instrument,
)
from gateway.observability.names import (
    BUDGET_LIMIT,
    HTTP_ROUTE,
    OUTCOME,
    PMC_CLIENT,
    PMC_ENVIRONMENT,
    RESULT,
)
from gateway.observability.telemetry import Telemetry
from gateway.request.record import AttemptRecord, CacheRecord, RequestRecord
from gateway.request.types import UpstreamRequest

NO_LABELS: Mapping[str, Any] = MappingProxyType({})

# The attributes an instrument may take from the request a fact is about.
FROM_REQUEST: dict[str, Callable[[UpstreamRequest], str]] = {
    PMC_ENVIRONMENT: lambda request: request.environment,
    PMC_CLIENT: lambda request: request.client,
    HTTP_ROUTE: lambda request: request.route,
}


def attributes_of(instrument: Instrument, request: UpstreamRequest | None, labels: Mapping[str, Any]) -> dict[str, Any]:
    """The instrument's attributes: from the labels, else from the request (one a fact has
    neither for is left out)."""
    found: dict[str, Any] = {}
    for name in instrument.attributes:
        if name in labels:
            found[name] = labels[name]
        elif request is not None and name in FROM_REQUEST:
            found[name] = FROM_REQUEST[name](request)
    return found


class CountsFacts(Protocol):
    """What every stage observer offers: one more of ``instrument``, about ``request``."""

    def count(
        self, instrument: Instrument, request: UpstreamRequest | None = None, labels: Mapping[str, Any] = NO_LABELS, detail: Mapping[str, Any] = NO_LABELS
    ) -> None: ...

    def declare_routes(self, instrument: Instrument, routes: tuple[str, ...]) -> None: ...


class RecordFacts:
    """Writes what the stages report into ``request.record``; counts nothing."""

    def count(
        self, instrument: Instrument, request: UpstreamRequest | None = None, labels: Mapping[str, Any] = NO_LABELS, detail: Mapping[str, Any] = NO_LABELS
    ) -> None:
        return None

    def declare_routes(self, instrument: Instrument, routes: tuple[str, ...]) -> None:
        return None

    def measure(self, instrument: Instrument, request: UpstreamRequest | None, value: float) -> None:
        return None

    def attempt_started(self, request: UpstreamRequest) -> AttemptRecord:
        """The record's entry for one upstream attempt; the terminal fills in how it ended."""
        attempt = AttemptRecord(
            attempt=request.attempt, delay_ms=request.delay_before_s * 1000, hedge=request.hedge, job_poll=request.follow
        )
        request.record.attempts.append(attempt)
        return attempt

    def budget_admitted(self, request: UpstreamRequest, waited_s: float, used: int, limit: int) -> None:
        request.record.budget_wait_ms += waited_s * 1000
        self.measure(BUDGET_WAIT, request, waited_s)

    def budget_rejected(self, request: UpstreamRequest, limit: str, waited_s: float) -> None:
        request.record.budget_wait_ms += waited_s * 1000
        self.count(BUDGET_REJECTED, request, {BUDGET_LIMIT: limit})

    def breaker_checked(self, request: UpstreamRequest, state: str) -> None:
        request.record.breaker_state = state

    def replayed(self, request: UpstreamRequest) -> None:
        request.record.replayed = True
        self.count(IDEMPOTENT_REPLAYS, request)

    def job_created(self, request: UpstreamRequest, job_id: str, upstream_request_id: str | None) -> None:
        request.record.job_id = job_id  # whatever the caller is answered in the end, it made this job
        if upstream_request_id:  # the final job answer carries none: the 202's names the upstream request
            request.record.upstream_request_id = upstream_request_id

    def job_waited(self, request: UpstreamRequest, seconds: float, polls: RequestRecord | None) -> None:
        """The caller waited ``seconds`` on its job; ``polls`` is the follow's own record, taken in
        (None when the caller hung up: its record is written and closed)."""
        request.record.job_wait_ms += seconds * 1000
        if polls is not None:
            request.record.attempts.extend(polls.attempts)
            request.record.budget_wait_ms += polls.budget_wait_ms

    def job_followed(self, request: UpstreamRequest, outcome: str, seconds: float | None) -> None:
        self.count(JOBS, request, {OUTCOME: outcome})
        if seconds is not None:
            self.measure(JOB_DURATION, request, seconds)

    def read_answered(self, request: UpstreamRequest, result: str, age_s: float | None, leader: str | None) -> None:
        request.record.cache = CacheRecord(result, age_s, leader)
        self.count(READS, request, {RESULT: result})


class StageObservers(RecordFacts):
    """The record, then ``Telemetry``: every stage's observer in the running gateway."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._t = telemetry

    def count(
        self, instrument: Instrument, request: UpstreamRequest | None = None, labels: Mapping[str, Any] = NO_LABELS, detail: Mapping[str, Any] = NO_LABELS
    ) -> None:
        self._t.count(instrument, attributes_of(instrument, request, labels), {**labels, **detail} if detail else labels)

    def declare_routes(self, instrument: Instrument, routes: tuple[str, ...]) -> None:
        self._t.declare_routes(instrument, routes)

    def measure(self, instrument: Instrument, request: UpstreamRequest | None, value: float) -> None:
        found = attributes_of(instrument, request, NO_LABELS)
        self._t.measure(instrument, value, tuple(found.get(name) for name in instrument.attributes))

    def budget_admitted(self, request: UpstreamRequest, waited_s: float, used: int, limit: int) -> None:
        super().budget_admitted(request, waited_s, used, limit)
        if waited_s > 0:
            self._t.event("pmc.budget.wait", {"pmc.wait_ms": waited_s * 1000})
        self._t.budget_used(request.environment, used, limit)
