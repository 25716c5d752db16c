"""Shared reads on real servers (SPEC §5): two gateway replicas on one redis-server and on a
3-node Redis Cluster, the simulator keeping slot state, webhooks signed by the simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim
from tests.support.servers import (
    ADMIN_TOKEN,
    LIVE_KEY,
    WEBHOOK_SECRET,
    RunningGateway,
    ScriptedUpstream,
    Step,
    call,
    free_port,
    gateway,
    gateway_document,
)

pytestmark = pytest.mark.redis

DAY = "2026-03-10"
AVAILABILITY = f"/v1/availability?eventTypeId=evt_demo&date={DAY}&timezone=UTC"
READS = {"coalesce": True, "routes": {"/v1/availability": {"fresh_s": 30, "stale_if_error_s": 3600, "invalidated_by": ["booking"]}}}


def store_section(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return {"url": cluster.url, "cluster": True}
    return {"url": request.getfixturevalue("redis_url")}


@pytest.fixture(params=["redis", "cluster"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    return store_section(request)


@asynccontextmanager
async def replicas(upstream_url: str, store: dict[str, Any], n: int = 2, **overrides: Any) -> AsyncIterator[list[RunningGateway]]:
    """``n`` gateways (each its own store connections, breakers and in-flight table) on one store."""
    document = gateway_document(upstream_url, store=store, **{"reads": READS, **overrides})
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(gateway(document)) for _ in range(n)]


async def slots(session: aiohttp.ClientSession, url: str) -> tuple[list[str], CIMultiDict[str]]:
    status, headers, body = await call(session, "GET", url)
    assert status == 200, body
    return json.loads(body)["slots"], headers


async def test_twenty_identical_reads_on_two_replicas_make_one_upstream_call(upstream: ScriptedUpstream, store: dict[str, Any], session: aiohttp.ClientSession) -> None:
    upstream.then(Step(body={"status": "ok", "slots": ["a"]}, delay_s=0.5))
    async with replicas(upstream.url, store) as (one, two):
        answers = await asyncio.gather(*(call(session, "GET", f"{gw.url}{AVAILABILITY}") for gw in (one, two) for _ in range(10)))
        assert len(upstream.received) == 1
        assert all(status == 200 and json.loads(body)["slots"] == ["a"] for status, _, body in answers)
        statuses = sorted(headers["Cache-Status"] for _, headers, _ in answers)
        assert statuses.count("pmc-gateway; fwd=miss; collapsed") == 19 and statuses.count("pmc-gateway; fwd=miss; stored") == 1
        assert sorted(headers["X-Gateway-Attempts"] for _, headers, _ in answers) == ["0"] * 19 + ["1"]
        # the joined request's triage record names the leader whose call it shared
        leader = next(h["X-Request-Id"] for _, h, _ in answers if h["Cache-Status"].endswith("stored"))
        joined = next(h["X-Request-Id"] for _, h, _ in answers if h["Cache-Status"].endswith("collapsed"))
        for gw in (one, two):
            status, _, record = await call(session, "GET", f"{gw.url}/_gateway/requests/{joined}", token=ADMIN_TOKEN)
            if status == 200:
                assert json.loads(record)["cache"] == {"status": "collapsed", "ageS": None, "leaderRequestId": leader}
                break
        else:
            raise AssertionError("no replica kept the joined request's record")
        # and the next reads, on either replica, are hits from the shared cache
        _, headers = await slots(session, f"{two.url}{AVAILABILITY}")
        assert headers["Cache-Status"].startswith("pmc-gateway; hit; ttl=") and "Age" in headers
        assert len(upstream.received) == 1


@asynccontextmanager
async def simulator(**config: Any) -> AsyncIterator[tuple[str, Simulator]]:
    runner, port, sim = await start_sim(SimConfig(port=0, faults=Faults(latency_ms=0), seed=3, **config))
    try:
        yield f"http://127.0.0.1:{port}", sim
    finally:
        await runner.cleanup()


async def test_a_booking_through_one_replica_is_never_read_stale_on_the_other(store: dict[str, Any], session: aiohttp.ClientSession) -> None:
    async with simulator() as (sim_url, sim), replicas(sim_url, store) as (one, two):
        before, _ = await slots(session, f"{two.url}{AVAILABILITY}")
        cached, headers = await slots(session, f"{two.url}{AVAILABILITY}")
        assert cached == before and headers["Cache-Status"].startswith("pmc-gateway; hit")
        booking = {"eventTypeId": "evt_demo", "invitee": {"name": "J", "email": "j@c.com"}, "start": before[0], "timezone": "UTC"}
        status, _, _ = await call(session, "POST", f"{one.url}/v1/bookings", json=booking)
        assert status == 200
        after, headers = await slots(session, f"{two.url}{AVAILABILITY}")
        direct = sim.free_slots("evt_demo", DAY)
        assert before[0] not in after and after == direct  # what calling PinmyCal directly shows
        assert headers["Cache-Status"] == "pmc-gateway; fwd=miss; stored"


async def test_a_booking_made_outside_is_dropped_when_its_webhook_is_accepted(redis_url: str, session: aiohttp.ClientSession) -> None:
    port = free_port()
    async with simulator(webhook_url=f"http://127.0.0.1:{port}/webhooks/pinmycal", webhook_secret=WEBHOOK_SECRET.encode()) as (sim_url, sim):
        document = gateway_document(sim_url, store={"url": redis_url}, reads=READS)
        first = {**document, "server": {**document["server"], "listen": f"127.0.0.1:{port}"}}
        async with gateway(first) as one, gateway(document) as two:
            before, _ = await slots(session, f"{two.url}{AVAILABILITY}")
            async with session.post(f"{sim_url}/_sim/outside-bookings", json={"start": before[0]}) as response:
                assert response.status == 200
            for _ in range(200):  # the simulator's webhook reaches replica one
                if any(d["status"] == 200 for d in sim.webhook_log):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"webhook not accepted: {sim.webhook_log}")
            after, _ = await slots(session, f"{two.url}{AVAILABILITY}")  # replica two, right after the 200
            assert before[0] not in after
            metrics = await (await session.get(f"{one.url}/_gateway/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text()
            assert 'pmc_gateway_read_invalidations_total{source="webhook"} 1.0' in metrics


async def test_stale_rather_than_failed_when_the_upstream_fails_and_when_the_circuit_opens(redis_url: str, session: aiohttp.ClientSession) -> None:
    reads = {"coalesce": True, "routes": {"/v1/availability": {"fresh_s": 0.2, "stale_if_error_s": 3600}}}
    async with simulator() as (sim_url, sim), replicas(sim_url, {"url": redis_url}, n=1, reads=reads, breaker={"fail_max": 2, "reset_timeout_s": 30}) as (gw,):
        fresh, _ = await slots(session, f"{gw.url}{AVAILABILITY}")
        await asyncio.sleep(0.3)
        sim.faults.error_rate = 1.0
        stale, headers = await slots(session, f"{gw.url}{AVAILABILITY}")
        assert stale == fresh and headers["Cache-Status"].endswith("detail=stale-if-error") and int(headers["Age"]) >= 0
        # by now the failures opened the breaker: still served, and PinmyCal is left alone
        seen = len(sim.received)
        for _ in range(5):
            again, headers = await slots(session, f"{gw.url}{AVAILABILITY}")
            assert again == fresh and headers["Cache-Status"].endswith("detail=stale-if-error")
        assert len(sim.received) == seen
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/status", token=ADMIN_TOKEN)
        assert status == 200 and "open" in json.dumps(json.loads(body)["breakers"])
        # a read with nothing stored to fall back on fails as it would without the cache
        status, _, body = await call(session, "GET", f"{gw.url}/v1/availability?eventTypeId=evt_demo&date=2026-03-11&timezone=UTC")
        assert status == 503 and json.loads(body)["code"] == "CIRCUIT_OPEN"


async def test_purge_drops_entries_on_every_replica(upstream: ScriptedUpstream, redis_url: str, session: aiohttp.ClientSession) -> None:
    async with replicas(upstream.url, {"url": redis_url}) as (one, two):
        await call(session, "GET", f"{one.url}{AVAILABILITY}")
        status, _, body = await call(session, "POST", f"{one.url}/_gateway/reads/purge", token=ADMIN_TOKEN, json={"route": "/v1/availability"})
        assert (status, json.loads(body)) == (200, {"purged": 1})
        status, headers, _ = await call(session, "GET", f"{two.url}{AVAILABILITY}")
        assert headers["Cache-Status"] == "pmc-gateway; fwd=miss; stored" and len(upstream.received) == 2
        status, _, body = await call(session, "POST", f"{one.url}/_gateway/reads/purge", token=ADMIN_TOKEN, json={"route": "/v1/nope"})
        assert status == 400 and "not a shared-read route" in json.loads(body)["message"]
        status, _, _ = await call(session, "POST", f"{one.url}/_gateway/reads/purge", token=None)
        assert status == 401


async def test_hits_take_no_budget_and_every_read_series_exists_from_start_up(upstream: ScriptedUpstream, redis_url: str, session: aiohttp.ClientSession) -> None:
    limited = {"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 2}}
    async with replicas(upstream.url, {"url": redis_url}, n=1, environments=limited, budget={"max_wait_ms": 0}) as (gw,):
        metrics = await (await session.get(f"{gw.url}/_gateway/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text()
        for result in ("hit", "stale", "collapsed", "miss", "bypass"):
            assert f'pmc_gateway_reads_total{{http_route="/v1/availability",result="{result}"}} 0.0' in metrics
        answers = [await call(session, "GET", f"{gw.url}{AVAILABILITY}") for _ in range(30)]  # fifteen times the limit
        assert [status for status, _, _ in answers] == [200] * 30 and len(upstream.received) == 1
        assert all(received["headers"]["Authorization"] == f"Bearer {LIVE_KEY}" for received in upstream.received)
