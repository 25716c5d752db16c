"""One contract, every backend: what the stages rely on, on memory:// and a real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest

from gateway.store.base import BreakerTransition, Bucket, IdempotencyState, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore, idempotency_key, pause_key, tat_key

BUCKET = Bucket("env:live", "env:live", 0.2)  # 300/min


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend: Store = MemoryStore() if request.param == "memory" else RedisStore(request.getfixturevalue("redis_url"))
    await backend.start()
    yield backend
    await backend.close()


async def test_admission_spaces_requests_by_the_interval(store: Store) -> None:
    waits = []
    for _ in range(5):
        admission = await store.admit([BUCKET], "env:live", 2.0)
        assert admission.granted
        waits.append(admission.wait_s)
    assert waits[0] < 0.05
    for earlier, later in itertools.pairwise(waits):
        assert later - earlier == pytest.approx(0.2, abs=0.05)  # each reserved the next slot


async def test_refusal_reserves_nothing_and_says_when(store: Store) -> None:
    for _ in range(3):
        assert (await store.admit([BUCKET], "env:live", 1.0)).granted
    refused = await store.admit([BUCKET], "env:live", 0.1)
    assert not refused.granted and refused.wait_s == pytest.approx(0.6, abs=0.05)
    again = await store.admit([BUCKET], "env:live", 1.0)
    assert again.granted and again.wait_s == pytest.approx(0.6, abs=0.05)  # the refusal took no slot


async def test_all_buckets_or_none(store: Store) -> None:
    tight = Bucket("client:live:web", "env:live", 10.0)
    assert (await store.admit([BUCKET, tight], "env:live", 0.0)).granted
    refused = await store.admit([BUCKET, tight], "env:live", 1.0)
    assert not refused.granted  # the client's cap is spent…
    key_only = await store.admit([BUCKET], "env:live", 1.0)
    assert key_only.granted and key_only.wait_s == pytest.approx(0.2, abs=0.05)  # …and the refusal took no key slot
    other = await store.admit([Bucket("env:test", "env:test", 0.2)], "env:test", 0.0)
    assert other.granted  # …other keys are untouched


async def test_pause_holds_the_key(store: Store) -> None:
    await store.pause("env:live", 0.5)
    refused = await store.admit([BUCKET], "env:live", 0.1)
    assert not refused.granted and refused.wait_s == pytest.approx(0.5, abs=0.05)
    granted = await store.admit([BUCKET], "env:live", 1.0)
    assert granted.granted and granted.wait_s == pytest.approx(0.5, abs=0.05)
    await store.pause("env:live", 0.1)  # a shorter pause never shortens a longer one
    assert (await store.admit([BUCKET], "env:live", 0.3)).granted is False


async def test_pause_left_counts_down(store: Store) -> None:
    assert await store.pause_left("env:live") == 0
    await store.pause("env:live", 0.4)
    assert await store.pause_left("env:live") == pytest.approx(0.4, abs=0.05)
    await asyncio.sleep(0.45)
    assert await store.pause_left("env:live") == 0


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
    assert await store.claim_probe("live:/v1/users/me", 0.3)
    assert not await store.claim_probe("live:/v1/users/me", 0.3)
    await asyncio.sleep(0.4)
    assert await store.claim_probe("live:/v1/users/me", 0.3)


async def test_records_and_snapshots(store: Store) -> None:
    await store.put_records([("req_1", b'{"a":1}'), ("req_2", b'{"b":2}')], 60)
    assert await store.get_record("req_2") == b'{"b":2}'
    assert await store.get_record("req_missing") is None
    assert await store.heartbeat("member-a", 10) >= 1
    await store.put_snapshot("member-a", b"snap", 10)
    assert b"snap" in await store.snapshots()


def test_redis_keys_are_namespaced_with_hash_tags() -> None:
    assert tat_key(BUCKET) == "pmcgw:{env:live}:tat:env:live"
    assert tat_key(Bucket("client:live:web", "env:live", 1)) == "pmcgw:{env:live}:tat:client:live:web"
    assert pause_key("env:live") == "pmcgw:{env:live}:pause"
    assert idempotency_key("web:live:abc") == "pmcgw:{idem:web:live:abc}"
