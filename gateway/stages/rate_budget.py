"""Spends one admission per upstream attempt from the environment key's budget (and the
client's cap), through the store's rate-budget algorithm (store/rolling_budget.py): a request
that fits is sent at once; one that does not waits for the time the store names and asks
again, up to ``budget.max_wait_ms`` and never past its deadline, else 429 with what held it
back (``limit``: key, client or share). An upstream 429 pauses the key, and rate-limit headers
cap it until their reset, in the shared store, so every replica holds off (SPEC §5)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.clock import Clock
from gateway.errors import RateBudgetExhausted
from gateway.observability.instruments import UPSTREAM_THROTTLED
from gateway.observability.stage_facts import CountsFacts
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.settings import BudgetSettings, ClientSettings, EnvironmentSettings
from gateway.stages.rate_limit_headers import parse_rate_limit
from gateway.stages.retry.retry_after import parse_retry_after
from gateway.store.protocols import BudgetAsk, BudgetStore

DEFAULT_PAUSE_S = 1.0  # an upstream 429 without a usable Retry-After
MIN_SLEEP_S = 0.001  # a wait the store rounds to nothing is still a wait: no busy loop


class BudgetObserver(CountsFacts, Protocol):
    def budget_admitted(self, request: UpstreamRequest, waited_s: float, used: int, limit: int) -> None: ...
    def budget_rejected(self, request: UpstreamRequest, limit: str, waited_s: float) -> None: ...


def key_budget(environment: str) -> str:
    """The budget name of an environment's API key (also its Redis Cluster hash tag)."""
    return f"env:{environment}"


Clients = Mapping[str, ClientSettings]
Environments = Mapping[str, EnvironmentSettings]


class BudgetTable:
    """Every (client, environment) pair's ask, built at start-up and swapped whole on reload
    (clients are reloadable; environments and [budget] need a restart)."""

    def __init__(self, clients: Clients, environments: Environments, budget: BudgetSettings) -> None:
        self._environments, self._budget = environments, budget
        self.replace(clients)

    def replace(self, clients: Clients) -> None:
        self._table = asks_from(clients, self._environments, self._budget)
        self._section = status_section(clients, self._environments, self._budget)

    def status_section(self) -> list[dict[str, object]]:
        return self._section

    def __getitem__(self, caller: tuple[str, str]) -> BudgetAsk:
        return self._table[caller]


def status_section(clients: Clients, environments: Environments, budget: BudgetSettings) -> list[dict[str, object]]:
    return [
        {
            "environment": name,
            "limitPerMinute": env.rate_limit_per_minute,
            "burst": min(budget.burst or env.rate_limit_per_minute, env.rate_limit_per_minute),
            "fairShare": budget.fair_share,
            "clients": {
                client: c.requests_per_minute
                for client, c in clients.items()
                if name in c.environments
            },
            "shares": {client: c.share for client, c in clients.items() if name in c.environments},
        }
        for name, env in environments.items()
    ]


def asks_from(clients: Clients, environments: Environments, budget: BudgetSettings) -> dict[tuple[str, str], BudgetAsk]:
    table: dict[tuple[str, str], BudgetAsk] = {}
    for client_name, client in clients.items():
        for env in client.environments:
            limit = environments[env].rate_limit_per_minute
            table[(client_name, env)] = BudgetAsk(
                key=key_budget(env),
                client=client_name,
                limit=limit,
                burst=min(budget.burst or limit, limit),
                share=client.share,
                client_limit=client.requests_per_minute or 0,
                fair_share=budget.fair_share,
            )
    return table


class KeyUsage:
    """Each key's admissions in the last 60 s over its limit, as the last admission saw it (the
    store's shared figure): what a hedge asks before spending a slot. Stale after a window."""

    WINDOW_S = 60.0

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, float]] = {}  # environment → (share, when)

    def admitted(self, environment: str, used: int, limit: int) -> None:
        self._seen[environment] = (used / limit if limit else 1.0, self._clock.monotonic())

    def share(self, environment: str) -> float:
        share, at = self._seen.get(environment, (0.0, -self.WINDOW_S))
        return share if self._clock.monotonic() - at < self.WINDOW_S else 0.0


@dataclass(frozen=True, slots=True)
class RateBudgetStage:
    store: BudgetStore
    asks: BudgetTable | Mapping[tuple[str, str], BudgetAsk]
    max_wait_s: float
    clock: Clock
    observer: BudgetObserver
    usage: KeyUsage | None = None
    name: str = field(default="rate_budget")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        ask = self.asks[(request.client, request.environment)]
        admission = await self.store.admit(ask, first=True)
        started = self.clock.monotonic()
        waited = 0.0
        while not admission.granted:
            now = self.clock.monotonic()
            allowed = min(self.max_wait_s - (now - started), request.deadline - now)
            if admission.wait_s > allowed:
                self.observer.budget_rejected(request, admission.limit, waited)
                raise RateBudgetExhausted(
                    f"no rate budget within {self.max_wait_s * 1000:.0f} ms for environment "
                    f"{request.environment!r} (held back by the {admission.limit} limit)",
                    retry_after_s=max(1, math.ceil(admission.wait_s)),
                    details={"limit": admission.limit},
                )
            await self.clock.sleep(max(admission.wait_s, MIN_SLEEP_S))
            admission = await self.store.admit(ask, first=False)
            waited = self.clock.monotonic() - started
        self.observer.budget_admitted(request, waited, admission.used, ask.limit)
        if self.usage is not None:
            self.usage.admitted(request.environment, admission.used, ask.limit)

        response = await next(request)
        if response.status == 429:
            pause = parse_retry_after(response.header("Retry-After"), now_wall=self.clock.wall())
            pause = DEFAULT_PAUSE_S if pause is None else pause
            await self.store.pause(ask.key, pause)
            self.observer.count(UPSTREAM_THROTTLED, request, detail={"pmc.pause_s": pause})
        else:
            seen = parse_rate_limit(response.header, now_wall=self.clock.wall())
            if seen is not None:
                await self.store.rate_limit_seen(ask.key, seen[0], seen[1], admission.seq)
        return response
