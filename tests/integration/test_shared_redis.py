"""What sharing a Redis store adds: several gateway processes behave as one (SPEC §5)."""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.servers import (
    ADMIN_TOKEN,
    GatewayProcess,
    RedisServer,
    ScriptedUpstream,
    Step,
    call,
    gateway_document,
    start_gateway_process,
)

pytestmark = pytest.mark.redis


def shared(upstream_url: str, redis_url: str, /, **overrides: Any) -> dict[str, Any]:
    document = gateway_document(upstream_url, store={"url": redis_url}, **overrides)
    document["clients"]["booking-web"]["environments"] = ["live"]
    return document


def forget_budget(redis_url: str, environment: str) -> None:
    import redis

    from gateway.stages.rate_budget import key_budget
    from gateway.store.redis import budget_log_key, budget_state_key

    with redis.Redis.from_url(redis_url) as client:
        client.delete(budget_log_key(key_budget(environment)), budget_state_key(key_budget(environment)))


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


async def test_two_processes_share_one_budget(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    limit = 600  # one every 100 ms, so the test runs in seconds
    document = shared(upstream.url, redis_url, environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": limit}}, budget={"max_wait_ms": 500, "burst": 1})
    processes += [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(2)]
    outcomes: list[int] = []

    async def caller(url: str) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            status, _, _ = await call(session, "GET", f"{url}/v1/users/me")
            outcomes.append(status)

    await asyncio.gather(*(caller(p.url) for p in processes for _ in range(6)))
    times = [r["t"] for r in upstream.received]
    assert outcomes.count(429) > 0, "demand should exceed the budget"  # the gateways refused, not the upstream
    span = max(times) - min(times)
    assert len(times) <= span / 0.1 + 2  # one slot per 100 ms over the span, +1 for loopback jitter
    assert max_in_window(times, 1.0) <= 10 + 1
    assert {s for s in outcomes} <= {200, 429}


async def test_two_and_three_processes_admit_exactly_the_limit_per_window(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    """The whole limit at once (burst = limit), never one more, however many replicas ask."""
    limit = 40
    document = shared(upstream.url, redis_url, environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": limit}}, budget={"max_wait_ms": 200})
    processes += [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(3)]
    for replicas in (processes[:2], processes):
        upstream.received.clear()
        await asyncio.gather(*(call(session, "GET", f"{p.url}/v1/users/me") for p in replicas))  # warm connections
        forget_budget(redis_url, "live")  # a fresh window for this round
        upstream.received.clear()
        outcomes: list[tuple[int, bytes]] = []

        async def caller(url: str, into: list[tuple[int, bytes]] = outcomes) -> None:
            for _ in range(15):
                status, _, body = await call(session, "GET", f"{url}/v1/users/me")
                into.append((status, body))

        started = time.monotonic()
        await asyncio.gather(*(caller(p.url) for p in replicas for _ in range(4)))
        assert time.monotonic() - started < 50  # all of it inside one 60 s window
        assert len(upstream.received) == limit  # the key's whole capacity, and not one request more
        assert sum(status == 200 for status, _ in outcomes) == limit
        refusals = [json.loads(body) for status, body in outcomes if status == 429]
        assert refusals and {r["code"] for r in refusals} == {"RATE_BUDGET_EXHAUSTED"} and {r["limit"] for r in refusals} == {"key"}


async def test_upstream_429_on_one_replica_holds_back_the_other(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=429, headers={"Retry-After": "2"}, body={"status": "error", "code": "RATE_LIMITED"}))
    document = shared(upstream.url, redis_url, budget={"max_wait_ms": 4000}, upstream={"deadline_ms": 6000, "attempt_timeout_ms": 1000})
    first, second = [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(2)]
    processes += [first, second]
    status, _, _ = await call(session, "POST", f"{first.url}/v1/bookings", json={})
    assert status == 429
    status, _, _ = await call(session, "GET", f"{second.url}/v1/users/me")
    assert status == 200
    gap = upstream.received[1]["t"] - upstream.received[0]["t"]
    assert gap >= 1.9, gap


async def test_breaker_state_crosses_processes(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=500)
    document = shared(upstream.url, redis_url, breaker={"fail_max": 3, "reset_timeout_s": 2}, retry={"max_attempts": 1})
    first, second = [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(2)]
    processes += [first, second]
    for _ in range(3):
        assert (await call(session, "GET", f"{first.url}/v1/users/me"))[0] == 500
    opened = time.monotonic()
    await asyncio.sleep(1.0)  # the sync interval is 0.5 s: within a second the other replica knows
    status, headers, body = await call(session, "GET", f"{second.url}/v1/users/me")
    assert (status, json.loads(body)["code"]) == (503, "CIRCUIT_OPEN") and int(headers["Retry-After"]) >= 1
    assert len(upstream.received) == 3

    upstream.default = Step(status=200)
    await asyncio.sleep(max(0.0, 2.1 - (time.monotonic() - opened)))
    assert (await call(session, "GET", f"{first.url}/v1/users/me"))[0] == 200  # the trial closes it
    await asyncio.sleep(1.0)
    statuses = [(await call(session, "GET", f"{second.url}/v1/users/me"))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    status_doc = json.loads((await call(session, "GET", f"{second.url}/_gateway/status", token=ADMIN_TOKEN))[2])
    assert {b["name"]: b["state"] for b in status_doc["breakers"]}["live:/v1/users/me"] == "closed"


async def test_idempotency_key_in_flight_on_one_replica_is_409_on_the_other(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=200, delay_s=0.8, body={"status": "ok", "bookingId": "bk_9"}))
    document = shared(upstream.url, redis_url)
    first, second = [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(2)]
    processes += [first, second]
    headers = {"Idempotency-Key": "order-1"}
    booking = {"eventTypeId": "evt_demo"}
    in_flight = asyncio.create_task(call(session, "POST", f"{first.url}/v1/bookings", json=booking, headers=headers))
    while not upstream.received:
        await asyncio.sleep(0.02)
    status, _, body = await call(session, "POST", f"{second.url}/v1/bookings", json=booking, headers=headers)
    assert (status, json.loads(body)["code"]) == (409, "IDEMPOTENCY_KEY_IN_USE")
    status, _, original = await in_flight
    assert status == 200
    status, replay_headers, replay = await call(session, "POST", f"{second.url}/v1/bookings", json=booking, headers=headers)
    assert (status, replay, replay_headers["Idempotent-Replayed"]) == (200, original, "true")
    assert len(upstream.received) == 1


async def test_redis_killed_mid_traffic_then_back(upstream: ScriptedUpstream, redis_server: RedisServer, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    redis_server.flush()
    document = shared(upstream.url, redis_server.url, upstream={"deadline_ms": 2000, "attempt_timeout_ms": 1000})
    process = start_gateway_process(document, tmp_path)
    processes.append(process)
    statuses: list[int] = []
    slowest = 0.0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal slowest
        while not stop.is_set():
            started = time.monotonic()
            status, _, _ = await call(session, "GET", f"{process.url}/v1/users/me")
            slowest = max(slowest, time.monotonic() - started)
            statuses.append(status)
            await asyncio.sleep(0.02)

    runner = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(0.5)
        redis_server.stop()
        await asyncio.sleep(1.5)
        # SPEC §6: still serving on the local share, so still in the load balancer: 200 degraded
        status, _, body = await call(session, "GET", f"{process.url}/_gateway/ready", token=None)
        assert (status, json.loads(body)["status"]) == (200, "degraded")
        assert any("store unreachable" in r for r in json.loads(body)["problems"])
        served_while_down = len(statuses)
        await asyncio.sleep(1.0)
        assert len(statuses) > served_while_down  # still answering
        redis_server.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, _, body = await call(session, "GET", f"{process.url}/_gateway/ready", token=None)
            if json.loads(body)["status"] == "ready":
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the gateway did not recover when Redis came back")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await runner
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert slowest < 2.0  # nothing hung past its deadline
    events = [line.get("event") for line in process.log_lines()]
    assert "store_unreachable" in events and "store_recovered" in events


async def test_gateway_starts_and_serves_with_redis_down(upstream: ScriptedUpstream, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    from tests.support.servers import closed_port

    document = shared(upstream.url, f"redis://127.0.0.1:{closed_port()}/0")
    process = start_gateway_process(document, tmp_path)
    processes.append(process)
    assert (await call(session, "GET", f"{process.url}/v1/users/me"))[0] == 200
    status, _, body = await call(session, "GET", f"{process.url}/_gateway/ready", token=None)
    assert (status, json.loads(body)["status"]) == (200, "degraded") and "store unreachable" in json.loads(body)["problems"][0]


async def test_workers_share_one_port_and_one_store(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    document = shared(upstream.url, redis_url, server={"workers": 2})
    process = start_gateway_process(document, tmp_path)
    processes.append(process)
    await asyncio.sleep(2.5)  # both workers heart-beat into the store
    members: set[str] = set()
    for _ in range(20):
        async with aiohttp.ClientSession() as fresh:  # new connections spread over the workers
            status, _, body = await call(fresh, "GET", f"{process.url}/_gateway/status", token=ADMIN_TOKEN)
            members.update(json.loads(body)["members"])
    assert status == 200 and len(members) == 2
    assert process.terminate() == 0


async def test_metrics_endpoint_counts_the_whole_worker_group(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    document = shared(upstream.url, redis_url, server={"workers": 2})
    process = start_gateway_process(document, tmp_path)
    processes.append(process)
    sent = 40
    for _ in range(sent):
        async with aiohttp.ClientSession() as fresh:  # a new connection each: both workers serve some
            assert (await call(fresh, "GET", f"{process.url}/v1/users/me"))[0] == 200
    await asyncio.sleep(2.5)  # every worker publishes its exposition every 2 s
    totals = set()
    for _ in range(6):
        async with aiohttp.ClientSession() as fresh:
            _, _, body = await call(fresh, "GET", f"{process.url}/_gateway/metrics", token=ADMIN_TOKEN)
        counted = sum(
            sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
            if sample.name == "http_server_request_duration_seconds_count" and sample.labels.get("pmc_client") == "booking-web"
        )
        totals.add(counted)
    assert totals == {float(sent)}, totals  # whichever worker answers, it answers for the group
    assert process.terminate() == 0



def workers_of(process: GatewayProcess) -> set[int]:
    pid = process.process.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


async def wait_for_workers(process: GatewayProcess, count: int, timeout: float = 15) -> set[int]:
    deadline = time.monotonic() + timeout
    while (workers := workers_of(process)) and len(workers) != count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return workers


async def test_a_worker_that_dies_is_replaced(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    process = start_gateway_process(shared(upstream.url, redis_url, server={"workers": 2}), tmp_path)
    processes.append(process)
    first = await wait_for_workers(process, 2)
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while (now := workers_of(process)) and (victim in now or len(now) != 2) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(now) == 2 and victim not in now
    for _ in range(10):
        async with aiohttp.ClientSession() as fresh:
            assert (await call(fresh, "GET", f"{process.url}/v1/users/me"))[0] == 200
    assert process.terminate() == 0
    assert any(line.get("event") == "worker_exited" for line in process.log_lines())


async def test_sigterm_while_a_worker_restarts_still_stops_the_group(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess]) -> None:
    """Regression: a stop signal during a worker's restart pause reached only the workers then
    alive; the replacement, forked after it, never got one, and the supervisor waited forever."""
    process = start_gateway_process(shared(upstream.url, redis_url, server={"workers": 2}), tmp_path)
    processes.append(process)
    workers = await wait_for_workers(process, 2)
    os.kill(min(workers), signal.SIGKILL)
    await asyncio.sleep(0.1)  # the supervisor has seen the death and pauses 0.5 s before replacing it
    assert process.terminate(timeout=20) == 0
    with pytest.raises(ProcessLookupError):  # nothing of the group is left running
        os.killpg(process.process.pid, 0)


async def test_recovery_does_not_flap_on_stale_pooled_connections(redis_server: RedisServer) -> None:
    """Regression: after Redis came back, requests drew pooled connections to the dead server,
    failed once each and marked the store down again, for seconds (seen in a cold CI run)."""
    from gateway.core.clock import SystemClock
    from gateway.store.protocols import BudgetAsk
    from gateway.store.redis import RedisStore
    from gateway.store.resilient import ResilientStore

    redis_server.flush()
    store = ResilientStore(RedisStore(redis_server.url), member_id="t", min_members=1, clock=SystemClock(), recheck_s=0.2)
    await store.start()
    ask = BudgetAsk("env:live", "web", limit=1_000_000, burst=1_000_000)
    try:
        await asyncio.gather(*(store.admit(ask, first=True) for _ in range(30)))  # ~30 pooled connections
        redis_server.stop()
        await store.admit(ask, first=True)
        assert not store.healthy
        redis_server.start()
        deadline = time.monotonic() + 3
        while not store.healthy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert store.healthy
        await asyncio.gather(*(store.admit(ask, first=True) for _ in range(30)))  # the traffic after recovery
        assert store.healthy and store.last_error is None, store.last_error
    finally:
        await store.close()
