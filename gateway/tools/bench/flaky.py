"""The flaky-upstream scenario of ``pmc-gateway bench --scenarios``: the tail that retries cannot
cut. The simulator answers in ~20 ms, 2 % of calls 503 and 1 % hang 5 s; the same GETs (bounded
count, fixed concurrency) go direct, through a gateway without hedging, and through one with
``[hedging]``. Counted: success, p50/p99/max, and upstream attempts per request (the simulator's
own count of what reached it).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.settings import token_digest
from gateway.tools.bench.runner import ADMIN_TOKEN, Bench, _free_port, _wait_http
from gateway.tools.sim.server import Faults, SimConfig, start_sim

TOKEN = "flaky-scenario-token-0001"
KEY = "pmc_live_flaky_scenario_key"
PATH = "/v1/availability?eventTypeId=evt_demo&date=2026-03-10&timezone=UTC"
HEDGING = '[hedging]\nroutes = ["/v1/availability"]\nquantile = 0.95\nmin_delay_ms = 20\nmax_delay_ms = 1000\nmax_budget_use = 0.5'


def _config(port: int, sim_url: str, hedged: bool) -> str:
    return "\n".join(
        [
            f'[server]\nlisten = "127.0.0.1:{port}"\n[upstream]\nbase_url = "{sim_url}"\nattempt_timeout_ms = 1000\ndeadline_ms = 8000',
            '[environments.live]\napi_key_env = "FLAKY_KEY"\nrate_limit_per_minute = 600000',
            f'[clients.flaky]\ntoken_sha256 = "{token_digest(TOKEN)}"\nenvironments = ["live"]',
            "[retry]\nmax_attempts = 3\nbase_delay_ms = 10\nmax_delay_ms = 50\nbudget_percent = 20",
            "[breaker]\nfail_max = 1000\n[webhooks]\nsecret_envs = []",
            HEDGING if hedged else "",
        ]
    ) + "\n"


async def _load(session: aiohttp.ClientSession, url: str, headers: dict[str, str], requests: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    ok = 0
    queue = iter(range(requests))

    async def worker() -> None:
        nonlocal ok
        for _ in queue:
            began = time.monotonic()
            try:
                async with session.get(url, headers=headers) as answer:
                    await answer.read()
                    ok += answer.status == 200
            except (aiohttp.ClientError, TimeoutError):
                pass
            latencies.append(time.monotonic() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "success": ok / requests,
        "p50Ms": round(statistics.median(ordered) * 1000, 1),
        "p99Ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "maxMs": round(ordered[-1] * 1000, 1),
    }


async def run_flaky(bench: Bench, *, requests: int, concurrency: int = 20) -> dict[str, Any]:
    rows = []
    for target in ("direct", "gateway, no hedging", "gateway, hedging"):
        # A simulator per target: each starts from the same seed and counts only its own calls.
        faults = Faults(latency_ms=2, extra_latency_ms=18, error_rate=0.02, timeout_rate=0.01, hang_s=5)
        runner, sim_port, sim = await start_sim(SimConfig(port=0, rate_limit=0, seed=21, faults=faults))
        sim_url = f"http://127.0.0.1:{sim_port}"
        if target == "direct":
            url, headers = f"{sim_url}{PATH}", {"Authorization": f"Bearer {KEY}"}
        else:
            port = _free_port()
            config = Path(bench.tmp) / f"flaky-{port}.toml"
            config.write_text(_config(port, sim_url, hedged=target.endswith(", hedging")))
            env = {"FLAKY_KEY": KEY, "PMC_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
            bench.spawn([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)], bench.proxy_cpu, env)
            await asyncio.to_thread(_wait_http, f"http://127.0.0.1:{port}/_gateway/health")
            url, headers = f"http://127.0.0.1:{port}{PATH}", {"Authorization": f"Bearer {TOKEN}"}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            await _load(session, url, headers, min(200, requests), concurrency)  # warm: connections, and the route's latencies learnt
            sim.received.clear()
            row = await _load(session, url, headers, requests, concurrency)
        row["target"] = target
        row["attemptsPerRequest"] = round(len(sim.received) / requests, 3)
        rows.append(row)
        await runner.cleanup()
    return {"name": "flaky", "title": f"{requests:,} GETs, concurrency {concurrency}: ~20 ms, 2 % 503, 1 % hang 5 s", "rows": rows}


def render_flaky(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    out = ["", f"flaky upstream: {result['title']}", f"  {'target':22} {'success':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'attempts/request':>17}"]
    for row in result["rows"]:
        out.append(
            f"  {row['target']:22} {row['success'] * 100:>7.2f}% {row['p50Ms']:>8.1f} {row['p99Ms']:>8.1f} {row['maxMs']:>8.1f} {row['attemptsPerRequest']:>17.3f}"
        )
    return out
