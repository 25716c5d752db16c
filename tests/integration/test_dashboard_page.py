"""The built-in dashboard in a real headless Chromium: what it shows equals /_gateway/status."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest

from tests.support.servers import (
    ADMIN_TOKEN,
    ScriptedUpstream,
    Step,
    call,
    gateway,
    gateway_document,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1440,1000", "--virtual-time-budget=5000",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is needed for the page test: apt-get install -y chromium (.ci/run installs it)")
    return path


async def browse(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 90)
    return out.decode(errors="replace")


def field(dom: str, name: str) -> str:
    match = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', dom)
    assert match, f"{name} is not on the page"
    return match.group(1)


def pct(x: float, digits: int = 3) -> str:
    return f"{100 * x:.{digits}f} %"


def ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


async def test_dashboard_shows_what_status_says(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=200, delay_s=0.02)
    document = gateway_document(upstream.url, breaker={"fail_max": 2, "reset_timeout_s": 600}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        for _ in range(20):
            await call(session, "GET", f"{gw.url}/v1/users/me")
        upstream.then(Step(status=500), Step(status=502))
        for _ in range(3):
            await call(session, "GET", f"{gw.url}/v1/availability")  # two failures open its breaker, the third is refused
        url = f"{gw.url}/_gateway/dashboard#token={ADMIN_TOKEN}"
        dom = await browse(url, "--dump-dom")
        status = json.loads((await call(session, "GET", f"{gw.url}/_gateway/status", token=ADMIN_TOKEN))[2])
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        await browse(url, f"--screenshot={shot}")
        login = await browse(f"{gw.url}/_gateway/dashboard", "--dump-dom")  # no token: it asks for one
        failed_id = status["recentFailures"][1]["requestId"]
        record_dom = await browse(f"{gw.url}/_gateway/dashboard#token={ADMIN_TOKEN}&rid={failed_id}", "--dump-dom")
    five = status["slo"]["windows"]["last5m"]
    assert five["requests"] == 23 and five["errors"] == 3
    assert field(dom, "availability-5m") == pct(five["availability"])
    assert field(dom, "p95-5m") == ms(five["latencyP95Ms"])
    shown = dict(re.findall(r'<tr data-breaker="([^"]+)">.*?data-state="">([^<]+)<', dom))
    assert shown == {b["name"]: b["state"] for b in status["breakers"]}
    assert shown["live:/v1/availability"] == "open" and shown["live:/v1/users/me"] == "closed"
    assert [f["status"] for f in status["recentFailures"]][:3] == [503, 502, 500]
    assert status["recentFailures"][0]["requestId"] in dom  # failed requests listed with their requestIds
    assert shot.stat().st_size > 20_000
    assert 'id="login"' in login and re.search(r'<section id="login"(?! hidden)', login)
    record = re.search(r'<pre id="record-body">([^<]*)</pre>', record_dom)
    assert record and record.group(1).startswith(f"{failed_id}   GET /v1/availability   → 502")
    assert "#1  waited 0 ms  →  502" in record.group(1)
    # the budget table fits its panel, and each chart says its scale and its latest reading
    assert re.search(r'<section[^>]*data-fits="true"[^>]*><h2>Rate budgets', dom)
    scales = re.findall(r'<canvas id="chart-(\w+)"[^>]*data-scale="([^"]+)"', dom)
    assert {name for name, _ in scales} == {"availability", "latency"} and all("now" in scale for _, scale in scales)
