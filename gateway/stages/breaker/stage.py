"""The breaker stage: circuit breaking per environment and route template (SPEC §5).

One circuit per (environment, route template), from ``board.py``; ``guarded.py`` decides whether
a call may go (open → ``CircuitOpen`` at once; after ``reset_timeout`` one trial). Failures:
connect errors, timeouts, 5xx. Not failures: 4xx, 429. The gateway's own refusals (rate budget,
idempotency) say nothing about the upstream and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import CircuitOpen, UpstreamFailure
from gateway.observability.instruments import BREAKER_REFUSED
from gateway.observability.names import PMC_BREAKER
from gateway.observability.stage_facts import CountsFacts, RecordFacts
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.stages.breaker.board import BreakerBoard
from gateway.stages.breaker.guarded import UpstreamServerError, is_failure

__all__ = ["BreakerBoard", "BreakerStage"]


class BreakerObserver(CountsFacts, Protocol):
    def breaker_checked(self, request: UpstreamRequest, state: str) -> None: ...


class _Unobserved(RecordFacts):
    pass


@dataclass(frozen=True, slots=True)
class BreakerStage:
    board: BreakerBoard
    observer: BreakerObserver = field(default_factory=_Unobserved)
    name: str = field(default="breaker")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        breaker = self.board.get(request.environment, request.route)
        self.observer.breaker_checked(request, breaker.state)
        try:
            is_trial = await breaker.admit()
        except CircuitOpen:
            self.observer.count(BREAKER_REFUSED, request, detail={PMC_BREAKER: breaker.name})
            raise
        try:
            response = await next(request)
        except UpstreamFailure as exc:
            breaker.record_failure(exc)
            raise
        finally:
            if is_trial:
                await breaker.end_trial()
        if is_failure(response):
            breaker.record_failure(UpstreamServerError(response.status))
        else:
            breaker.record_success()
        return response
