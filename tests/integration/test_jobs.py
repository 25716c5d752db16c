"""Async jobs end to end (issue 22): Prefer: wait, shared polls across callers and replicas,
replays from the store, and one story per requestId, against the simulator and a scripted upstream."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim
from tests.support.servers import (
    ADMIN_TOKEN,
    GatewayProcess,
    ScriptedUpstream,
    Step,
    call,
    gateway,
    gateway_document,
    start_gateway_process,
)
from tests.support.webhooks import Subscriber

pytestmark = pytest.mark.slow

BOOKING = {"eventTypeId": "evt_demo", "invitee": {"name": "Jordan Lee", "email": "jordan@company.com"}, "start": "2026-03-10T09:30:00Z", "timezone": "Asia/Kolkata"}


async def simulator(**config: Any) -> tuple[aiohttp.web.AppRunner, str, Simulator]:
    runner, port, sim = await start_sim(SimConfig(port=0, faults=Faults(latency_ms=2), seed=5, **config))
    return runner, f"http://127.0.0.1:{port}", sim


def job_polls(sim: Simulator) -> int:
    return sum(1 for r in sim.received if r["path"].startswith("/v1/jobs/"))


async def book(session: aiohttp.ClientSession, url: str, prefer: str) -> tuple[int, Any, dict[str, Any]]:
    status, headers, body = await call(session, "POST", f"{url}/v1/bookings", json=BOOKING, headers={"Prefer": prefer})
    return status, headers, json.loads(body)


@pytest.fixture
async def sim_jobs() -> AsyncIterator[tuple[str, Simulator]]:
    runner, url, sim = await simulator(job_eta_s=1.5)
    yield url, sim
    await runner.cleanup()


async def test_prefer_wait_returns_the_completed_job_with_its_polls_counted(sim_jobs: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    sim_url, sim = sim_jobs
    async with gateway(gateway_document(sim_url)) as gw:
        status, headers, body = await book(session, gw.url, "respond-async, wait=5")
        record = json.loads((await call(session, "GET", f"{gw.url}/_gateway/requests/{headers['X-Request-Id']}", token=ADMIN_TOKEN))[2])
    assert status == 200 and body["state"] == "completed" and body["result"]["bookingId"].startswith("bk_")
    assert headers["Preference-Applied"] == "wait=5"
    assert record["job"]["state"] == "completed" and record["job"]["polls"] == job_polls(sim) >= 1
    assert record["job"]["finishedAt"] is not None and record["bookingId"] == body["result"]["bookingId"]
    assert str(record["upstreamRequestId"]).startswith("req_")  # the 202's: the job answer names none


async def test_a_job_slower_than_the_wait_returns_the_original_202(sim_jobs: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    sim_url, _ = sim_jobs
    async with gateway(gateway_document(sim_url)) as gw:
        started = time.monotonic()
        status, headers, body = await book(session, gw.url, "respond-async, wait=1")
    assert status == 202 and body["status"] == "accepted" and "Preference-Applied" not in headers
    assert time.monotonic() - started < 1.5


async def test_a_failed_job_returns_its_failed_answer() -> None:
    runner, sim_url, _ = await simulator(job_eta_s=0.5, job_fail_rate=1.0)
    try:
        async with aiohttp.ClientSession() as session, gateway(gateway_document(sim_url)) as gw:
            status, headers, body = await book(session, gw.url, "respond-async,wait=4")
        assert status == 200 and body["state"] == "failed" and body["error"]["code"] == "SLOT_TAKEN"
        assert headers["Preference-Applied"] == "wait=4"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("prefer", ["respond-async, wait=abc", "respond-async, wait=-1", "respond-async"])
async def test_a_malformed_or_absent_wait_is_ignored(prefer: str, sim_jobs: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    sim_url, _ = sim_jobs
    async with gateway(gateway_document(sim_url)) as gw:
        status, _, body = await book(session, gw.url, prefer)
    assert status == 202 and body["jobId"].startswith("job_")  # RFC 7240: ignored, never an error


async def test_a_job_answer_that_is_not_json_ends_the_follow(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(
        Step(status=202, body={"status": "accepted", "jobId": "job_x", "eta": "0.2s"}),
        Step(status=200, body={"status": "ok", "jobId": "job_x"}),  # no state
    )
    async with gateway(gateway_document(upstream.url)) as gw:
        status, _, body = await call(session, "POST", f"{gw.url}/v1/bookings", json={}, headers={"Prefer": "wait=3"})
    assert status == 200 and json.loads(body) == {"status": "ok", "jobId": "job_x"}
    assert len(upstream.received) == 2


async def test_a_final_answer_is_replayed_without_an_upstream_call(sim_jobs: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    sim_url, sim = sim_jobs
    async with gateway(gateway_document(sim_url)) as gw:
        _, _, accepted = await book(session, gw.url, "respond-async, wait=5")
        job_id = accepted["jobId"]
        before = job_polls(sim)
        replays = [await call(session, "GET", f"{gw.url}/v1/jobs/{job_id}") for _ in range(3)]
    assert job_polls(sim) == before
    assert all(r[0] == 200 and r[1]["X-Gateway-Cache"] == "hit" and json.loads(r[2])["state"] == "completed" for r in replays)


async def test_ten_callers_on_two_replicas_share_one_upstream_poll_per_interval(redis_url: str, tmp_path: Path, processes: list[GatewayProcess]) -> None:
    runner, sim_url, sim = await simulator(job_eta_s=4.0)
    try:
        document = gateway_document(sim_url, store={"url": redis_url}, jobs={"poll_interval_ms": 1000})
        processes += [start_gateway_process(document, tmp_path, name=f"gw{i}") for i in range(2)]
        async with aiohttp.ClientSession() as session:
            _, _, accepted = await book(session, processes[0].url, "respond-async")
            job_id = accepted["jobId"]
            before, started = job_polls(sim), time.monotonic()
            answers: list[tuple[int, str]] = []

            async def caller(i: int) -> None:
                for _ in range(6):  # 10 callers, every 0.5 s for 3 s
                    status, _, body = await call(session, "GET", f"{processes[i % 2].url}/v1/jobs/{job_id}")
                    answers.append((status, json.loads(body)["state"]))
                    await asyncio.sleep(0.5)

            await asyncio.gather(*(caller(i) for i in range(10)))
            elapsed = time.monotonic() - started
        upstream_polls = job_polls(sim) - before
        assert {a for a in answers} == {(200, "pending")}
        assert upstream_polls <= int(elapsed / 1.0) + 1  # at most one per interval, across both replicas
        assert len(answers) == 60
    finally:
        await runner.cleanup()


async def test_the_creating_requests_record_shows_the_jobs_end_and_the_webhook_delivery(session: aiohttp.ClientSession) -> None:
    subscriber = Subscriber()
    await subscriber.start()
    from tests.support.servers import WEBHOOK_SECRET, free_port

    gateway_port = free_port()
    runner, sim_url, _ = await simulator(job_eta_s=0.5, webhook_url=f"http://127.0.0.1:{gateway_port}/webhooks/pinmycal", webhook_secret=WEBHOOK_SECRET.encode(), webhook_base_delay_s=0.1)
    document = gateway_document(sim_url, server={"listen": f"127.0.0.1:{gateway_port}", "shutdown_grace_s": 5})
    document["webhooks"] = {"secret_envs": ["PMC_WEBHOOK_SECRET"], "allow_insecure_http": True, "delivery_base_delay_ms": 50,
                            "subscribers": [{"name": "booking-svc", "url": subscriber.url}]}
    try:
        async with gateway(document) as gw:
            status, headers, accepted = await book(session, gw.url, "respond-async")  # no wait: the webhook tells
            assert status == 202
            deadline = time.monotonic() + 10
            record: dict[str, Any] = {}
            while time.monotonic() < deadline:
                record = json.loads((await call(session, "GET", f"{gw.url}/_gateway/requests/{headers['X-Request-Id']}", token=ADMIN_TOKEN))[2])
                if record.get("events") and record["events"][0]["deliveries"]:
                    break
                await asyncio.sleep(0.2)
            out = await asyncio.create_subprocess_exec(
                __import__("sys").executable, "-m", "gateway.cli", "triage", headers["X-Request-Id"], "--url", gw.url, "--token", ADMIN_TOKEN,
                stdout=asyncio.subprocess.PIPE,
            )
            printed = (await out.communicate())[0].decode()
    finally:
        await runner.cleanup()
        await subscriber.stop()
    assert record["jobId"] == accepted["jobId"] and record["job"]["state"] == "completed"  # learnt from the webhook
    event = record["events"][0]
    assert event["type"] == "booking.created" and event["deliveries"] == [{"subscriber": "booking-svc", "status": "delivered", "attempts": 1}]
    assert "what happened next" in printed and "booking-svc: delivered" in printed and accepted["jobId"] in printed


async def test_a_job_final_just_before_the_bound_is_answered_final_by_a_last_poll_at_the_bound(session: aiohttp.ClientSession) -> None:
    """Polls at 1 s and 2.5 s find it pending; it completes at 2.8 s; the next backed-off poll would
    be at 4.75 s, past wait=3, so the last one is made at the bound (SPEC §5)."""
    runner, sim_url, sim = await simulator(job_eta_s=2.8)
    try:
        async with gateway(gateway_document(sim_url)) as gw:
            started = time.monotonic()
            status, headers, body = await book(session, gw.url, "respond-async, wait=3")
            took = time.monotonic() - started
    finally:
        await runner.cleanup()
    assert status == 200 and body["state"] == "completed" and headers["Preference-Applied"] == "wait=3"
    assert 2.8 <= took < 3.5
    assert headers["X-Gateway-Attempts"] == "1"  # the POST; the follow's polls are the job's (triage), not here
    assert job_polls(sim) == 3
