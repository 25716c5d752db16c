"""The shipped rules and dashboards on a real Prometheus scraping a real gateway (issue 21).

Prometheus (Debian's ``prometheus``, installed by .ci/run) runs the generated rules with
every window compressed 60x (a minute becomes a second), scrapes the gateway every second,
and the test walks scripted phases: healthy traffic with retries, an error burst, idle. After
each it queries every dashboard expression and every rule through the HTTP API and checks
what an SRE would see: no parse or evaluation error, no NaN or empty answer where a number
belongs, pages quiet on healthy traffic, the fast burn firing on a real one, and an idle key
neither firing nor silently resolving.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dashboards import slo
from gateway.tools.sim.server import Faults, SimConfig, start_sim
from tests.support.servers import (
    ADMIN_TOKEN,
    call,
    free_port,
    gateway,
    gateway_document,
    stop_process,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def compressed(rules: str) -> str:
    """Every duration 60x shorter: ``[1h]`` → ``[60s]``, ``for: 2m`` → ``for: 2s``."""

    def shorter(match: re.Match[str]) -> str:
        seconds = int(match.group(2)) * SECONDS[match.group(3)] // 60
        return f"{match.group(1)}{max(1, seconds)}s{match.group(4)}"

    rules = re.sub(r"(\[)(\d+)([smhd])(\])", shorter, rules)
    rules = re.sub(r"(for: )(\d+)([smhd])()", shorter, rules)
    return rules.replace("interval: 30s", "interval: 1s")


def dashboard_expressions() -> list[str]:
    exprs = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    return [e.replace("$__rate_interval", "5s").replace("${client:regex}", ".*") for e in exprs]


def rule_expressions(kind: str) -> list[str]:
    """The recording rules' (``record``) or the alerts' (``alert``) expressions."""
    import yaml

    groups = yaml.safe_load(compressed(slo.rules_yaml(slo.Slos())))["groups"]
    return [r["expr"] for g in groups for r in g["rules"] if kind in r]


# Families whose label sets (method, route, status, reason) only exist once traffic has made them:
# nothing to pre-create at start-up. Everything else must answer a number from the first scrape.
BORN_WITH_TRAFFIC: tuple[str, ...] = ()  # SPEC §8: every family exists from start-up
# Series of events healthy traffic never has: a replay, a refusal the gateway made, a locked-out caller.
BORN_WITH_AN_EVENT: tuple[str, ...] = ()  # SPEC §8: a panel reads 0 before its first event, not empty or NaN


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is needed: apt-get install -y prometheus (.ci/run installs it)")
        self.port = free_port()
        (tmp / "rules.yml").write_text(compressed(slo.rules_yaml(slo.Slos())))
        (tmp / "token").write_text(ADMIN_TOKEN)
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{tmp / 'rules.yml'}]\n"
            "scrape_configs:\n"
            "  - job_name: pmc-gateway\n"
            "    metrics_path: /_gateway/metrics\n"
            f"    authorization: {{type: Bearer, credentials_file: {tmp / 'token'}}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.process = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("wb"),
        )
        self.url = f"http://127.0.0.1:{self.port}"

    async def query(self, session: aiohttp.ClientSession, expr: str) -> dict[str, Any]:
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as answer:
            return dict(await answer.json())

    async def firing(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """alertname → state (pending or firing)."""
        async with session.get(f"{self.url}/api/v1/alerts") as answer:
            alerts = (await answer.json())["data"]["alerts"]
        return {a["labels"]["alertname"]: a["state"] for a in alerts}

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{self.url}/-/ready") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert self.process.poll() is None, "prometheus exited"
            await asyncio.sleep(0.2)
        raise TimeoutError("prometheus did not become ready")

    async def wait_scraped(self, session: aiohttp.ClientSession) -> None:
        """Until the gateway has been scraped a few times (rate() needs two samples)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = await self.query(session, "count_over_time(up[1m])")
            if values(result) and values(result)[0] >= 4:
                up = values(await self.query(session, "up"))
                assert up == [1.0], "prometheus cannot scrape the gateway"
                await asyncio.sleep(1.5)  # and the rules have been evaluated since
                return
            await asyncio.sleep(0.5)
        raise TimeoutError("prometheus never scraped the gateway")

    def stop(self) -> None:
        stop_process(self.process)


async def traffic(session: aiohttp.ClientSession, url: str, seconds: float) -> list[int]:
    statuses: list[int] = []

    async def loop() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for path in ("/v1/users/me", "/v1/availability?eventTypeId=evt_demo&date=2026-03-10&timezone=Asia/Kolkata"):
                statuses.append((await call(session, "GET", f"{url}{path}"))[0])
            await asyncio.sleep(0.05)

    await asyncio.gather(*(loop() for _ in range(4)))
    return statuses


def values(result: dict[str, Any]) -> list[float]:
    data = result["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(sample["value"][1]) for sample in data["result"]]


async def check_every_expression(prom: Prometheus, session: aiohttp.ClientSession, *, traffic_seen: bool, active: bool) -> str:
    """Problems with the shipped expressions: any parse or evaluation error; NaN or an empty
    answer where a number belongs (alerts are empty when quiet; quantiles are NaN when idle)."""
    problems = []
    for expr in [*dashboard_expressions(), *rule_expressions("record"), *rule_expressions("alert")]:
        result = await prom.query(session, expr)
        if result.get("status") != "success":
            problems.append(f"error {result.get('error')}: {expr[:160]}")
            continue
        if expr in rule_expressions("alert"):
            continue
        found = values(result)
        quantile = "histogram_quantile" in expr
        event_born = any(e in expr for e in BORN_WITH_AN_EVENT)
        if any(math.isnan(v) for v in found) and (active or not quantile) and not (quantile and event_born):
            problems.append(f"NaN: {expr[:160]}")
        excused = (not traffic_seen and any(f in expr for f in BORN_WITH_TRAFFIC) and "vector(0)" not in expr) or any(
            e in expr for e in BORN_WITH_AN_EVENT
        ) or expr.rstrip().endswith("> 0)") or (quantile and not active)
        if not found and not excused:
            problems.append(f"empty: {expr[:160]}")
    return "\n".join(problems)


@pytest.fixture
async def prometheus_and_gateway(tmp_path: Path, session: aiohttp.ClientSession) -> AsyncIterator[tuple[Prometheus, str, str]]:
    runner, port, _ = await start_sim(SimConfig(port=0, rate_limit=0, faults=Faults(latency_ms=5, error_rate=0.03), seed=4))
    sim_url = f"http://127.0.0.1:{port}"
    document = gateway_document(
        sim_url,
        retry={"max_attempts": 3, "base_delay_ms": 5, "max_delay_ms": 20, "budget_percent": 50},
        reads={"routes": {"/v1/availability": {"fresh_s": 1}}},  # the shared-read panels' series
        hedging={"routes": ["/v1/availability"]},  # and the hedging panel's
    )
    try:
        async with gateway(document) as gw:
            prom = Prometheus(tmp_path, gw.url.removeprefix("http://"))
            # The gateway runs in this interpreter, whose heap holds what every earlier test left:
            # a full collection of it pauses the loop for tens of ms, which the gateway would
            # book as its own added latency and page on. A serving gateway freezes its start-up
            # heap (serve.tune_gc); so does this one, for the test.
            gc.collect()
            gc.freeze()
            try:
                await prom.wait_ready(session)
                yield prom, gw.url, sim_url
            finally:
                gc.unfreeze()
                prom.stop()
    finally:
        await runner.cleanup()


async def test_rules_and_dashboards_on_a_real_prometheus(prometheus_and_gateway: tuple[Prometheus, str, str], session: aiohttp.ClientSession) -> None:
    prom, gw_url, sim_url = prometheus_and_gateway

    # 1. Before any traffic: every family exists, every ratio is a number.
    await prom.wait_scraped(session)
    assert await check_every_expression(prom, session, traffic_seen=False, active=False) == ""

    # 2. Healthy, with retries: 3 % upstream 5xx, retried away. Nothing pages.
    statuses = await traffic(session, gw_url, 12)
    assert statuses.count(200) > 0.99 * len(statuses)
    await asyncio.sleep(2)
    assert await check_every_expression(prom, session, traffic_seen=True, active=True) == ""
    retried = values(await prom.query(session, "sum(pmc_gateway_retries_total)"))
    assert retried and retried[0] > 0  # the healthy phase did retry
    pages = {name for name, _ in (await prom.firing(session)).items() if name.startswith(("PmcGatewayAvailability", "PmcGatewayAddedLatency"))}
    assert pages == set(), pages
    assert values(await prom.query(session, "pmc_gateway:availability_errors:ratio_rate5m")) == [0.0]

    # 3. A real burn: every upstream answer 5xx. The fast availability burn fires within seconds
    # of compressed time (minutes of real windows).
    async with session.post(f"{sim_url}/_sim/faults", json={"errorRate": 1.0}) as answer:
        assert answer.status == 200
    await traffic(session, gw_url, 8)
    deadline = time.monotonic() + 20
    while (await prom.firing(session)).get("PmcGatewayAvailabilityBurnFast") != "firing" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    alerts = await prom.firing(session)
    assert alerts.get("PmcGatewayAvailabilityBurnFast") == "firing", alerts
    assert "PmcGatewayAddedLatencyBurnFast" not in alerts  # the upstream failed, not the gateway

    # 4. Idle: the callers stop. No NaN anywhere, and the page does not silently resolve.
    await asyncio.sleep(8)
    assert await check_every_expression(prom, session, traffic_seen=True, active=False) == ""
    assert (await prom.firing(session)).get("PmcGatewayAvailabilityBurnFast") == "firing"
    budget_left = values(await prom.query(session, f"clamp_min(1 - (pmc_gateway:availability_errors:ratio_rate30d) / {1 - slo.Slos().availability:g}, 0)"))
    assert budget_left == [0.0]  # spent, and floored at 0 %, not -220


def test_the_compression_keeps_rule_names_and_shortens_windows() -> None:
    text = compressed(slo.rules_yaml(slo.Slos()))
    assert "pmc_gateway:availability_errors:ratio_rate5m" in text and "[5s]" in text and "[60s]" in text
    assert "[5m]" not in text and "for: 2s" in text
