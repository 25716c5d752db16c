"""The shared-reads stage (SPEC §5): answers a GET from the cache, from a call already in flight,
or as the leader of a new call whose answer its followers share.

Order of a GET on a listed route:
1. one store round trip: the scope's generation and the entry stored under it (an entry of an
   older generation, fetched before a booking, is never seen);
2. a caller's ``no-cache`` goes upstream (``bypass``); a fresh entry is a ``hit``; within
   ``stale_while_revalidate_s`` the entry is served and one refresh runs behind it;
   ``only-if-cached`` with nothing usable is 504 without an upstream call;
3. otherwise the caller joins the call in flight for the same generation and key — in this
   process first, then on any replica through the store's claim — or leads a new one;
4. a failure (5xx, 429, timeout, connection failure, open circuit, rate budget) is answered from
   an entry within ``stale_if_error_s`` when there is one.

Booking writes pass through and, once answered 2xx/202 (or 409: the upstream says a slot the
cache may still show is taken, or a failure after the request was sent: it may have booked),
invalidate before the writer is answered: read-your-writes across the fleet.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.core.clock import Clock
from gateway.errors import (
    CircuitOpen,
    RateBudgetExhausted,
    Refusal,
    UpstreamFailure,
    UpstreamTimeout,
    refusal_of,
)
from gateway.observability.instruments import READS
from gateway.observability.stage_facts import CountsFacts
from gateway.request.record import RequestRecord
from gateway.request.stored import decode_answer, encode_answer
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.stages.reads.invalidation import ReadInvalidator
from gateway.stages.reads.rules import (
    CallerAsks,
    ReadRoute,
    ReadRules,
    cache_status,
    entry_key,
    is_booking_write,
    may_serve_stale,
    scope_of,
    storable_for,
    stored_headers,
    vary_names,
    vary_values,
)
from gateway.store.protocols import ReadLookup, ReadStore

ANSWER_TTL_S = 10.0  # a leader's answer waits this long for followers on other replicas
FOLLOW_FIRST_CHECK_S = 0.005  # a follower on another replica asks for the answer this soon…
FOLLOW_MAX_CHECK_S = 0.05  # …then less often, up to this
ENTRY_SLACK_S = 1.0


class ReadObserver(CountsFacts, Protocol):
    def read_answered(self, request: UpstreamRequest, result: str, age_s: float | None, leader: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a leader's call came to, as its followers receive it."""

    leader: str
    response: UpstreamResponse | None = None
    refusal: Refusal | None = None
    vary: tuple[tuple[str, str], ...] = ()  # the leader's values of the headers the answer varies on
    stored: bool = False

    def to_blob(self) -> bytes:
        if self.refusal is not None:
            r = self.refusal
            return orjson.dumps({"refusal": {"code": r.code, "message": r.message, "retryAfterS": r.retry_after_s, "details": r.details}})
        assert self.response is not None
        return encode_answer(self.response, {"vary": list(self.vary)})

    @classmethod
    def from_blob(cls, leader: str, blob: bytes) -> Outcome:
        payload = orjson.loads(blob)
        if "refusal" in payload:
            r = payload["refusal"]
            return cls(leader, refusal=refusal_of(r["code"], r["message"], retry_after_s=r["retryAfterS"], details=r["details"]))
        response, extra = decode_answer(blob, replayed=False)
        return cls(leader, response=response, vary=tuple((str(k), str(v)) for k, v in extra.get("vary", ())))

    def fits(self, request: UpstreamRequest) -> bool:
        """A follower may take this answer only if it asked the same of every header it varies on."""
        return all(value == (vary_values(request.headers, (name,))[name]) for name, value in self.vary)

    @property
    def shareable(self) -> bool:
        """A budget refusal is the leader's own (its client's cap or share): followers ask for themselves."""
        return not isinstance(self.refusal, RateBudgetExhausted)

    @property
    def failed(self) -> bool:
        """The upstream could not answer: what ``stale_if_error_s`` covers."""
        if self.refusal is not None:
            return isinstance(self.refusal, UpstreamFailure | CircuitOpen | RateBudgetExhausted)
        assert self.response is not None
        return self.response.status >= 500 or self.response.status == 429


@dataclass(frozen=True, slots=True)
class Cached:
    response: UpstreamResponse
    age_s: float
    fresh_s: float
    stale_ok: bool

    def fresh(self) -> bool:
        return self.age_s < self.fresh_s

    def stale_within(self, window_s: float) -> bool:
        return self.stale_ok and self.age_s < self.fresh_s + window_s


_LeaderGone = object()  # a local leader that was cancelled: its followers go on their own


class ReadsStage:
    name = "reads"

    def __init__(
        self, *, store: ReadStore, rules: ReadRules, invalidator: ReadInvalidator, clock: Clock, observer: ReadObserver
    ) -> None:
        self._store = store
        self._rules = rules
        self._invalidator = invalidator
        self._clock = clock
        self._observer = observer
        observer.declare_routes(READS, tuple(rules.routes))
        self._flights: dict[tuple[str, int, str], asyncio.Future[Any]] = {}
        self._refreshes: set[asyncio.Task[None]] = set()
        self._refreshing: set[tuple[str, int, str]] = set()

    async def close(self) -> None:
        for task in list(self._refreshes):
            task.cancel()
        if self._refreshes:
            await asyncio.gather(*self._refreshes, return_exceptions=True)

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        if request.method != "GET":
            if is_booking_write(request):
                return await self._write(request, next)
            return await next(request)
        rule = self._rules.routes.get(request.route)
        if rule is None and not self._rules.coalesce:
            return await next(request)
        return await self._read(request, next, rule)

    # -- writes ------------------------------------------------------------------------------
    async def _write(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        try:
            response = await next(request)
        except UpstreamFailure as failure:
            if failure.sent:  # it may have booked: the cache cannot know, so it forgets
                await self._invalidator.booking_changed("write", request.environment)
            raise
        if 200 <= response.status < 300 or response.status == 409:
            await self._invalidator.booking_changed("write", request.environment)
        return response

    # -- reads -------------------------------------------------------------------------------
    async def _read(self, request: UpstreamRequest, next: Upstream, rule: ReadRoute | None) -> UpstreamResponse:
        scope, key = scope_of(request.environment, request.route), entry_key(request)
        asks = CallerAsks.of(request)
        lookup = await self._store.read_lookup(scope, key) if rule is not None else ReadLookup(0, None, 0.0)
        cached = _cached(lookup, request)

        if rule is not None and asks.refresh:
            outcome = await self._lead(request, next, rule, scope, key, lookup.generation, claimed=False)
            return self._own_answer(request, outcome, rule, cached, "bypass")
        if cached is not None and cached.fresh():
            return self._from_cache(request, cached, "hit")
        if asks.only_if_cached:
            raise UpstreamTimeout("only-if-cached: no fresh shared-read entry for this request", sent=False)
        if rule is not None and cached is not None and cached.stale_within(rule.stale_while_revalidate_s):
            self._refresh_behind(request, next, rule, scope, key, lookup.generation)
            return self._from_cache(request, cached, "stale", "stale-while-revalidate")

        outcome, joined = await self._join_or_lead(request, next, rule, scope, key, lookup.generation)
        if joined:
            if outcome.failed and rule is not None and cached is not None and cached.stale_within(rule.stale_if_error_s):
                return self._from_cache(request, cached, "stale", "stale-if-error")
            self._observer.read_answered(request, "collapsed", None, outcome.leader)
            if outcome.refusal is not None:
                refusal = outcome.refusal.again()
                refusal.extra_headers.update([cache_status("collapsed")])
                raise refusal
            assert outcome.response is not None
            response = outcome.response
            return UpstreamResponse(response.status, (*response.headers, cache_status("collapsed")), response.body)
        if rule is None:
            if outcome.refusal is not None:
                raise outcome.refusal
            assert outcome.response is not None
            return outcome.response
        return self._own_answer(request, outcome, rule, cached, "miss")

    def _own_answer(self, request: UpstreamRequest, outcome: Outcome, rule: ReadRoute, cached: Cached | None, result: str) -> UpstreamResponse:
        if outcome.failed and cached is not None and cached.stale_within(rule.stale_if_error_s):
            return self._from_cache(request, cached, "stale", "stale-if-error")
        self._observer.read_answered(request, result, None, None)
        if outcome.refusal is not None:
            outcome.refusal.extra_headers.update([cache_status("bypass" if result == "bypass" else "miss")])
            raise outcome.refusal
        assert outcome.response is not None
        status = cache_status("bypass" if result == "bypass" else "stored" if outcome.stored else "miss")
        return UpstreamResponse(outcome.response.status, (*outcome.response.headers, status), outcome.response.body)

    def _from_cache(self, request: UpstreamRequest, cached: Cached, result: str, detail: str | None = None) -> UpstreamResponse:
        self._observer.read_answered(request, result, cached.age_s, None)
        response = cached.response
        if result == "hit":
            status = cache_status("hit", ttl_s=cached.fresh_s - cached.age_s)
        else:
            status = cache_status("stale", ttl_s=cached.age_s - cached.fresh_s, detail=detail)
        return UpstreamResponse(response.status, (*response.headers, ("Age", str(int(cached.age_s))), status), response.body, replayed=True)

    # -- calls in flight -----------------------------------------------------------------------
    async def _join_or_lead(
        self, request: UpstreamRequest, next: Upstream, rule: ReadRoute | None, scope: str, key: str, generation: int
    ) -> tuple[Outcome, bool]:
        """(the outcome, whether it is another request's). Local followers wait on a future; the
        first in this process asks the store whether a replica already leads."""
        if not self._rules.coalesce:
            return await self._lead(request, next, rule, scope, key, generation, claimed=False), False
        flight = (scope, generation, key)
        joined = self._flights.get(flight)
        if joined is not None:
            outcome = await self._wait_local(joined, request)
            if isinstance(outcome, Outcome) and outcome.fits(request) and outcome.shareable:
                return outcome, True
            return await self._lead(request, next, rule, scope, key, generation, claimed=False), False

        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._flights[flight] = future
        try:
            ttl_s = max(0.001, request.deadline - self._clock.monotonic()) + ENTRY_SLACK_S
            leader = await self._store.read_claim(scope, key, generation, request.request_id, ttl_s)
            if leader is not None and leader != request.request_id:
                remote = await self._follow_remote(scope, key, generation, leader, request)
                if remote is not None and remote.fits(request) and remote.shareable:
                    future.set_result(remote)
                    return remote, True
            outcome = await self._lead(request, next, rule, scope, key, generation, claimed=leader is None)
            future.set_result(outcome)
            return outcome, False
        finally:
            if not future.done():
                future.set_result(_LeaderGone)
            if self._flights.get(flight) is future:
                del self._flights[flight]

    async def _wait_local(self, future: asyncio.Future[Any], request: UpstreamRequest) -> object:
        remaining = request.deadline - self._clock.monotonic()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                return await asyncio.shield(future)
        except TimeoutError:
            raise UpstreamTimeout("deadline passed waiting for a shared read in flight", sent=False) from None

    async def _follow_remote(self, scope: str, key: str, generation: int, leader: str, request: UpstreamRequest) -> Outcome | None:
        """Wait for another replica's leader: its answer, or None once its claim is gone unanswered."""
        check = FOLLOW_FIRST_CHECK_S
        while True:
            answer, holding = await self._store.read_answer(scope, key, generation, leader)
            if answer is not None:
                return Outcome.from_blob(leader, answer)
            if not holding:
                return None
            if self._clock.monotonic() + check >= request.deadline:
                raise UpstreamTimeout("deadline passed waiting for a shared read in flight", sent=False)
            await self._clock.sleep(check)
            check = min(check * 2, FOLLOW_MAX_CHECK_S)

    async def _lead(
        self, request: UpstreamRequest, next: Upstream, rule: ReadRoute | None, scope: str, key: str, generation: int, *, claimed: bool
    ) -> Outcome:
        try:
            response = await next(request)
        except Refusal as refusal:
            outcome = Outcome(request.request_id, refusal=refusal)
            if claimed:
                await self._store.read_publish(scope, key, generation, request.request_id, outcome.to_blob(), ANSWER_TTL_S, None, 0)
            return outcome
        names = vary_names(response)
        vary = tuple(sorted(vary_values(request.headers, names).items()))
        fresh_s = storable_for(response, rule) if rule is not None else None
        entry = None
        if fresh_s is not None and rule is not None:
            stored = UpstreamResponse(response.status, stored_headers(response), response.body)
            entry = encode_answer(stored, {"freshS": fresh_s, "vary": list(vary), "staleOk": may_serve_stale(response.headers)})
        outcome = Outcome(request.request_id, response=response, vary=vary)
        if claimed or entry is not None:
            assert rule is not None or entry is None
            ttl_s = fresh_s + max(rule.stale_while_revalidate_s, rule.stale_if_error_s) + ENTRY_SLACK_S if fresh_s is not None and rule is not None else 0
            stored_now = await self._store.read_publish(
                scope, key, generation, request.request_id, outcome.to_blob() if claimed else b"", ANSWER_TTL_S, entry, ttl_s
            )
            outcome = dataclasses.replace(outcome, stored=stored_now)
        return outcome

    def _refresh_behind(self, request: UpstreamRequest, next: Upstream, rule: ReadRoute, scope: str, key: str, generation: int) -> None:
        """One refresh per stale entry, off the caller's path, recorded apart from the caller's request."""
        flight = (scope, generation, key)
        if flight in self._flights or flight in self._refreshing:
            return
        self._refreshing.add(flight)
        refresh = dataclasses.replace(
            request, request_id=f"{request.request_id}:refresh", record=RequestRecord(f"{request.request_id}:refresh", self._clock.wall())
        )

        async def run() -> None:
            try:
                await self._join_or_lead(refresh, next, rule, scope, key, generation)
            except Refusal:
                pass  # the entry stays stale: the next caller past its window goes upstream itself
            finally:
                self._refreshing.discard(flight)

        task = asyncio.create_task(run(), name="read-refresh")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)


def _cached(lookup: ReadLookup, request: UpstreamRequest) -> Cached | None:
    if lookup.entry is None:
        return None
    response, extra = decode_answer(lookup.entry, replayed=True)
    vary = tuple((str(k), str(v)) for k, v in extra.get("vary", ()))
    if any(value != vary_values(request.headers, (name,))[name] for name, value in vary):
        return None  # stored for a caller that asked differently of a header the answer varies on
    return Cached(response, lookup.age_s, float(extra.get("freshS", 0)), bool(extra.get("staleOk", True)))
