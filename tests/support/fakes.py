"""Fakes at the chain's seam for unit tests: a request builder, a scripted terminal, and an
observer that keeps what the stages counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.clock import ManualClock
from gateway.observability.instruments import Instrument
from gateway.observability.stage_facts import NO_LABELS, RecordFacts
from gateway.request.record import RequestRecord
from gateway.request.types import Headers, UpstreamRequest, UpstreamResponse


def make_request(
    clock: ManualClock,
    *,
    method: str = "GET",
    target: str = "/v1/users/me",
    route: str | None = None,
    headers: Headers = (),
    body: bytes = b"",
    client: str = "web",
    environment: str = "live",
    request_id: str = "req_1",
    deadline_s: float = 8.0,
    idempotency_key: str | None = None,
) -> UpstreamRequest:
    from gateway.request.routes import route_template

    return UpstreamRequest(
        method=method,
        target=target,
        route=route or route_template(target),
        headers=headers,
        body=body,
        client=client,
        environment=environment,
        request_id=request_id,
        deadline=clock.monotonic() + deadline_s,
        record=RequestRecord(request_id, clock.wall()),
        idempotency_key=idempotency_key,
    )


class ScriptedUpstream:
    """The upstream, faked at the chain's seam: answers (or raises) what it is told, in order,
    optionally holding each answer until ``release`` is set."""

    def __init__(self, *answers: UpstreamResponse | BaseException | Callable[[UpstreamRequest], UpstreamResponse]) -> None:
        self.answers = list(answers)
        self.sent: list[UpstreamRequest] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        self.sent.append(request)
        await self.release.wait()
        answer = self.answers.pop(0) if self.answers else UpstreamResponse(200, (("Content-Type", "application/json"),), b'{"status":"ok"}')
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


class CountedFacts(RecordFacts):
    """The record half of the stages' observer, keeping every counted fact and reading for the test."""

    def __init__(self) -> None:
        self.counted: list[tuple[Instrument, dict[str, Any]]] = []
        self.measured: list[tuple[Instrument, float]] = []
        self.declared: dict[Instrument, tuple[str, ...]] = {}

    def count(
        self, instrument: Instrument, request: UpstreamRequest | None = None, labels: Mapping[str, Any] = NO_LABELS, detail: Mapping[str, Any] = NO_LABELS
    ) -> None:
        self.counted.append((instrument, {**labels, **detail}))

    def measure(self, instrument: Instrument, request: UpstreamRequest | None, value: float) -> None:
        self.measured.append((instrument, value))

    def declare_routes(self, instrument: Instrument, routes: tuple[str, ...]) -> None:
        self.declared[instrument] = routes

    def values(self, instrument: Instrument, label: str) -> list[Any]:
        """What ``label`` was each time ``instrument`` was counted."""
        return [labels.get(label) for counted, labels in self.counted if counted is instrument]

    def times(self, instrument: Instrument) -> int:
        return sum(1 for counted, _ in self.counted if counted is instrument)
