"""Spends one token per upstream attempt from the environment key's budget and the
client's cap, atomically, waiting for a reserved slot up to ``budget.max_wait_ms``
(and never past the deadline). An upstream 429 pauses the key for its Retry-After in
the shared store, so every replica holds off (SPEC §5). A request that waited for its slot
checks the pause again before sending: one that began meanwhile sends it back for a new
slot after the pause, rather than letting every waiter go at once when it ends."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.clock import Clock
from gateway.errors import RateBudgetExhausted
from gateway.retry_after import parse_retry_after
from gateway.settings import Settings
from gateway.store.base import Bucket, Store
from gateway.types import Upstream, UpstreamRequest, UpstreamResponse

DEFAULT_PAUSE_S = 1.0  # an upstream 429 without a usable Retry-After


class BudgetObserver(Protocol):
    def budget_waited(self, request: UpstreamRequest, seconds: float) -> None: ...
    def budget_rejected(self, request: UpstreamRequest) -> None: ...
    def upstream_throttled(self, request: UpstreamRequest, pause_s: float) -> None: ...


def environment_bucket(environment: str, per_minute: int) -> Bucket:
    return Bucket(name=f"env:{environment}", tag=pause_tag(environment), interval_s=60 / per_minute)


def client_bucket(client: str, environment: str, per_minute: int) -> Bucket:
    return Bucket(name=f"client:{environment}:{client}", tag=pause_tag(environment), interval_s=60 / per_minute)


def pause_tag(environment: str) -> str:
    return f"env:{environment}"


class BucketTable:
    """Every (client, environment) pair's buckets, built at start-up and swapped whole on reload."""

    def __init__(self, settings: Settings) -> None:
        self.replace(settings)

    def replace(self, settings: Settings) -> None:
        self._table = buckets_from(settings)

    def __getitem__(self, caller: tuple[str, str]) -> tuple[Bucket, ...]:
        return self._table[caller]


def buckets_from(settings: Settings) -> dict[tuple[str, str], tuple[Bucket, ...]]:
    """Every (client, environment) pair's buckets, built once at start-up."""
    table: dict[tuple[str, str], tuple[Bucket, ...]] = {}
    for client_name, client in settings.clients.items():
        for env in client.environments:
            buckets = [environment_bucket(env, settings.environments[env].rate_limit_per_minute)]
            if client.requests_per_minute is not None:
                buckets.append(client_bucket(client_name, env, client.requests_per_minute))
            table[(client_name, env)] = tuple(buckets)
    return table


@dataclass(frozen=True, slots=True)
class RateBudgetStage:
    store: Store
    buckets: BucketTable | Mapping[tuple[str, str], tuple[Bucket, ...]]
    max_wait_s: float
    clock: Clock
    observer: BudgetObserver
    name: str = field(default="rate_budget")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        tag = pause_tag(request.environment)
        waited = 0.0
        while True:
            max_wait = max(0.0, min(self.max_wait_s - waited, request.deadline - self.clock.monotonic()))
            admission = await self.store.admit(self.buckets[(request.client, request.environment)], tag, max_wait)
            if not admission.granted:
                self.observer.budget_rejected(request)
                raise RateBudgetExhausted(
                    f"no rate budget within {self.max_wait_s * 1000:.0f} ms for environment "
                    f"{request.environment!r}",
                    retry_after_s=max(1, math.ceil(admission.wait_s)),
                )
            if admission.wait_s <= 0:
                break
            request.record.budget_wait_ms += admission.wait_s * 1000
            waited += admission.wait_s
            await self.clock.sleep(admission.wait_s)
            if await self.store.pause_left(tag) <= 0:
                break
        self.observer.budget_waited(request, waited)

        response = await next(request)
        if response.status == 429:
            pause = parse_retry_after(response.header("Retry-After"), now_wall=self.clock.wall())
            pause = DEFAULT_PAUSE_S if pause is None else pause
            await self.store.pause(pause_tag(request.environment), pause)
            self.observer.upstream_throttled(request, pause)
        return response
