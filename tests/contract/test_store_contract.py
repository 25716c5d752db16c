"""One contract, every backend: what the stages rely on, on memory:// and a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from gateway.core.clock import SystemClock
from gateway.store.memory import MemoryStore
from gateway.store.protocols import BreakerTransition, BudgetAsk, IdempotencyState, Store
from gateway.store.redis import RedisStore, budget_log_key, budget_state_key, idempotency_key
from gateway.store.redis_connection import RedisTarget
from gateway.store.resilient import ResilientStore


def topology_target(request: pytest.FixtureRequest) -> RedisTarget:
    """The same suite on a real 3-master Cluster, a Sentinel-managed primary, and TLS with AUTH."""
    from tests.support.redis_topologies import PASSWORD, SENTINEL_MASTER

    topology = request.getfixturevalue(f"redis_{request.param}")
    topology.flush()
    if request.param == "cluster":
        return RedisTarget(topology.url, cluster=True)
    if request.param == "sentinel":
        return RedisTarget(topology.url, sentinel_master=SENTINEL_MASTER)
    return RedisTarget(topology.url, password=PASSWORD, ca_file=str(topology.ca))


ASK = BudgetAsk("env:live", "web", limit=5, burst=5, period_s=1.0, margin_s=0.0)  # 5 per second


@pytest.fixture(params=["memory", "redis", "resilient", "cluster", "sentinel", "tls"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "redis":
        backend = RedisStore(request.getfixturevalue("redis_url"))
    elif request.param in ("cluster", "sentinel", "tls"):
        backend = RedisStore(topology_target(request))
    else:
        primary = RedisStore(request.getfixturevalue("redis_url"))
        backend = ResilientStore(primary, member_id="contract", min_members=1, clock=SystemClock())
    await backend.start()
    yield backend
    await backend.close()


async def test_an_idle_key_admits_its_burst_at_once_then_says_when(store: Store) -> None:
    for _ in range(5):
        admission = await store.admit(ASK, first=True)
        assert admission.granted and admission.wait_s == 0
    assert admission.used == 5 and admission.seq == 5
    refused = await store.admit(ASK, first=True)
    assert not refused.granted and refused.limit == "key"
    assert refused.wait_s == pytest.approx(ASK.window_s, abs=0.1)  # when the first one leaves the window
    other = await store.admit(dataclasses.replace(ASK, key="env:test"), first=True)
    assert other.granted  # other keys are untouched


async def test_beyond_the_burst_admissions_are_spaced(store: Store) -> None:
    spaced = dataclasses.replace(ASK, burst=2)  # 5 per 1 s: one every 0.2 s after a burst of 2
    assert [(await store.admit(spaced, first=True)).granted for _ in range(3)] == [True, True, False]
    refused = await store.admit(spaced, first=True)
    assert refused.limit == "key" and 0.1 < refused.wait_s <= 0.2


async def test_a_client_cap_names_the_client(store: Store) -> None:
    capped = dataclasses.replace(ASK, client="capped", client_limit=2)
    assert (await store.admit(capped, first=True)).granted and (await store.admit(capped, first=True)).granted
    refused = await store.admit(capped, first=True)
    assert (refused.granted, refused.limit) == (False, "client")
    assert (await store.admit(ASK, first=True)).granted  # the key still has room for others


async def test_a_client_past_its_share_waits_for_one_within_it(store: Store) -> None:
    noisy, quiet = (dataclasses.replace(ASK, client=c, limit=10, burst=10, period_s=5.0) for c in ("noisy", "quiet"))
    assert (await store.admit(quiet, first=True)).granted  # the quiet one has asked: it holds a share
    granted = 0
    for _ in range(12):
        granted += (await store.admit(noisy, first=True)).granted
    refused = await store.admit(noisy, first=True)
    assert granted < 9 and (refused.granted, refused.limit) == (False, "share")
    assert (await store.admit(quiet, first=True)).granted  # never held back by the noisy one


async def test_pause_holds_the_key(store: Store) -> None:
    await store.pause("env:live", 0.5)
    refused = await store.admit(ASK, first=True)
    assert (refused.granted, refused.limit) == (False, "key") and refused.wait_s == pytest.approx(0.5, abs=0.05)
    await store.pause("env:live", 0.1)  # a shorter pause never shortens a longer one
    assert (await store.admit(ASK, first=False)).granted is False
    await asyncio.sleep(0.55)
    assert (await store.admit(ASK, first=False)).granted


async def test_rate_limit_headers_cap_the_key_until_their_reset(store: Store) -> None:
    answered = await store.admit(ASK, first=True)
    await store.admit(ASK, first=True)  # sent after the answered one: the upstream had not counted it
    await store.rate_limit_seen("env:live", 2, 0.4, answered.seq)
    assert (await store.admit(ASK, first=True)).granted
    refused = await store.admit(ASK, first=True)
    assert (refused.granted, refused.limit) == (False, "key") and refused.wait_s == pytest.approx(0.4, abs=0.05)
    await asyncio.sleep(0.45)
    assert (await store.admit(ASK, first=True)).granted


async def test_idempotency_lifecycle(store: Store) -> None:
    first = await store.idempotency_begin("web:live:k1", "fp1", 5)
    assert first.state is IdempotencyState.NEW
    second = await store.idempotency_begin("web:live:k1", "fp1", 5)
    assert second.state is IdempotencyState.IN_FLIGHT and second.fingerprint == "fp1"
    await store.idempotency_complete("web:live:k1", "fp1", b'{"stored":1}', 60)
    done = await store.idempotency_begin("web:live:k1", "fp2", 5)
    assert done.state is IdempotencyState.DONE and done.fingerprint == "fp1" and done.response == b'{"stored":1}'

    await store.idempotency_begin("web:live:k2", "fpA", 5)
    await store.idempotency_release("web:live:k2", "other")  # not ours: stays
    assert (await store.idempotency_begin("web:live:k2", "fpA", 5)).state is IdempotencyState.IN_FLIGHT
    await store.idempotency_release("web:live:k2", "fpA")
    assert (await store.idempotency_begin("web:live:k2", "fpA", 5)).state is IdempotencyState.NEW


async def test_in_flight_claim_lapses(store: Store) -> None:
    await store.idempotency_begin("web:live:k3", "fp", 0.2)
    await asyncio.sleep(0.3)
    assert (await store.idempotency_begin("web:live:k3", "fp", 0.2)).state is IdempotencyState.NEW


async def test_breaker_transitions_last_writer_wins(store: Store) -> None:
    now = time.time()
    await store.publish_breaker("live:/v1/bookings", BreakerTransition("open", now, "a"))
    await store.publish_breaker("live:/v1/bookings", BreakerTransition("closed", now - 5, "b"))  # older: ignored
    transitions = await store.breaker_transitions()
    assert transitions["live:/v1/bookings"] == BreakerTransition("open", now, "a")
    await store.publish_breaker("live:/v1/bookings", BreakerTransition("closed", now + 1, "b"))
    assert (await store.breaker_transitions())["live:/v1/bookings"].state == "closed"


async def test_one_probe_at_a_time(store: Store) -> None:
    assert await store.claim_probe("live:/v1/users/me", 0.3, "a:1")
    assert not await store.claim_probe("live:/v1/users/me", 0.3, "b:1")
    await store.release_probe("live:/v1/users/me", "b:1")  # not b's claim: it stays
    assert not await store.claim_probe("live:/v1/users/me", 0.3, "b:2")
    await store.release_probe("live:/v1/users/me", "a:1")
    assert await store.claim_probe("live:/v1/users/me", 0.3, "b:3")
    await asyncio.sleep(0.4)
    assert await store.claim_probe("live:/v1/users/me", 0.3, "c:1")


async def test_records_and_snapshots(store: Store) -> None:
    await store.put_records([("req_1", b'{"a":1}'), ("req_2", b'{"b":2}')], 60)
    assert await store.get_record("req_2") == b'{"b":2}'
    assert await store.get_record("req_missing") is None
    assert await store.heartbeat("member-a", 10) >= 1
    await store.put_snapshot("member-a", b"snap", 10)
    assert b"snap" in await store.snapshots()


def test_redis_keys_are_namespaced_with_hash_tags() -> None:
    assert budget_log_key("env:live") == "pmcgw:{env:live}:budget:log"
    assert budget_state_key("env:live") == "pmcgw:{env:live}:budget"
    assert idempotency_key("web:live:abc") == "pmcgw:{idem:web:live:abc}"


async def test_first_seen_is_set_once(store: Store) -> None:
    assert await store.first_seen("apikey:abc", 1_000.0) == 1_000.0
    assert await store.first_seen("apikey:abc", 2_000.0) == 1_000.0  # every replica reads the first
    assert await store.first_seen("apikey:def", 2_000.0) == 2_000.0


async def test_a_job_entry_adds_polls_and_never_leaves_final(store: Store) -> None:
    await store.job_update("job_1", {"requestId": "req_a", "state": "pending"}, 1, 60)
    await store.job_update("job_1", {"state": "pending"}, 2, 60)
    await store.job_update("job_1", {"state": "completed", "final": "{}"}, 1, 60)
    await store.job_update("job_1", {"state": "pending", "bookingId": "bk_1"}, 1, 60)  # late, stale poll
    entry = await store.job_get("job_1")
    assert entry == {"requestId": "req_a", "state": "completed", "final": "{}", "bookingId": "bk_1", "polls": "5"}
    assert await store.job_get("job_missing") is None


async def test_one_job_poll_per_interval(store: Store) -> None:
    assert await store.job_poll_claim("job_2", 0.3)
    assert not await store.job_poll_claim("job_2", 0.3)
    await asyncio.sleep(0.35)
    assert await store.job_poll_claim("job_2", 0.3)


async def test_a_timeline_keeps_its_order(store: Store) -> None:
    for entry in (b"1", b"2", b"3"):
        await store.timeline_add("booking:bk_1", entry, 60)
    assert await store.timeline("booking:bk_1") == [b"1", b"2", b"3"]
    assert await store.timeline("booking:none") == []


async def test_a_jobs_end_time_is_the_first_learnt(store: Store) -> None:
    await store.job_update("job_3", {"state": "completed", "finishedAt": "10.0"}, 0, 60)  # from a webhook
    await store.job_update("job_3", {"state": "completed", "final": "{}", "finishedAt": "12.0"}, 1, 60)  # a later poll
    entry = await store.job_get("job_3")
    assert entry is not None and entry["finishedAt"] == "10.0" and entry["final"] == "{}"


# -- the webhook queue (WebhookQueue) -----------------------------------------------------
async def test_an_event_is_accepted_once_and_claimed_when_due(store: Store) -> None:
    now = time.time()
    assert await store.webhook_accept("evt_1", b'{"n":1}', 60, now) is True
    assert await store.webhook_accept("evt_1", b'{"n":1}', 60, now) is False  # a redelivery: deduplicated
    assert await store.webhook_accept("evt_2", b'{"n":2}', 60, now + 30) is True  # not due yet
    assert await store.webhook_counts() == (2, 0)
    assert await store.webhook_claim(now, lease_s=10, limit=10) == [b'{"n":1}']
    assert await store.webhook_claim(now, lease_s=10, limit=10) == []  # leased: nobody else takes it
    assert await store.webhook_claim(now + 11, lease_s=10, limit=10) == [b'{"n":1}']  # the lease ran out
    assert await store.webhook_get("evt_2") == b'{"n":2}'


async def test_a_delivered_event_leaves_and_a_failed_one_comes_back_when_due(store: Store) -> None:
    now = time.time()
    await store.webhook_accept("evt_ok", b"a", 60, now)
    await store.webhook_accept("evt_retry", b"b", 60, now)
    assert sorted(await store.webhook_claim(now, 10, 10)) == [b"a", b"b"]
    await store.webhook_finish("evt_ok", "done", b"a", 0)
    await store.webhook_finish("evt_retry", "retry", b"b2", now + 5)
    assert await store.webhook_counts() == (1, 0)
    assert await store.webhook_claim(now + 1, 10, 10) == []
    assert await store.webhook_claim(now + 5, 10, 10) == [b"b2"]  # the blob the finish wrote
    assert await store.webhook_get("evt_ok") is None


async def test_a_dead_letter_is_listed_newest_first_and_replayed_once(store: Store) -> None:
    now = time.time()
    for n in (1, 2):
        await store.webhook_accept(f"evt_dead_{n}", b"x", 60, now)
    await store.webhook_claim(now, 10, 10)
    await store.webhook_finish("evt_dead_1", "dead", b"dead-1", now + 1)
    await store.webhook_finish("evt_dead_2", "dead", b"dead-2", now + 2)
    assert await store.webhook_counts() == (0, 2)
    assert await store.webhook_dead_letters(10) == [b"dead-2", b"dead-1"]
    assert await store.webhook_replay("evt_dead_1", b"again", now) is True
    assert await store.webhook_replay("evt_dead_1", b"again", now) is False  # no longer dead
    assert await store.webhook_counts() == (1, 1)
    assert await store.webhook_claim(now, 10, 10) == [b"again"]


# -- lifecycle (StoreLifecycle) -----------------------------------------------------------
async def test_a_started_store_answers_ping_says_it_is_healthy_and_survives_a_reset(store: Store) -> None:
    await store.ping()
    health = store.health()
    assert health.kind in ("memory", "redis") and health.kind == store.kind
    assert health.healthy and health.error is None and health.members >= 1
    await store.reset()
    await store.ping()
    assert await store.first_seen("after-reset", 5.0) == 5.0


# -- shared reads --------------------------------------------------------------------------
SCOPE, OTHER_SCOPE = "live|/v1/availability", "test|/v1/availability"


async def test_a_read_entry_is_served_only_under_the_generation_it_was_fetched_under(store: Store) -> None:
    first = await store.read_lookup(SCOPE, "k1")
    assert first.entry is None
    assert await store.read_claim(SCOPE, "k1", first.generation, "req_a", 5) is None  # leads
    assert await store.read_publish(SCOPE, "k1", first.generation, "req_a", b"answer", 5, b"entry", 30)
    hit = await store.read_lookup(SCOPE, "k1")
    assert (hit.generation, hit.entry) == (first.generation, b"entry") and 0 <= hit.age_s < 2

    await store.read_invalidate([SCOPE])
    after = await store.read_lookup(SCOPE, "k1")
    assert after.entry is None and after.generation > first.generation  # never served again
    assert (await store.read_lookup(OTHER_SCOPE, "k1")).entry is None


async def test_a_call_sent_before_an_invalidation_stores_nothing(store: Store) -> None:
    before = await store.read_lookup(SCOPE, "k2")
    assert await store.read_claim(SCOPE, "k2", before.generation, "req_a", 5) is None
    await store.read_invalidate([SCOPE])  # a booking answered while the read was in flight
    assert not await store.read_publish(SCOPE, "k2", before.generation, "req_a", b"old", 5, b"old", 30)
    assert (await store.read_lookup(SCOPE, "k2")).entry is None
    later = await store.read_lookup(SCOPE, "k2")
    # a new call after the write has its own claim: it never joins the one sent before
    assert await store.read_claim(SCOPE, "k2", later.generation, "req_b", 5) is None


async def test_one_leader_per_call_in_flight_and_its_answer_for_the_followers(store: Store) -> None:
    generation = (await store.read_lookup(SCOPE, "k3")).generation
    assert await store.read_claim(SCOPE, "k3", generation, "req_lead", 5) is None
    assert await store.read_claim(SCOPE, "k3", generation, "req_other", 5) == "req_lead"
    assert await store.read_answer(SCOPE, "k3", generation, "req_lead") == (None, True)  # still in flight
    await store.read_publish(SCOPE, "k3", generation, "req_lead", b"the answer", 5, None, 0)
    assert await store.read_answer(SCOPE, "k3", generation, "req_lead") == (b"the answer", False)
    assert (await store.read_lookup(SCOPE, "k3")).entry is None  # not cacheable: not kept
    assert await store.read_claim(SCOPE, "k3", generation, "req_next", 5) is None  # no longer in flight


async def test_purge_drops_entries_and_counts_them(store: Store) -> None:
    for key in ("p1", "p2"):
        lookup = await store.read_lookup(SCOPE, key)
        await store.read_publish(SCOPE, key, lookup.generation, f"req_{key}", b"a", 5, b"e", 30)
    lookup = await store.read_lookup(OTHER_SCOPE, "p3")
    await store.read_publish(OTHER_SCOPE, "p3", lookup.generation, "req_p3", b"a", 5, b"e", 30)
    assert await store.read_purge([SCOPE]) == 2
    assert (await store.read_lookup(SCOPE, "p1")).entry is None
    assert (await store.read_lookup(OTHER_SCOPE, "p3")).entry == b"e"
