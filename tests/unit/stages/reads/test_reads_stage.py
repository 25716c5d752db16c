"""The shared-reads stage on the memory store, a ManualClock and a scripted upstream: no socket,
no sleep. What a caller would check: how many calls reached the upstream, what each caller got."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import CircuitOpen, UpstreamTimeout, UpstreamUnavailable
from gateway.observability.instruments import READ_INVALIDATIONS
from gateway.observability.names import SOURCE
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.settings import ReadRouteSettings, ReadsSettings
from gateway.stages.reads.invalidation import ReadInvalidator
from gateway.stages.reads.rules import ReadRules
from gateway.stages.reads.stage import ReadsStage
from gateway.store.memory import MemoryStore
from tests.support.fakes import CountedFacts, ScriptedUpstream, make_request

AVAILABILITY = "/v1/availability?eventTypeId=evt_demo&date=2026-03-10&timezone=UTC"
JSON = (("Content-Type", "application/json"),)


class Notes(CountedFacts):
    @property
    def invalidations(self) -> list[str]:
        return self.values(READ_INVALIDATIONS, SOURCE)


def answer(body: bytes = b'{"slots":["a"]}', status: int = 200, headers: tuple[tuple[str, str], ...] = JSON) -> UpstreamResponse:
    return UpstreamResponse(status, headers, body)


def make_stage(clock: ManualClock, *, fresh_s: float = 10, swr_s: float = 0, sie_s: float = 3600, coalesce: bool = True) -> tuple[ReadsStage, ReadInvalidator, Notes]:
    rules = ReadRules.from_settings(
        ReadsSettings(
            coalesce=coalesce,
            routes={"/v1/availability": ReadRouteSettings(fresh_s=fresh_s, stale_while_revalidate_s=swr_s, stale_if_error_s=sie_s, max_entry_bytes=64)},
        )
    )
    notes = Notes()
    store = MemoryStore(clock)
    invalidator = ReadInvalidator(store=store, rules=rules, environments=("live", "test"), observer=notes)
    return ReadsStage(store=store, rules=rules, invalidator=invalidator, clock=clock, observer=notes), invalidator, notes


def get(clock: ManualClock, request_id: str = "req_1", headers: tuple[tuple[str, str], ...] = (), environment: str = "live") -> UpstreamRequest:
    return make_request(clock, target=AVAILABILITY, request_id=request_id, headers=headers, environment=environment)


def header(response: UpstreamResponse, name: str) -> str | None:
    return response.header(name)


async def test_a_fresh_answer_is_served_from_the_cache_with_its_age() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer())
    first = await stage(get(clock), upstream)
    assert header(first, "Cache-Status") == "pmc-gateway; fwd=miss; stored"
    clock.advance(4)
    second_request = get(clock, "req_2")
    second = await stage(second_request, upstream)
    assert len(upstream.sent) == 1
    assert (second.status, second.body) == (200, b'{"slots":["a"]}')
    assert header(second, "Cache-Status") == "pmc-gateway; hit; ttl=6" and header(second, "Age") == "4"
    assert second_request.record.cache is not None and second_request.record.cache.status == "hit"
    other_env = await stage(get(clock, "req_3", environment="test"), upstream)
    assert header(other_env, "Cache-Status") == "pmc-gateway; fwd=miss; stored"  # keyed by environment
    clock.advance(7)  # past fresh_s: goes upstream again
    await stage(get(clock, "req_4"), upstream)
    assert len(upstream.sent) == 3


@pytest.mark.parametrize(
    "headers",
    [
        (("Cache-Control", "no-store"),),
        (("Cache-Control", "private, max-age=60"),),
        (("Set-Cookie", "a=b"),),
        (("Vary", "*"),),
        (("Cache-Control", "max-age=0"),),
    ],
)
async def test_answers_that_must_not_be_shared_are_not_stored(headers: tuple[tuple[str, str], ...]) -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer(headers=JSON + headers), answer())
    first = await stage(get(clock), upstream)
    assert header(first, "Cache-Status") == "pmc-gateway; fwd=miss"
    await stage(get(clock, "req_2"), upstream)
    assert len(upstream.sent) == 2


async def test_bodies_over_max_entry_bytes_and_errors_are_not_stored() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer(b"x" * 65), answer(status=422), answer(), answer())
    for i in range(3):
        await stage(get(clock, f"req_{i}"), upstream)
    assert len(upstream.sent) == 3


async def test_an_upstream_max_age_shortens_fresh_s_never_lengthens_it() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer(headers=(("Cache-Control", "max-age=3"),)), answer(headers=(("Cache-Control", "max-age=600"),)))
    await stage(get(clock), upstream)
    clock.advance(3.5)
    await stage(get(clock, "req_2"), upstream)
    assert len(upstream.sent) == 2
    clock.advance(10.5)
    await stage(get(clock, "req_3"), upstream)
    assert len(upstream.sent) == 3


async def test_a_booking_through_the_gateway_drops_availability_before_the_writer_is_answered() -> None:
    clock = ManualClock()
    stage, _, notes = make_stage(clock)
    upstream = ScriptedUpstream(answer(b'{"slots":["a","b"]}'), answer(b'{"bookingId":"bk_1"}'), answer(b'{"slots":["b"]}'))
    await stage(get(clock), upstream)
    booking = make_request(clock, method="POST", target="/v1/bookings", body=b"{}", request_id="req_book")
    await stage(booking, upstream)
    assert notes.invalidations == ["write"]
    after = await stage(get(clock, "req_after"), upstream)
    assert after.body == b'{"slots":["b"]}' and len(upstream.sent) == 3


async def test_a_read_sent_before_a_booking_was_answered_is_not_kept() -> None:
    clock = ManualClock()
    stage, invalidator, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer(b'{"slots":["a","b"]}'), answer(b'{"slots":["b"]}'))
    upstream.release.clear()
    in_flight = asyncio.create_task(stage(get(clock), upstream))
    await asyncio.sleep(0)
    await invalidator.booking_changed("webhook", "live")  # the booking is answered meanwhile
    late_reader = asyncio.create_task(stage(get(clock, "req_late"), upstream))
    await asyncio.sleep(0)
    upstream.release.set()
    first, late = await in_flight, await late_reader
    assert first.body == b'{"slots":["a","b"]}'
    assert late.body == b'{"slots":["b"]}'  # did not join the call sent before the booking
    assert header(first, "Cache-Status") == "pmc-gateway; fwd=miss"  # fetched before: not stored
    assert len(upstream.sent) == 2


async def test_identical_reads_in_flight_share_one_upstream_call() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock, fresh_s=0)  # coalescing alone, nothing cached
    upstream = ScriptedUpstream(answer())
    upstream.release.clear()
    requests = [get(clock, f"req_{i}") for i in range(20)]
    tasks = [asyncio.create_task(stage(r, upstream)) for r in requests]
    await asyncio.sleep(0.01)
    upstream.release.set()
    answers = await asyncio.gather(*tasks)
    assert len(upstream.sent) == 1
    assert all(a.body == b'{"slots":["a"]}' and a.status == 200 for a in answers)
    collapsed = [r for r, a in zip(requests, answers, strict=True) if header(a, "Cache-Status") == "pmc-gateway; fwd=miss; collapsed"]
    assert len(collapsed) == 19
    assert all(r.record.cache is not None and r.record.cache.leader_request_id == "req_0" for r in collapsed)


async def test_a_refused_leader_refuses_its_followers_the_same_way() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock, fresh_s=0)
    upstream = ScriptedUpstream(UpstreamUnavailable("connection refused", sent=False))
    upstream.release.clear()
    tasks = [asyncio.create_task(stage(get(clock, f"req_{i}"), upstream)) for i in range(3)]
    await asyncio.sleep(0.01)
    upstream.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, UpstreamUnavailable) for r in results) and len(upstream.sent) == 1


@pytest.mark.parametrize("failure", [answer(status=503), answer(status=429), UpstreamTimeout("t", sent=True), CircuitOpen("open", retry_after_s=5)])
async def test_past_fresh_a_failure_is_answered_stale_and_marked(failure: UpstreamResponse | Exception) -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock, fresh_s=10, sie_s=60)
    upstream = ScriptedUpstream(answer(), failure)
    await stage(get(clock), upstream)
    clock.advance(25)
    stale_request = get(clock, "req_2")
    stale = await stage(stale_request, upstream)
    assert (stale.status, stale.body) == (200, b'{"slots":["a"]}')
    assert header(stale, "Cache-Status") == "pmc-gateway; hit; ttl=-15; detail=stale-if-error"
    assert stale_request.record.cache is not None and stale_request.record.cache.status == "stale"


async def test_past_stale_if_error_the_failure_passes_through() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock, fresh_s=10, sie_s=60)
    upstream = ScriptedUpstream(answer(), answer(status=503))
    await stage(get(clock), upstream)
    clock.advance(71)
    failed = await stage(get(clock, "req_2"), upstream)
    assert failed.status == 503 and header(failed, "Cache-Status") == "pmc-gateway; fwd=miss"


async def test_an_invalidated_entry_is_never_served_not_even_stale() -> None:
    clock = ManualClock()
    stage, invalidator, _ = make_stage(clock, fresh_s=10, sie_s=3600)
    upstream = ScriptedUpstream(answer(), answer(status=503))
    await stage(get(clock), upstream)
    await invalidator.booking_changed("webhook", None)
    failed = await stage(get(clock, "req_2"), upstream)
    assert failed.status == 503


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once_behind() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock, fresh_s=10, swr_s=30)
    upstream = ScriptedUpstream(answer(b'{"v":1}'), answer(b'{"v":2}'))
    await stage(get(clock), upstream)
    clock.advance(15)
    upstream.release.clear()
    stale = [await stage(get(clock, f"req_s{i}"), upstream) for i in range(3)]
    assert all(s.body == b'{"v":1}' and header(s, "Cache-Status") == "pmc-gateway; hit; ttl=-5; detail=stale-while-revalidate" for s in stale)
    upstream.release.set()
    await asyncio.sleep(0.01)
    assert len(upstream.sent) == 2  # one refresh for three stale answers
    fresh = await stage(get(clock, "req_after"), upstream)
    assert fresh.body == b'{"v":2}' and header(fresh, "Cache-Status", ).startswith("pmc-gateway; hit")  # type: ignore[union-attr]
    await stage.close()


async def test_a_callers_no_cache_goes_upstream_and_refreshes_the_entry() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer(b'{"v":1}'), answer(b'{"v":2}'))
    await stage(get(clock), upstream)
    bypass_request = get(clock, "req_2", headers=(("Cache-Control", "no-cache"),))
    bypass = await stage(bypass_request, upstream)
    assert bypass.body == b'{"v":2}' and header(bypass, "Cache-Status") == "pmc-gateway; fwd=request"
    assert bypass_request.record.cache is not None and bypass_request.record.cache.status == "bypass"
    assert (await stage(get(clock, "req_3"), upstream)).body == b'{"v":2}'
    assert len(upstream.sent) == 2


async def test_only_if_cached_without_an_entry_is_a_504_without_an_upstream_call() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream()
    with pytest.raises(UpstreamTimeout):
        await stage(get(clock, headers=(("Cache-Control", "only-if-cached"),)), upstream)
    assert upstream.sent == []


async def test_an_answer_that_varies_on_a_header_is_served_only_to_callers_that_sent_the_same() -> None:
    clock = ManualClock()
    stage, _, _ = make_stage(clock)
    upstream = ScriptedUpstream(answer(b'{"lang":"en"}', headers=(("Vary", "Accept-Language"),)), answer(b'{"lang":"fr"}'))
    await stage(get(clock, headers=(("Accept-Language", "en"),)), upstream)
    same = await stage(get(clock, "req_2", headers=(("Accept-Language", "en"),)), upstream)
    other = await stage(get(clock, "req_3", headers=(("Accept-Language", "fr"),)), upstream)
    assert same.body == b'{"lang":"en"}' and other.body == b'{"lang":"fr"}' and len(upstream.sent) == 2


async def test_purge_drops_entries_everywhere_and_counts_them() -> None:
    clock = ManualClock()
    stage, invalidator, notes = make_stage(clock)
    upstream = ScriptedUpstream()
    await stage(get(clock), upstream)
    await stage(get(clock, environment="test"), upstream)
    assert await invalidator.purge("live", None) == 1
    assert await invalidator.purge(None, "/v1/availability") == 1
    assert notes.invalidations == ["purge", "purge"]


async def test_a_leaders_budget_refusal_is_its_own_followers_ask_for_themselves() -> None:
    from gateway.errors import RateBudgetExhausted

    clock = ManualClock()
    stage, _, _ = make_stage(clock, fresh_s=0)
    upstream = ScriptedUpstream(RateBudgetExhausted("share", retry_after_s=1, details={"limit": "share"}), answer())
    upstream.release.clear()
    leader = asyncio.create_task(stage(get(clock, "req_noisy"), upstream))
    await asyncio.sleep(0)
    follower = asyncio.create_task(stage(make_request(clock, target=AVAILABILITY, client="quiet", request_id="req_quiet"), upstream))
    await asyncio.sleep(0.01)
    upstream.release.set()
    with pytest.raises(RateBudgetExhausted):
        await leader
    assert (await follower).status == 200 and len(upstream.sent) == 2
