"""Two gateway processes on each real Redis deployment (issue 20): a 3-master Cluster, a
Sentinel-managed primary with a replica, and TLS with a private CA and a password. They share
one budget, one breaker and one idempotency record; on Sentinel, a failover loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.redis_topologies import PASSWORD, SENTINEL_MASTER, SentinelSet
from tests.support.servers import (
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
    ScriptedUpstream,
    Step,
    call,
    gateway_document,
    start_gateway_process,
)
from tests.support.webhooks import Subscriber, signed

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def store_section(kind: str, topology: Any) -> tuple[dict[str, Any], dict[str, str]]:
    if kind == "cluster":
        return {"url": topology.url, "cluster": True}, {}
    if kind == "sentinel":
        return {"url": topology.url, "sentinel_master": SENTINEL_MASTER}, {}
    return {"url": topology.url, "password_env": "PMC_REDIS_PASSWORD", "ca_file": str(topology.ca)}, {"PMC_REDIS_PASSWORD": PASSWORD}


@pytest.mark.parametrize("kind", ["cluster", "sentinel", "tls"])
async def test_two_processes_share_budget_breaker_and_idempotency(
    kind: str, request: pytest.FixtureRequest, upstream: ScriptedUpstream, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession
) -> None:
    topology = request.getfixturevalue(f"redis_{kind}")
    topology.flush()
    store, env = store_section(kind, topology)
    document = gateway_document(
        upstream.url, store=store, retry={"max_attempts": 1}, budget={"max_wait_ms": 100},
        breaker={"fail_max": 2, "reset_timeout_s": 30},
        environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 12}, "test": {"api_key_env": "PMC_TEST_API_KEY"}},
    )
    processes += [start_gateway_process(document, tmp_path, env=env, name=f"{kind}{i}") for i in range(2)]
    a, b = processes[-2:]
    for gateway_process in (a, b):  # ready: the store is reachable (a cluster's MOVED is followed, not an error)
        status, _, body = await call(session, "GET", f"{gateway_process.url}/_gateway/ready", token=None)
        assert (status, json.loads(body)["status"]) == (200, "ready"), body

    # one idempotency record: the same key on both replicas books once
    booking = {"eventTypeId": "evt_demo"}
    first = await call(session, "POST", f"{a.url}/v1/bookings", json=booking, headers={"Idempotency-Key": f"k-{kind}"})
    second = await call(session, "POST", f"{b.url}/v1/bookings", json=booking, headers={"Idempotency-Key": f"k-{kind}"})
    assert first[0] == second[0] == 200 and second[1].get("Idempotent-Replayed") == "true"

    # one budget: 12 per minute in all, 1 spent above, however the two are asked
    statuses = await asyncio.gather(*(call(session, "GET", f"{p.url}/v1/users/me") for p in (a, b) for _ in range(10)))
    assert sum(s[0] == 200 for s in statuses) == 11 and len(upstream.received) == 12

    # one breaker: it opens on one replica and the other refuses too
    upstream.received.clear()
    upstream.default = Step(status=500)
    for _ in range(2):
        await call(session, "GET", f"{a.url}/v1/availability", headers={"X-PMC-Environment": "test"})
    deadline = time.monotonic() + 5
    status, refused = 0, b""
    while time.monotonic() < deadline:
        status, _, refused = await call(session, "GET", f"{b.url}/v1/availability", headers={"X-PMC-Environment": "test"})
        if status == 503 and b"CIRCUIT_OPEN" in refused:
            break
        await asyncio.sleep(0.2)
    assert status == 503 and b"CIRCUIT_OPEN" in refused


async def test_a_sentinel_failover_is_followed_and_loses_no_accepted_webhook(
    upstream: ScriptedUpstream, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession
) -> None:
    topology = SentinelSet()
    subscriber = Subscriber()
    await subscriber.start()
    try:
        document = gateway_document(
            upstream.url,
            store={"url": topology.url, "sentinel_master": SENTINEL_MASTER, "webhook_ack_replicas": 1},
            retry={"max_attempts": 1}, budget={"max_wait_ms": 100},
            upstream={"deadline_ms": 2000, "attempt_timeout_ms": 1000},
            environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 1000}, "test": {"api_key_env": "PMC_TEST_API_KEY"}},
        )
        # retries at most 1 s apart: however long a loaded machine takes to fail over, the
        # relay's backoff must not outgrow the wait for the delivery below
        document["webhooks"] = {"secret_envs": ["PMC_WEBHOOK_SECRET"], "allow_insecure_http": True, "delivery_base_delay_ms": 100,
                                "delivery_max_delay_s": 1, "subscribers": [{"name": "booking-svc", "url": subscriber.url}]}
        processes += [start_gateway_process(document, tmp_path, name=f"fo{i}") for i in range(2)]
        a, b = processes[-2:]
        subscriber.fail_next = 1000  # nothing is delivered before the failover: it must survive in Redis

        body, headers = signed({"eventId": "evt_failover_1", "type": "booking.created", "data": {"bookingId": "bk_9"}}, WEBHOOK_SECRET)
        async with session.post(f"{a.url}/webhooks/pinmycal", data=body, headers=headers) as answer:
            assert answer.status == 200  # held by the replica too (WAIT), so the primary may die now

        slowest = 0.0
        outcomes: list[int] = []
        stop = asyncio.Event()

        async def traffic(url: str) -> None:
            nonlocal slowest
            while not stop.is_set():
                started = time.monotonic()
                outcomes.append((await call(session, "GET", f"{url}/v1/users/me"))[0])
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.05)

        running = [asyncio.create_task(traffic(p.url)) for p in (a, b)]
        await asyncio.sleep(1)
        old_primary = topology.master_port()
        topology.kill(old_primary)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and topology.master_port() == old_primary:
            await asyncio.sleep(0.2)
        promoted = time.monotonic()
        assert topology.master_port() != old_primary, "sentinel did not promote the replica"
        ready = [False, False]
        while time.monotonic() < promoted + 10 and not all(ready):
            ready = [json.loads((await call(session, "GET", f"{p.url}/_gateway/ready", token=None))[2])["status"] == "ready" for p in (a, b)]
            await asyncio.sleep(0.2)
        followed_s = time.monotonic() - promoted
        stop.set()
        await asyncio.gather(*running)
        assert all(ready), f"not ready {followed_s:.1f} s after the promotion"
        assert slowest < 2.5  # nothing hung past its deadline (2 s)
        assert set(outcomes) <= {200, 429, 503}

        subscriber.fail_next = 0  # the event accepted before the failover is still there, and goes out
        deadline = time.monotonic() + 15
        while "evt_failover_1" not in subscriber.event_ids() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert "evt_failover_1" in subscriber.event_ids()

        # the budget is exact again across the two, on the new primary: 120 of the test key's
        # per minute, and not one more, from 160 asks on two replicas
        for p in (a, b):
            status = json.loads((await call(session, "GET", f"{p.url}/_gateway/status", token=ADMIN_TOKEN))[2])["store"]
            assert status["healthy"] is True
        upstream.received.clear()
        asks = await asyncio.gather(*(call(session, "GET", f"{p.url}/v1/users/me", headers={"X-PMC-Environment": "test"}) for p in (a, b) for _ in range(80)))
        assert sum(s[0] == 200 for s in asks) == 120 and len(upstream.received) == 120
        print(f"failover: both gateways ready {followed_s:.1f} s after the promotion; slowest request {slowest * 1000:.0f} ms")
    finally:
        await subscriber.stop()
        topology.stop()


async def test_webhook_acks_on_a_cluster_wait_for_the_slot_owners_replica() -> None:
    """webhook_ack_replicas on a cluster: the accept and the WAIT share the owning node's
    connection. With a replica per master it is confirmed; with none, it is 503 and taken back."""
    from gateway.errors import StoreError
    from gateway.store.redis import RedisStore
    from gateway.store.redis_connection import RedisTarget
    from tests.support.redis_topologies import Cluster

    with_replicas = Cluster(replicas=1)
    try:
        store = RedisStore(RedisTarget(with_replicas.url, cluster=True), ack_replicas=1)
        await store.start()
        try:
            # A replica on a loaded machine can miss one 250 ms WAIT: the gateway then answers 503 and
            # takes the event back, and the sender's retry is accepted. The promise is that retry.
            for _ in range(5):
                try:
                    accepted = await store.webhook_accept("evt_c1", b"{}", 60, 1.0)
                    break
                except StoreError:
                    assert await store.webhook_get("evt_c1") is None  # taken back, so the retry is new
            assert accepted is True
            assert await store.webhook_accept("evt_c1", b"{}", 60, 1.0) is False  # a duplicate
        finally:
            await store.close()
    finally:
        with_replicas.stop()
    without = Cluster()
    try:
        store = RedisStore(RedisTarget(without.url, cluster=True), ack_replicas=1)
        await store.start()
        try:
            with pytest.raises(StoreError, match="0 of the 1 replicas"):
                await store.webhook_accept("evt_c2", b"{}", 60, 1.0)
            assert await store.webhook_get("evt_c2") is None  # taken back: the sender's retry is new
        finally:
            await store.close()
    finally:
        without.stop()


async def test_a_webhook_refused_while_the_only_replica_is_gone_is_accepted_once_a_new_one_has_synced() -> None:
    """Issue 29: after the only replica stopped (503, right) and a new one joined and synced, the
    sender's retry was still 503. A WAIT shortfall had marked the whole store down; it no longer does."""
    import redis

    from gateway.core.clock import SystemClock
    from gateway.errors import ReplicasBehind
    from gateway.store.redis import RedisStore
    from gateway.store.resilient import ResilientStore
    from tests.support.redis_topologies import Topology, _wait_port
    from tests.support.servers import free_port

    topology = Topology()
    fast_sync = ("--repl-diskless-sync-delay", "0")
    primary, first, second = free_port(), free_port(), free_port()

    def replicated(timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = redis.Redis(port=primary).info("replication")
            if info.get("connected_slaves", 0) >= 1 and info.get("slave0", {}).get("state") == "online":
                return
            time.sleep(0.05)
        raise TimeoutError("no replica in sync")

    try:
        _wait_port(primary, topology.spawn(primary, "--port", str(primary), *fast_sync))
        _wait_port(first, topology.spawn(first, "--port", str(first), "--replicaof", "127.0.0.1", str(primary), *fast_sync))
        replicated()
        store = ResilientStore(RedisStore(f"redis://127.0.0.1:{primary}/0", ack_replicas=1), member_id="m", min_members=1, clock=SystemClock())
        await store.start()
        async def accepted_as_the_sender_retries(event_id: str) -> bool:
            # A replica the primary calls online may still be loading what it was sent, and miss
            # a 250 ms WAIT: the sender's retry (exponential backoff) is what the promise rests on.
            for _ in range(10):
                try:
                    return await store.webhook_accept(event_id, b"{}", 60, 1.0)
                except ReplicasBehind:
                    await asyncio.sleep(0.2)
            raise AssertionError(f"{event_id} was never accepted with a replica in sync")

        try:
            assert await accepted_as_the_sender_retries("evt_before") is True
            topology.kill(first)
            with pytest.raises(ReplicasBehind):
                await store.webhook_accept("evt_during", b"{}", 60, 1.0)
            assert store.health().healthy  # Redis answered: nothing else falls back
            _wait_port(second, topology.spawn(second, "--port", str(second), "--replicaof", "127.0.0.1", str(primary), *fast_sync))
            replicated()
            assert await accepted_as_the_sender_retries("evt_during") is True
            assert store.health().healthy
        finally:
            await store.close()
    finally:
        topology.stop()
