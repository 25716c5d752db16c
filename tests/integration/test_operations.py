"""Operations: reload without dropping requests, refused bad reloads, key age, scale-out."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway import settings as settings_module
from gateway.core.clock import ManualClock
from tests.support.servers import (
    ADMIN_TOKEN,
    BASE_ENV,
    WEB_TOKEN,
    GatewayProcess,
    ScriptedUpstream,
    Step,
    call,
    gateway,
    gateway_document,
    start_gateway_process,
    to_toml,
)

NEW_TOKEN = "client-token-booking-web-rotated-0003"


async def traffic(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, statuses: list[int], token: str = WEB_TOKEN) -> None:
    while not stop.is_set():
        status, _, _ = await call(session, "GET", f"{url}/v1/users/me", token=token)
        statuses.append(status)
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("trigger", ["sighup", "endpoint"])
async def test_reload_under_traffic_rotates_tokens_and_keys_without_a_failed_request(trigger: str, upstream: ScriptedUpstream, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=200, delay_s=0.05)
    key_file = tmp_path / "pmc_live"
    key_file.write_text("pmc_live_before_rotation_01\n")
    document = gateway_document(upstream.url)
    document["environments"]["live"] = {"api_key_file": str(key_file), "rate_limit_per_minute": 6000}
    process = start_gateway_process(document, tmp_path)
    processes.append(process)
    statuses: list[int] = []
    stop = asyncio.Event()
    runners = [asyncio.create_task(traffic(session, process.url, stop, statuses)) for _ in range(4)]
    await asyncio.sleep(0.5)

    # the operator rotates: a new key in the file, a second token for the client (both valid during the switch)
    key_file.write_text("pmc_live_after_rotation_002\n")
    document["clients"]["booking-web-next"] = {"token_sha256": settings_module.token_digest(NEW_TOKEN), "environments": ["live"]}
    process.config_path.write_text(to_toml({**document, "server": {**document["server"], "listen": process.url.split("//")[1]}}))
    if trigger == "sighup":
        process.process.send_signal(signal.SIGHUP)
    else:
        status, _, body = await call(session, "POST", f"{process.url}/_gateway/reload", token=ADMIN_TOKEN)
        assert status == 200 and json.loads(body) == {"status": "ok", "problems": [], "needsRestart": []}
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*runners)

    assert len(statuses) > 20 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    status, _, _ = await call(session, "GET", f"{process.url}/v1/users/me", token=NEW_TOKEN)
    assert status == 200
    keys = [r["headers"]["Authorization"] for r in upstream.received]
    assert keys[0] == "Bearer pmc_live_before_rotation_01" and keys[-1] == "Bearer pmc_live_after_rotation_002"
    assert keys == sorted(keys, key=lambda k: k.endswith("002"))  # one switch, never back
    assert "config_reloaded" in [line.get("event") for line in process.log_lines()]


async def test_a_bad_reload_is_refused_and_the_old_config_stays(upstream: ScriptedUpstream, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    process = start_gateway_process(gateway_document(upstream.url), tmp_path)
    processes.append(process)
    good = process.config_path.read_text()
    process.config_path.write_text(good.replace("[retry]", "[retry]\nmax_attempts = \"many\"\nbogus_key = 1"))
    status, _, body = await call(session, "POST", f"{process.url}/_gateway/reload", token=ADMIN_TOKEN)
    answer = json.loads(body)
    assert status == 422 and answer["status"] == "refused"
    assert "retry.max_attempts: Input should be a valid integer, got 'many'" in answer["problems"]  # the value echoed
    assert "retry.bogus_key: unknown key" in answer["problems"]
    process.process.send_signal(signal.SIGHUP)  # the same file by signal: refused too, logged
    await asyncio.sleep(0.3)
    assert (await call(session, "GET", f"{process.url}/v1/users/me"))[0] == 200  # still serving on the old config
    assert (await call(session, "POST", f"{process.url}/_gateway/reload", token=WEB_TOKEN))[0] == 401
    refusals = [line for line in process.log_lines() if line.get("event") == "reload_refused"]
    assert len(refusals) == 2


async def test_reload_reports_what_needs_a_restart(upstream: ScriptedUpstream, tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)  # a reload reads secrets from the process environment
    document = gateway_document(upstream.url)
    path = tmp_path / "gw.toml"
    path.write_text(to_toml(document))
    async with gateway(document, config_path=path) as gw:
        path.write_text(to_toml({**document, "breaker": {"fail_max": 9}}))
        status, _, body = await call(session, "POST", f"{gw.url}/_gateway/reload", token=ADMIN_TOKEN)
    assert status == 200 and json.loads(body)["needsRestart"] == ["breaker"]


@pytest.mark.parametrize(("age_days", "level"), [(59, "ok"), (61, "warn"), (91, "alarm")])
async def test_api_key_age_warnings(age_days: int, level: str, upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    today = date.fromtimestamp(clock.wall())
    document = gateway_document(upstream.url)
    document["environments"]["live"]["api_key_rotated_at"] = (today - timedelta(days=age_days)).isoformat()
    async with gateway(document, clock=clock) as gw:
        status = json.loads((await call(session, "GET", f"{gw.url}/_gateway/status", token=ADMIN_TOKEN))[2])
        metrics = (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN))[2].decode()
    assert status["apiKeys"][0] == {"environment": "live", "ageDays": float(age_days), "level": level}
    assert f'pmc_gateway_api_key_age_days{{pmc_environment="live"}} {float(age_days)}' in metrics


async def test_a_key_from_a_variable_is_aged_from_when_a_replica_first_saw_it(upstream: ScriptedUpstream, redis_url: str, session: aiohttp.ClientSession) -> None:
    """Regression (issue 21): api_key_env without api_key_rotated_at had no age series at all,
    so PmcGatewayApiKeyOld could never fire."""
    import hashlib

    import redis

    from tests.support.servers import LIVE_KEY

    clock = ManualClock()
    fingerprint = hashlib.sha256(f"Bearer {LIVE_KEY}".encode()).hexdigest()[:16]
    with redis.Redis.from_url(redis_url) as client:  # another replica saw this key 95 days ago
        client.set(f"pmcgw:seen:apikey:{fingerprint}", repr(clock.wall() - 95 * 86400))
    document = gateway_document(upstream.url, store={"url": redis_url})
    async with gateway(document, clock=clock) as gw:
        metrics = (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN))[2].decode()
        status = json.loads((await call(session, "GET", f"{gw.url}/_gateway/status", token=ADMIN_TOKEN))[2])
    assert 'pmc_gateway_api_key_age_days{pmc_environment="live"} 95.0' in metrics
    assert 'pmc_gateway_api_key_age_days{pmc_environment="test"} 0.0' in metrics  # first seen now
    assert {k["environment"]: k["level"] for k in status["apiKeys"]} == {"live": "alarm", "test": "ok"}


async def test_key_age_is_logged_at_start(upstream: ScriptedUpstream, tmp_path: Path, processes: list[GatewayProcess]) -> None:
    clockless = gateway_document(upstream.url)
    old = (date.today() - timedelta(days=91)).isoformat()
    older = (date.today() - timedelta(days=61)).isoformat()
    clockless["environments"]["live"]["api_key_rotated_at"] = old
    clockless["environments"]["test"]["api_key_rotated_at"] = older
    process = start_gateway_process(clockless, tmp_path)
    processes.append(process)
    process.terminate()
    lines = [line for line in process.log_lines() if line.get("event") == "api_key_old"]
    assert {(line["environment"], line["level"]) for line in lines} == {("live", "error"), ("test", "warning")}


async def test_three_processes_share_one_budget_and_one_breaker(upstream: ScriptedUpstream, redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    document = gateway_document(
        upstream.url,
        store={"url": redis_url},
        environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 600}},
        budget={"max_wait_ms": 300, "burst": 1},
        breaker={"fail_max": 3, "reset_timeout_s": 30},
        retry={"max_attempts": 1},
    )
    document["clients"]["booking-web"]["environments"] = ["live"]
    processes += [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(3)]
    statuses: list[int] = []

    async def caller(url: str) -> None:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            statuses.append((await call(session, "GET", f"{url}/v1/users/me"))[0])

    await asyncio.gather(*(caller(p.url) for p in processes for _ in range(5)))
    times = sorted(r["t"] for r in upstream.received)
    span = times[-1] - times[0]
    assert statuses.count(429) > 0 and len(times) <= span / 0.1 + 2  # one budget for all three
    windows = [sum(1 for t in times if start <= t < start + 1.0) for start in times]
    assert max(windows) <= 11

    upstream.default = Step(status=500)
    first = processes[0]
    for _ in range(3):
        await call(session, "GET", f"{first.url}/v1/availability")
    await asyncio.sleep(1.0)
    before = len(upstream.received)
    for other in processes[1:]:
        status, _, body = await call(session, "GET", f"{other.url}/v1/availability")
        assert (status, json.loads(body)["code"]) == (503, "CIRCUIT_OPEN")
    assert len(upstream.received) == before
