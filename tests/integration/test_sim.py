"""The simulator behaves like the quickstart says PinmyCal does (SPEC §1, §9)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
from multidict import CIMultiDict

from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim

LIVE = {"Authorization": "Bearer pmc_live_simtest_0001"}
BOOKING = {
    "eventTypeId": "evt_demo",
    "invitee": {"name": "Jordan Lee", "email": "jordan@company.com"},
    "start": "2026-03-10T09:30:00Z",
    "timezone": "Asia/Kolkata",
}


async def get(session: aiohttp.ClientSession, url: str, method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, json.loads(await response.read()), response.headers.copy()


async def test_quickstart_payloads(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    url, _ = sim
    status, body, _ = await get(session, f"{url}/v1/availability?eventTypeId=evt_demo&date=2026-03-10&timezone=Asia/Kolkata", headers=LIVE)
    # the quickstart's example answer opens the day's slots (SPEC §1; the simulator offers more)
    assert status == 200 and body["status"] == "ok" and body["slots"][:2] == ["2026-03-10T09:30:00Z", "2026-03-10T11:00:00Z"]
    status, body, _ = await get(session, f"{url}/v1/bookings", method="POST", json=BOOKING, headers=LIVE)
    assert status == 200
    assert body["status"] == "ok" and body["bookingId"] == "bk_1027"
    assert body["meetingUrl"] == "https://meet.google.com/abc-defg-hij" and str(body["requestId"]).startswith("req_")
    status, body, _ = await get(session, f"{url}/v1/users/me", headers={"Authorization": "Bearer pmc_test_simtest_0001"})
    assert status == 200 and body["user"]["environment"] == "test"


async def test_keys_expired_and_malformed(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    url, simulator = sim
    simulator.expired.add("pmc_live_old_0001")
    status, body, _ = await get(session, f"{url}/v1/users/me", headers={"Authorization": "Bearer pmc_live_old_0001"})
    assert (status, body["code"], body["message"]) == (401, "INVALID_TOKEN", "Bearer token expired")
    status, body, _ = await get(session, f"{url}/v1/users/me", headers={"Authorization": "Bearer sk_something"})
    assert (status, body["code"]) == (401, "INVALID_TOKEN")
    status, body, _ = await get(session, f"{url}/v1/bookings", method="POST", json=BOOKING, headers={"Authorization": "Bearer pmc_live_readonly_01"})
    assert status == 403


async def test_field_errors_are_422(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    url, _ = sim
    bad = {**BOOKING, "invitee": {"name": "", "email": "not-an-email"}, "start": "tomorrow"}
    status, body, _ = await get(session, f"{url}/v1/bookings", method="POST", json=bad, headers=LIVE)
    assert status == 422 and body["code"] == "VALIDATION_FAILED"
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"invitee.name", "invitee.email", "start"}


async def test_async_jobs_202_then_poll(session: aiohttp.ClientSession) -> None:
    runner, port, _ = await start_sim(SimConfig(port=0, faults=Faults(latency_ms=0), job_eta_s=0.3))
    url = f"http://127.0.0.1:{port}"
    try:
        status, body, _ = await get(session, f"{url}/v1/bookings", method="POST", json=BOOKING, headers={**LIVE, "Prefer": "respond-async"})
        assert status == 202 and body["status"] == "accepted" and str(body["jobId"]).startswith("job_")
        status, polled, _ = await get(session, f"{url}/v1/jobs/{body['jobId']}", headers=LIVE)
        assert polled["state"] == "pending"
        await asyncio.sleep(0.4)
        status, polled, _ = await get(session, f"{url}/v1/jobs/{body['jobId']}", headers=LIVE)
        assert polled["state"] == "completed" and str(polled["result"]["bookingId"]).startswith("bk_")
    finally:
        await runner.cleanup()


async def test_rate_limit_per_key_with_retry_after(session: aiohttp.ClientSession) -> None:
    runner, port, _ = await start_sim(SimConfig(port=0, rate_limit=120, faults=Faults(latency_ms=0)))
    url = f"http://127.0.0.1:{port}/v1/users/me"
    try:
        statuses = [(await get(session, url, headers=LIVE))[0] for _ in range(121)]
        assert statuses[:120] == [200] * 120
        status, body, headers = await get(session, url, headers=LIVE)
        assert (status, body["code"]) == (429, "RATE_LIMITED")
        assert 1 <= int(headers["Retry-After"]) <= 60
        other_key = (await get(session, url, headers={"Authorization": "Bearer pmc_live_another_0002"}))[0]
        assert other_key == 200  # the limit is per key
    finally:
        await runner.cleanup()


async def test_latency_is_long_tailed_around_the_mean(session: aiohttp.ClientSession) -> None:
    runner, port, _ = await start_sim(SimConfig(port=0, seed=3, faults=Faults(latency_ms=40)))
    url = f"http://127.0.0.1:{port}/v1/users/me"
    try:
        took = []
        for _ in range(60):
            started = time.monotonic()
            await get(session, url, headers=LIVE)
            took.append((time.monotonic() - started) * 1000)
    finally:
        await runner.cleanup()
    mean = statistics.mean(took)
    assert 25 < mean < 70, mean
    assert max(took) > 1.6 * statistics.median(took)  # a tail, not a constant


async def test_faults_at_runtime(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    url, _ = sim
    status, faults, _ = await get(session, f"{url}/_sim/faults", method="POST", json={"errorRate": 1.0})
    assert status == 200 and faults["errorRate"] == 1.0
    statuses = {(await get(session, f"{url}/v1/users/me", headers=LIVE))[0] for _ in range(12)}
    assert statuses <= {500, 502, 503} and statuses
    await get(session, f"{url}/_sim/faults", method="POST", json={"errorRate": 0, "stormS": 5, "stormRetryAfterS": 7})
    status, body, headers = await get(session, f"{url}/v1/users/me", headers=LIVE)
    assert status == 429 and headers["Retry-After"] == "7"
    status, body, _ = await get(session, f"{url}/_sim/faults", method="POST", json={"bogus": 1})
    assert status == 400 and "unknown fault" in str(body["message"])
    await get(session, f"{url}/_sim/faults", method="POST", json={"stormS": 0, "timeoutRate": 1.0, "hangS": 5})
    with __import__("pytest").raises(asyncio.TimeoutError):
        await get(session, f"{url}/v1/users/me", headers=LIVE, timeout=aiohttp.ClientTimeout(total=0.3))


async def test_rate_limit_headers_count_an_outside_caller() -> None:
    runner, port, simulator = await start_sim(SimConfig(port=0, faults=Faults(latency_ms=0), rate_limit=10, rate_limit_headers=True, outside_per_minute=600))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/v1/users/me", headers={"Authorization": "Bearer pmc_live_outside_test_key"}) as first:
                assert first.status == 200 and first.headers["RateLimit-Limit"] == "10"
                remaining = int(first.headers["RateLimit-Remaining"])
            await asyncio.sleep(0.35)  # the outside caller sends one every 100 ms
            async with session.get(f"http://127.0.0.1:{port}/v1/users/me", headers={"Authorization": "Bearer pmc_live_outside_test_key"}) as second:
                assert int(second.headers["RateLimit-Remaining"]) <= remaining - 3
                assert 0 < int(second.headers["RateLimit-Reset"]) <= 60
        assert simulator.outside_sent >= 4
    finally:
        await runner.cleanup()


async def test_a_booking_takes_its_slot_and_a_taken_slot_is_409(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    """SPEC §1 slot state: availability after a booking no longer lists it; booking it again fails."""
    url, simulator = sim
    availability = f"{url}/v1/availability?eventTypeId=evt_demo&date=2026-03-10&timezone=UTC"
    _, before, _ = await get(session, availability, headers=LIVE)
    status, _, _ = await get(session, f"{url}/v1/bookings", method="POST", json=BOOKING, headers=LIVE)
    assert status == 200
    _, after, _ = await get(session, availability, headers=LIVE)
    assert BOOKING["start"] in before["slots"] and BOOKING["start"] not in after["slots"]
    assert len(after["slots"]) == len(before["slots"]) - 1
    status, body, _ = await get(session, f"{url}/v1/bookings", method="POST", json=BOOKING, headers=LIVE)
    assert (status, body["code"]) == (409, "SLOT_UNAVAILABLE")
    # a booking made outside the gateway takes a slot of a day lately asked about
    status, body, _ = await get(session, f"{url}/_sim/outside-bookings", method="POST", json={})
    assert status == 200 and simulator.outside_bookings == 1
    _, outside, _ = await get(session, availability, headers=LIVE)
    assert body["booking"]["start"] not in outside["slots"] and len(outside["slots"]) == len(after["slots"]) - 1
