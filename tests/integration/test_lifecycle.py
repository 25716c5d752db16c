"""A real ``pmc-gateway serve`` process: drain on SIGTERM, and no secret in its output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.tools.sim.server import Simulator
from tests.support.servers import (
    SECRET_VALUES,
    ScriptedUpstream,
    Step,
    call,
    gateway_document,
    start_gateway_process,
)


async def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(upstream: ScriptedUpstream, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(delay_s=1.5, body={"status": "ok", "slow": True})
    process = start_gateway_process(gateway_document(upstream.url, upstream={"attempt_timeout_ms": 3000, "deadline_ms": 5000}), tmp_path)
    try:
        in_flight = asyncio.create_task(call(session, "GET", f"{process.url}/v1/users/me"))
        while not upstream.received:  # the request has reached the upstream
            await asyncio.sleep(0.02)
        process.process.terminate()  # SIGTERM
        await asyncio.sleep(0.3)
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh:  # a new connection
                await call(fresh, "GET", f"{process.url}/_gateway/health")
        status, _, body = await in_flight
        assert status == 200 and json.loads(body)["slow"] is True
        code = await asyncio.to_thread(process.process.wait, 15)
        assert code == 0
    finally:
        process.kill()
    events = [line.get("event") for line in process.log_lines()]
    assert "draining" in events and events[-1] == "stopped"
    # the drained request is accounted for (after its answer, before the process stopped)
    drained = [line for line in process.log_lines() if line.get("event") == "request" and line.get("route") == "/v1/users/me"]
    assert [line["status"] for line in drained] == [200]


async def test_sigterm_gives_up_after_the_grace_period(upstream: ScriptedUpstream, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(delay_s=20)
    document = gateway_document(upstream.url, server={"shutdown_grace_s": 1}, upstream={"attempt_timeout_ms": 30000, "deadline_ms": 60000})
    process = start_gateway_process(document, tmp_path)
    try:
        in_flight = asyncio.create_task(call(session, "GET", f"{process.url}/v1/users/me"))
        while not upstream.received:
            await asyncio.sleep(0.02)
        started = time.monotonic()
        process.process.terminate()
        code = await asyncio.to_thread(process.process.wait, 15)
        assert code == 0 and time.monotonic() - started < 6
        with pytest.raises(aiohttp.ClientError):
            await in_flight
    finally:
        process.kill()


async def test_no_key_or_token_in_anything_the_gateway_prints(sim: tuple[str, Simulator], tmp_path: Path, session: aiohttp.ClientSession) -> None:
    sim_url, simulator = sim
    simulator.expired.add("pmc_live_TESTKEY_live_0001")  # provoke 401s from upstream too
    process = start_gateway_process(gateway_document(sim_url), tmp_path)
    try:
        for path, headers in (
            ("/v1/users/me", {}),
            ("/v1/users/me", {"X-PMC-Environment": "test"}),
            ("/v1/bookings/../x", {}),
            ("/v1/users/me", {"Authorization": "Bearer wrong-token"}),
            ("/_gateway/status", {}),
            ("/nowhere", {}),
        ):
            await call(session, "GET", f"{process.url}{path}", headers=headers)
        await call(session, "POST", f"{process.url}/v1/bookings", json={"bad": True})
    finally:
        assert process.terminate() == 0
    output = process.output()
    assert output.count('"event":"request"') >= 6
    for secret in SECRET_VALUES:
        assert secret not in output, f"a secret leaked into the gateway's output: {secret[:8]}…"


def test_a_serving_process_freezes_its_start_up_objects_and_collects_less_often() -> None:
    code = (
        "import gc; from gateway.serve import GC_YOUNG_THRESHOLD, tune_gc; before = gc.get_freeze_count(); tune_gc(); "
        "print(before, gc.get_freeze_count(), gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, frozen, threshold_set = out.stdout.split()
    assert int(before) == 0 and int(frozen) > 10_000 and threshold_set == "True"  # the SDKs and aiohttp alone are more


async def test_a_resource_that_fails_to_start_closes_those_started_before_it(redis_url: str, tmp_path: Path) -> None:
    """The webhook relay (the last resource) cannot start: its CA bundle vanished after the
    config was read. The store, the breaker sync and the status heartbeat had started; all of
    them close, so the failed process leaves no Redis connection and no task behind."""
    import redis.asyncio as redis_client

    from gateway import settings as settings_module
    from gateway.app import build_components
    from gateway.serve import run_worker
    from tests.support.nginx import private_ca
    from tests.support.servers import BASE_ENV

    ca_file, _, _ = private_ca(tmp_path, "localhost")
    document = gateway_document("http://127.0.0.1:9", store={"url": redis_url}, upstream={"ca_file": str(ca_file)})
    config = settings_module.parse(document)
    components = build_components(config, settings_module.resolve_secrets(config, BASE_ENV))
    admin = redis_client.Redis.from_url(redis_url)
    try:
        before = len(await admin.client_list())
        ca_file.unlink()  # e.g. a secret volume that is not mounted yet
        tasks_before = {t.get_name() for t in asyncio.all_tasks()}
        with pytest.raises(OSError):
            await run_worker(components, stop=asyncio.Event())
        await asyncio.sleep(0)
        assert len(await admin.client_list()) == before  # the store closed its connections
        left = {t.get_name() for t in asyncio.all_tasks()} - tasks_before
        assert not left & {"store-watch", "breaker-sync", "status-publish", "triage-writer", "webhook-relay"}, left
    finally:
        await admin.aclose()
