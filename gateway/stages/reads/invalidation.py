"""Invalidation (SPEC §5 "Invalidation"): every booking the gateway learns of bumps the generation
of the routes it invalidates, so an answer fetched before it is never served again, by any replica.

Sources: a booking write answered through the gateway (``write``), a verified ``booking.*`` webhook
(``webhook``), a job learnt completed (``job``), ``POST /_gateway/reads/purge`` (``purge``). Entries
are dropped for the whole route in the environment (the ``eventTypeId`` refinement the SPEC allows
is not taken: one bump per route is one round trip, and a booking is rare next to reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.errors import BadRequest, StoreError, StoreUnavailable
from gateway.observability.instruments import READ_INVALIDATIONS
from gateway.observability.names import SOURCE
from gateway.observability.stage_facts import CountsFacts
from gateway.stages.reads.rules import ReadRules, scope_of
from gateway.store.protocols import ReadStore


class ReadInvalidator:
    """Built once; shared by the reads stage, the jobs stage, the webhook ingress and admin."""

    def __init__(self, *, store: ReadStore, rules: ReadRules, environments: Sequence[str], observer: CountsFacts) -> None:
        self._store = store
        self._rules = rules
        self._environments = tuple(environments)
        self._observer = observer
        self.counts: dict[str, int] = {}  # by source, since start (this process): the status page's line

    def status_section(self) -> dict[str, object]:
        return {"routes": sorted(self._rules.routes), "coalesce": self._rules.coalesce, "invalidations": dict(self.counts)}

    def _counted(self, source: str) -> None:
        self.counts[source] = self.counts.get(source, 0) + 1
        self._observer.count(READ_INVALIDATIONS, None, {SOURCE: source})

    def _scopes(self, environments: Iterable[str], routes: Iterable[str]) -> list[str]:
        routes = tuple(routes)
        return [scope_of(environment, route) for environment in environments for route in routes]

    async def booking_changed(self, source: str, environment: str | None) -> None:
        """A booking was made, moved or cancelled in ``environment`` (None: not known, so every one)."""
        routes = self._rules.routes_invalidated_by("booking")
        if not routes:
            return
        environments = (environment,) if environment in self._environments else self._environments
        await self._store.read_invalidate(self._scopes(environments, routes))
        self._counted(source)

    async def purge(self, environment: str | None, route: str | None) -> int:
        """Drop entries (all, one environment's, one route's), on every replica sharing the store."""
        if environment is not None and environment not in self._environments:
            raise BadRequest(f"unknown environment {environment[:64]!r}; configured: {list(self._environments)}")
        if route is not None and route not in self._rules.routes:
            raise BadRequest(f"route {route[:128]!r} is not a shared-read route; listed: {list(self._rules.routes)}")
        environments = self._environments if environment is None else (environment,)
        routes = tuple(self._rules.routes) if route is None else (route,)
        try:
            dropped = await self._store.read_purge(self._scopes(environments, routes))
        except StoreError as exc:
            raise StoreUnavailable("the store is unreachable: nothing was purged; retry later", retry_after_s=5) from exc
        self._counted("purge")
        return dropped
