"""The retry stage: retries only what is safe, on an explicit predicate (SPEC §5).

What is retried is ``policy.py``'s predicate; how long to wait, ``backoff.py`` and
``retry_after.py``; how much, ``retry_budget.py``. Once after a 401 INVALID_TOKEN when the key was re-read and changed (the upstream
refused the request, so nothing happened). The gateway's own refusals (rate budget,
open circuit) are final.

Waits: ``Retry-After`` when the upstream sent one, else the backoff. Limits:
``max_attempts``, the request's deadline (a wait reaching past it returns the last
answer at once) and the retry budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.clock import Clock
from gateway.errors import UpstreamFailure
from gateway.observability.instruments import RETRIES, RETRY_BUDGET_EXHAUSTED
from gateway.observability.names import REASON
from gateway.observability.stage_facts import CountsFacts
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.stages.retry.backoff import Backoff
from gateway.stages.retry.policy import retry_reason
from gateway.stages.retry.retry_after import parse_retry_after
from gateway.stages.retry.retry_budget import RetryBudget


class KeyRotation(Protocol):
    """The credentials' side of "once more after a rotated key" (stages/credentials.py)."""

    def generation(self, environment: str) -> int: ...
    async def changed_since(self, environment: str, generation: int, response: UpstreamResponse) -> bool: ...


class NoKeyRotation:
    def generation(self, environment: str) -> int:
        return 0

    async def changed_since(self, environment: str, generation: int, response: UpstreamResponse) -> bool:
        return False


class CircuitView(Protocol):
    """The breakers' side of "no backoff toward an attempt that cannot be made" (stages/breaker/)."""

    def refuses_after(self, environment: str, route: str, wait_s: float) -> bool: ...


class NoCircuits:
    def refuses_after(self, environment: str, route: str, wait_s: float) -> bool:
        return False




@dataclass(frozen=True, slots=True)
class RetryStage:
    max_attempts: int
    backoff: Backoff
    budget: RetryBudget
    clock: Clock
    observer: CountsFacts
    keys: KeyRotation = field(default_factory=NoKeyRotation)
    circuits: CircuitView = field(default_factory=NoCircuits)
    name: str = field(default="retry")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        self.budget.deposit()
        attempt, delay, rotated = 1, 0.0, False
        while True:
            response: UpstreamResponse | None = None
            error: UpstreamFailure | None = None
            generation = self.keys.generation(request.environment)
            try:
                response = await next(request.for_attempt(attempt, delay))
            except UpstreamFailure as exc:
                error = exc

            reason: str | None
            if (
                not rotated
                and response is not None
                and response.status == 401  # the only answer a rotated key explains: no await on the others
                and await self.keys.changed_since(request.environment, generation, response)
            ):
                rotated, reason, wait = True, "credentials_rotated", 0.0
            else:
                reason = retry_reason(request, response, error)
                if reason is None:
                    return _finish(response, error)
                wait = self._wait(response, attempt)

            if attempt >= self.max_attempts:
                return _finish(response, error)
            if self.clock.monotonic() + wait >= request.deadline:
                return _finish(response, error)  # waiting would outlive the caller's deadline
            if self.circuits.refuses_after(request.environment, request.route, wait):
                return _finish(response, error)  # the circuit (opened by now) would refuse the retry: answer now
            if reason != "credentials_rotated" and not self.budget.try_withdraw():
                self.observer.count(RETRY_BUDGET_EXHAUSTED, request)
                return _finish(response, error)

            self.observer.count(RETRIES, request, {REASON: reason}, {"pmc.attempt": attempt + 1})
            await self.clock.sleep(wait)
            attempt, delay = attempt + 1, wait

    def _wait(self, response: UpstreamResponse | None, attempt: int) -> float:
        if response is not None:
            retry_after = parse_retry_after(response.header("Retry-After"), now_wall=self.clock.wall())
            if retry_after is not None:
                return retry_after
        return self.backoff.delay(attempt)


def _finish(response: UpstreamResponse | None, error: UpstreamFailure | None) -> UpstreamResponse:
    if error is not None:
        raise error
    assert response is not None
    return response
