"""SPEC §5's rate-budget promises through a running gateway in front of the simulator, which
enforces the real rule (N per rolling 60 s per key, 429 beyond). Each is compared with the
same callers going to the simulator directly, the baseline a team would otherwise have."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim
from tests.support.servers import ADMIN_TOKEN, OPS_TOKEN, WEB_TOKEN, call, gateway, gateway_document

pytestmark = pytest.mark.slow

DIRECT_KEY = "pmc_live_direct_baseline_0001"  # the baseline's own key: its own window at the simulator


async def simulator(limit: int) -> tuple[aiohttp.web.AppRunner, str, Simulator]:
    runner, port, sim = await start_sim(SimConfig(port=0, rate_limit=limit, faults=Faults(latency_ms=5), seed=3))
    return runner, f"http://127.0.0.1:{port}", sim


def document(sim_url: str, limit: int, **budget: Any) -> dict[str, Any]:
    doc = gateway_document(
        sim_url,
        environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": limit}},
        budget={"max_wait_ms": 200, **budget},
        retry={"max_attempts": 1},
    )
    for client in doc["clients"].values():
        client["environments"] = ["live"]
    return doc


@pytest.fixture
async def sim_limit_20() -> AsyncIterator[tuple[str, Simulator]]:
    runner, url, sim = await simulator(20)
    yield url, sim
    await runner.cleanup()


Caller = Callable[[str], Awaitable[tuple[int, str, float]]]


def caller(session: aiohttp.ClientSession, base: str, token: str | None) -> Caller:
    headers = {} if token else {"Authorization": f"Bearer {DIRECT_KEY}"}

    async def send(path: str) -> tuple[int, str, float]:
        """Status, the gateway's X-Request-Id (none directly) and the latency."""
        started = time.monotonic()
        status, answer_headers, _ = await call(session, "GET", f"{base}{path}", token=token, headers=headers)
        return status, answer_headers.get("X-Request-Id", ""), time.monotonic() - started

    return send


async def budget_wait_ms(session: aiohttp.ClientSession, gw_url: str, request_id: str) -> float:
    await asyncio.sleep(0.05)  # records are written after the answer
    status, _, record = await call(session, "GET", f"{gw_url}/_gateway/requests/{request_id}", token=ADMIN_TOKEN)
    assert status == 200
    return float(json.loads(record)["budgetWaitMs"])


async def test_bursts_under_the_limit_pass_at_once_as_they_would_directly(session: aiohttp.ClientSession) -> None:
    runner, sim_url, _ = await simulator(120)
    try:
        async with gateway(document(sim_url, 120)) as gw:
            through, direct = caller(session, gw.url, WEB_TOKEN), caller(session, sim_url, None)
            results: dict[str, list[tuple[int, str, float]]] = {"gateway": [], "direct": []}
            for _ in range(4):  # 5 parallel GETs a second: a sixth of the limit
                for name, send in (("gateway", through), ("direct", direct)):
                    results[name] += await asyncio.gather(*(send("/v1/users/me") for _ in range(5)))
                await asyncio.sleep(1.0)
            assert [r[0] for r in results["direct"]] == [200] * 20
            assert [r[0] for r in results["gateway"]] == [200] * 20  # no 429 RATE_BUDGET_EXHAUSTED
            waits = [await budget_wait_ms(session, gw.url, request_id) for _, request_id, _ in results["gateway"]]
            assert waits == [0.0] * 20  # and no wait for a slot
            assert max(r[2] for r in results["gateway"]) < max(r[2] for r in results["direct"]) + 0.25
    finally:
        await runner.cleanup()


async def overload(send: Caller, seconds: float) -> list[int]:
    statuses: list[int] = []

    async def loop() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            statuses.append((await send("/v1/users/me"))[0])
            await asyncio.sleep(0.02)

    await asyncio.gather(*(loop() for _ in range(9)))  # three callers' worth, far past 20/min
    return statuses


async def test_an_overload_gets_the_keys_full_capacity_and_no_upstream_429(session: aiohttp.ClientSession, sim_limit_20: tuple[str, Simulator]) -> None:
    sim_url, sim = sim_limit_20
    direct = await overload(caller(session, sim_url, None), 3.0)
    direct_429 = sim.rate_limited
    assert direct.count(200) == 20 and direct_429 > 0  # the baseline: the capacity, and 429s beyond it

    async with gateway(document(sim_url, 20)) as gw:
        through = await overload(caller(session, gw.url, WEB_TOKEN), 3.0)
    assert through.count(200) == direct.count(200) == 20  # the whole capacity, not a part of it
    assert sim.rate_limited == direct_429  # and the upstream never had to refuse one
    assert set(through) == {200, 429}


async def test_a_quiet_client_beside_a_noisy_one_gets_what_it_asks(session: aiohttp.ClientSession) -> None:
    async def run(noisy: Caller, quiet: Caller) -> list[int]:
        quiet_statuses: list[int] = []

        async def quiet_loop() -> None:
            for _ in range(8):
                quiet_statuses.append((await quiet("/v1/users/me"))[0])
                await asyncio.sleep(1.0)

        await asyncio.gather(overload(noisy, 8.0), quiet_loop())
        return quiet_statuses

    runner, sim_url, sim = await simulator(60)
    try:
        direct_quiet = await run(caller(session, sim_url, None), caller(session, sim_url, None))
        assert direct_quiet.count(200) < 8  # directly, the noisy one spends the key first
        rate_limited_direct = sim.rate_limited
        async with gateway(document(sim_url, 60)) as gw:
            quiet = await run(caller(session, gw.url, WEB_TOKEN), caller(session, gw.url, OPS_TOKEN))
        assert quiet == [200] * 8  # through the gateway, the quiet one gets every request
        assert sim.rate_limited == rate_limited_direct  # and the upstream refused none of the gateway's
    finally:
        await runner.cleanup()


async def test_the_upstreams_rate_limit_headers_account_for_an_outside_caller(session: aiohttp.ClientSession) -> None:
    runner, port, sim = await start_sim(SimConfig(port=0, rate_limit=30, rate_limit_headers=True, outside_per_minute=600, faults=Faults(latency_ms=2)))
    try:
        async with gateway(document(f"http://127.0.0.1:{port}", 30)) as gw:
            statuses = [(await call(session, "GET", f"{gw.url}/v1/users/me"))[0] for _ in range(40)]
        # the outside caller spends the key the gateway thinks it has: the headers say so, and
        # the gateway holds back instead of sending into the upstream's 429s
        assert statuses.count(200) < 30 and sim.rate_limited <= 1
    finally:
        await runner.cleanup()
