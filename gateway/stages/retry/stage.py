"""Retries only what is safe, on an explicit predicate (SPEC §5).

Retried: connect failures before the request was sent (any method); for idempotent
requests (GET, HEAD, OPTIONS, PUT, DELETE, or POST/PATCH with Idempotency-Key) also
attempt timeouts, connections lost after sending, and 429/500/502/503/504 answers.
Once after a 401 INVALID_TOKEN when the key was re-read and changed (the upstream
refused the request, so nothing happened). The gateway's own refusals (rate budget,
open circuit) are final.

Waits: ``Retry-After`` when the upstream sent one, else exponential backoff with full
jitter: uniform(0, min(max_delay, base_delay · 2^n)) before the n-th retry. Limits:
``max_attempts``, the request's deadline (a wait reaching past it returns the last
answer at once) and the retry budget.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.clock import Clock
from gateway.errors import UpstreamFailure
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.stages.retry.retry_after import parse_retry_after
from gateway.stages.retry.retry_budget import RetryBudget

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryObserver(Protocol):
    def retried(self, request: UpstreamRequest, reason: str) -> None: ...
    def retry_budget_exhausted(self, request: UpstreamRequest) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    base_delay_s: float
    max_delay_s: float
    rng: random.Random

    def delay(self, retry_number: int) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2**retry_number)
        return self.rng.uniform(0, ceiling)


def retry_reason(request: UpstreamRequest, response: UpstreamResponse | None, error: UpstreamFailure | None) -> str | None:
    """Why this outcome may be retried, or None when it is final."""
    if error is not None:
        if not error.retryable:
            return None
        if not error.sent:
            return "connect_error"
        return error.code.lower() if request.idempotent else None
    assert response is not None
    if response.status in RETRYABLE_STATUSES and request.idempotent:
        return f"status_{response.status}"
    return None


@dataclass(frozen=True, slots=True)
class RetryStage:
    max_attempts: int
    backoff: Backoff
    budget: RetryBudget
    clock: Clock
    observer: RetryObserver
    name: str = field(default="retry")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        self.budget.deposit()
        attempt, delay, rotated = 1, 0.0, False
        while True:
            response: UpstreamResponse | None = None
            error: UpstreamFailure | None = None
            try:
                response = await next(request.for_attempt(attempt, delay))
            except UpstreamFailure as exc:
                error = exc

            reason: str | None
            if response is not None and response.credentials_rotated and not rotated:
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
            if reason != "credentials_rotated" and not self.budget.try_withdraw():
                self.observer.retry_budget_exhausted(request)
                return _finish(response, error)

            self.observer.retried(request, reason)
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
