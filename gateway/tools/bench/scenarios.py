"""``pmc-gateway bench --scenarios``: the rate budget against calling PinmyCal directly.

One run, side by side: the simulator enforcing the real rule (N per rolling 60 s per key,
429 + Retry-After beyond it), the same callers once straight to it and once through two
gateway replicas sharing one private ``redis-server``. Every scenario and target has its own
API key, so all of them run at once and no window is shared. Printed per scenario, target and
client: answered 200, refusals by what held them back, upstream 429s, p50/p99 latency, and
the most requests any key sent in a rolling 60 s against its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.settings import token_digest
from gateway.tools.bench.flaky import render_flaky, run_flaky
from gateway.tools.bench.read_scenarios import ReadScenarios, render_read_scenarios
from gateway.tools.bench.runner import ADMIN_TOKEN, Bench, _free_port, _wait_http
from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim

LIMIT = 120
READER = "reader"  # the shared-read scenarios' callers (read_scenarios.py)
WEBHOOK_SECRET = b"whsec_scenarios"


@dataclass(frozen=True)
class Client:
    name: str
    per_second: float  # requests started per second…
    together: int = 1  # …in bursts of this many, in parallel
    share: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    seconds: float
    clients: tuple[Client, ...]


def scenarios(scale: float) -> tuple[Scenario, ...]:
    return (
        Scenario("bursts", "bursts under the limit: 5 parallel GETs every 10 s (a quarter of the limit)", 60 * scale, (Client("web", 0.5, together=5),)),
        Scenario("overload", "three callers at 3x the limit together", 30 * scale, tuple(Client(f"caller{i}", 2.0) for i in (1, 2, 3))),
        Scenario(
            "neighbours",
            "a noisy client (6/s), a batch job (3/s, share 2) and a quiet client (0.5/s) on one key",
            60 * scale,
            (Client("noisy", 6.0), Client("batch", 3.0, share=2), Client("quiet", 0.5)),
        ),
    )


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, status: int, body: bytes, seconds: float) -> None:
        if status == 200:
            self.statuses["ok"] += 1
            self.latencies.append(seconds)
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        if status == 429 and payload.get("source") == "gateway":
            self.statuses[f"refused:{payload.get('limit', '?')}"] += 1
        elif status == 429:
            self.statuses["upstream429"] += 1
        else:
            self.statuses[f"status:{status}"] += 1


def _key(scenario: str, target: str) -> str:
    return f"pmc_live_{scenario}_{target}_key"


def _config(port: int, sim_url: str, redis_url: str, all_scenarios: tuple[Scenario, ...], max_wait_ms: int, reads: dict[str, str]) -> str:
    lines = [
        f'[server]\nlisten = "127.0.0.1:{port}"\n[store]\nurl = "{redis_url}"\n[upstream]\nbase_url = "{sim_url}"',
        f"[budget]\nmax_wait_ms = {max_wait_ms}\n[retry]\nmax_attempts = 1\n[telemetry]\nprometheus = true",
        '[webhooks]\nsecret_envs = ["SCENARIO_WEBHOOK_SECRET"]',
        '[reads]\ncoalesce = true\n[reads.routes."/v1/availability"]\nfresh_s = 10\nstale_if_error_s = 3600\ninvalidated_by = ["booking"]',
    ]
    for scenario in all_scenarios:
        lines.append(f'[environments.{scenario.name}]\napi_key_env = "SCENARIO_{scenario.name.upper()}_KEY"\nrate_limit_per_minute = {LIMIT}')
    for environment, base_url in reads.items():
        lines.append(f'[environments.{environment}]\napi_key_env = "SCENARIO_{environment.upper()}_KEY"\nrate_limit_per_minute = {LIMIT}\nbase_url = "{base_url}"')
    lines.append(f'[clients.{READER}]\ntoken_sha256 = "{token_digest(_token(READER))}"\nenvironments = {json.dumps(sorted(reads))}')
    names = sorted({c.name for s in all_scenarios for c in s.clients})
    for name in names:
        share = max(c.share for s in all_scenarios for c in s.clients if c.name == name)
        envs = [s.name for s in all_scenarios if any(c.name == name for c in s.clients)]
        lines.append(f'[clients.{name}]\ntoken_sha256 = "{token_digest(_token(name))}"\nenvironments = {json.dumps(envs)}\nshare = {share}')
    return "\n".join(lines) + "\n"


def _token(client: str) -> str:
    return f"scenario-token-{client}-0001"


async def _drive(
    session: aiohttp.ClientSession, scenario: Scenario, client: Client, url: Callable[[int], str], headers: dict[str, str], tally: Tally
) -> None:
    period = client.together / client.per_second
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []

    async def one() -> None:
        began = time.monotonic()
        try:
            async with session.get(url(len(tasks)), headers=headers) as answer:
                body = await answer.read()
                tally.add(answer.status, body, time.monotonic() - began)
        except (aiohttp.ClientError, TimeoutError):
            tally.statuses["error"] += 1

    n = 0
    while (due := started + n * period) < started + scenario.seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks += [asyncio.create_task(one()) for _ in range(client.together)]
        n += 1
    await asyncio.gather(*tasks)


def _at(bases: tuple[str, ...], path: str) -> Callable[[int], str]:
    """The i-th request's URL: the bases take turns (two replicas)."""
    return lambda i: f"{bases[i % len(bases)]}{path}"


def _most_in_a_minute(times: list[float]) -> int:
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 60) - i for i, t in enumerate(ordered)), default=0)


async def _run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    scale = 0.25 if args.quick else 1.0
    plan = scenarios(scale)
    redis_url = bench.start_redis()
    if redis_url is None:
        raise SystemExit("pmc-gateway bench --scenarios: needs redis-server (or --redis URL) for two replicas")
    runner, sim_port, sim = await start_sim(SimConfig(port=0, rate_limit=LIMIT, faults=Faults(latency_ms=args.latency_ms), seed=1))
    sim_url = f"http://127.0.0.1:{sim_port}"
    reads = ReadScenarios(scale=scale, latency_ms=args.latency_ms, limit=LIMIT, webhook_secret=WEBHOOK_SECRET)
    read_environments = await reads.start()
    env = {f"SCENARIO_{s.name.upper()}_KEY": _key(s.name, "gateway") for s in plan}
    env |= {f"SCENARIO_{name.upper()}_KEY": _key(name, "gateway") for name in read_environments}
    env["PMC_GATEWAY_ADMIN_TOKEN"] = ADMIN_TOKEN
    env["SCENARIO_WEBHOOK_SECRET"] = WEBHOOK_SECRET.decode()
    replicas = []
    for _ in range(2):
        port = _free_port()
        config = bench.tmp / f"scenario-gateway-{port}.toml"
        config.write_text(_config(port, sim_url, redis_url, plan, args.max_wait_ms, read_environments))
        bench.spawn([sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)], bench.other_cpus | bench.proxy_cpu, env)
        replicas.append(f"http://127.0.0.1:{port}")
    for replica in replicas:
        await asyncio.to_thread(_wait_http, f"{replica}/_gateway/health")

    tallies: dict[tuple[str, str, str], Tally] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        drives = []
        for scenario in plan:
            for client in scenario.clients:
                direct = tallies[(scenario.name, "direct", client.name)] = Tally()
                through = tallies[(scenario.name, "gateway", client.name)] = Tally()
                direct_headers = {"Authorization": f"Bearer {_key(scenario.name, 'direct')}"}
                gateway_headers = {"Authorization": f"Bearer {_token(client.name)}", "X-PMC-Environment": scenario.name}
                # Each client asks its own question (its own query): these scenarios measure the
                # rate budget, so no client's read joins another's (that is the shared-read scenarios').
                path = f"/v1/users/me?caller={client.name}"
                drives.append(_drive(session, scenario, client, _at((sim_url,), path), direct_headers, direct))
                drives.append(_drive(session, scenario, client, _at(tuple(replicas), path), gateway_headers, through))
        read_rows = asyncio.create_task(
            reads.run(
                replicas,
                lambda name: {"Authorization": f"Bearer {_token(READER)}", "X-PMC-Environment": name},
                lambda name: _key(name, "direct"),
            )
        )
        await asyncio.gather(*drives)
        result = _result(plan, tallies, sim, args)
        result["readScenarios"] = await read_rows
    await runner.cleanup()
    await reads.close()
    # Alone, after the others: it measures a tail, which the others' load would blur.
    result["flaky"] = await run_flaky(bench, requests=500 if args.quick else 2000)
    return result


def _result(plan: tuple[Scenario, ...], tallies: dict[tuple[str, str, str], Tally], sim: Simulator, args: argparse.Namespace) -> dict[str, Any]:
    sent: dict[str, list[float]] = {}
    for seen in sim.received:
        sent.setdefault(seen["authorization"].removeprefix("Bearer "), []).append(seen["t"])
    scenario_rows = []
    for scenario in plan:
        rows = []
        for target in ("direct", "gateway"):
            for client in scenario.clients:
                tally = tallies[(scenario.name, target, client.name)]
                lat = sorted(tally.latencies)
                rows.append(
                    {
                        "target": target,
                        "client": client.name,
                        "asked": sum(tally.statuses.values()),
                        "ok": tally.statuses["ok"],
                        "refused": {k.split(":", 1)[1]: v for k, v in tally.statuses.items() if k.startswith("refused:")},
                        "upstream429": tally.statuses["upstream429"],
                        "otherErrors": sum(v for k, v in tally.statuses.items() if k.startswith(("status:", "error"))),
                        "p50Ms": round(statistics.median(lat) * 1000, 1) if lat else None,
                        "p99Ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None,
                    }
                )
        scenario_rows.append(
            {
                "name": scenario.name,
                "title": scenario.title,
                "seconds": scenario.seconds,
                "rows": rows,
                "mostSentIn60s": {t: _most_in_a_minute(sent.get(_key(scenario.name, t), [])) for t in ("direct", "gateway")},
            }
        )
    return {"limitPerMinute": LIMIT, "latencyMs": args.latency_ms, "maxWaitMs": args.max_wait_ms, "replicas": 2, "scenarios": scenario_rows}


def render(result: dict[str, Any]) -> str:
    out = [
        f"rate budget scenarios: limit {result['limitPerMinute']}/min per key, simulator at ~{result['latencyMs']:g} ms, "
        f"{result['replicas']} gateway replicas on one redis-server, budget.max_wait_ms {result['maxWaitMs']}",
    ]
    for scenario in result["scenarios"]:
        out += ["", f"{scenario['name']} ({scenario['seconds']:g} s): {scenario['title']}"]
        out.append(f"  {'target':8} {'client':8} {'asked':>6} {'200':>6} {'refused (limit)':>22} {'upstream 429':>13} {'p50 ms':>8} {'p99 ms':>8} {'added p50/p99':>14}")
        direct = {row["client"]: row for row in scenario["rows"] if row["target"] == "direct"}
        for row in scenario["rows"]:
            refused = ", ".join(f"{k} {v}" for k, v in sorted(row["refused"].items())) or "0"
            p50 = "-" if row["p50Ms"] is None else f"{row['p50Ms']:.1f}"
            p99 = "-" if row["p99Ms"] is None else f"{row['p99Ms']:.1f}"
            base, added = direct[row["client"]], ""
            if row["target"] == "gateway" and None not in (row["p50Ms"], row["p99Ms"], base["p50Ms"], base["p99Ms"]):
                added = f"{row['p50Ms'] - base['p50Ms']:+.1f}/{row['p99Ms'] - base['p99Ms']:+.1f}"
            out.append(f"  {row['target']:8} {row['client']:8} {row['asked']:>6} {row['ok']:>6} {refused:>22} {row['upstream429']:>13} {p50:>8} {p99:>8} {added:>14}")
        most = scenario["mostSentIn60s"]
        out.append(
            f"  most requests any rolling 60 s sent to the upstream: direct {most['direct']}, "
            f"gateway {most['gateway']} (limit {result['limitPerMinute']})"
        )
    out += render_read_scenarios(result.get("readScenarios", []))
    out += render_flaky(result.get("flaky"))
    return "\n".join(out)


def run_from_args(args: argparse.Namespace) -> int:
    bench = Bench(args)
    try:
        result = asyncio.run(_run(args, bench))
    finally:
        bench.close()
    print(json.dumps(result, indent=2) if args.json else render(result), flush=True)
    return 0
