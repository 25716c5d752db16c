"""SPEC §5 through a running gateway: retries, Retry-After, retry budget, key rotation,
idempotent replay, breaker transitions, rate budgets — on the memory store (the Redis
store runs the same stages; tests/integration/test_shared_redis.py covers what sharing adds)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from tests.support.servers import (
    LIVE_KEY,
    OPS_TOKEN,
    ScriptedUpstream,
    Step,
    call,
    gateway,
    gateway_document,
)

BOOKING = {"eventTypeId": "evt_demo", "invitee": {"name": "J", "email": "j@c.com"}, "start": "2026-03-10T09:30:00Z", "timezone": "UTC"}


def code_of(body: bytes) -> str:
    return str(json.loads(body)["code"])


async def test_get_retried_until_success(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=503), Step(status=503), Step(status=200, body={"status": "ok", "third": True}))
    async with gateway(gateway_document(upstream.url)) as gw:
        status, headers, body = await call(session, "GET", f"{gw.url}/v1/users/me")
        record = await gw.components.records.get(headers["X-Request-Id"])
    assert status == 200 and json.loads(body)["third"] is True
    assert headers["X-Gateway-Attempts"] == "3" and len(upstream.received) == 3
    assert record is not None
    assert [a["status"] for a in cast(list[dict[str, Any]], record["attempts"])] == [503, 503, 200]


async def test_post_without_idempotency_key_is_sent_once(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=503)
    async with gateway(gateway_document(upstream.url)) as gw:
        status, headers, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
    assert status == 503 and headers["X-Gateway-Attempts"] == "1" and len(upstream.received) == 1


async def test_post_with_idempotency_key_is_retried_and_key_forwarded(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=502), Step(status=200, body={"status": "ok", "bookingId": "bk_1"}))
    async with gateway(gateway_document(upstream.url)) as gw:
        status, headers, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING, headers={"Idempotency-Key": "k-42"})
    assert status == 200 and headers["X-Gateway-Attempts"] == "2"
    assert [r["headers"]["Idempotency-Key"] for r in upstream.received] == ["k-42", "k-42"]


async def test_retry_after_spaces_the_attempts(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=503, headers={"Retry-After": "1"}), Step(status=200))
    async with gateway(gateway_document(upstream.url)) as gw:
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
    gap = upstream.received[1]["t"] - upstream.received[0]["t"]
    assert status == 200 and 0.95 <= gap < 1.6, gap


async def test_retry_after_as_http_date(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        # The date is taken once the gateway is up: its start-up time must not eat into the wait.
        when = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%a, %d %b %Y %H:%M:%S GMT")
        upstream.then(Step(status=503, headers={"Retry-After": when}), Step(status=200))
        await call(session, "GET", f"{gw.url}/v1/users/me")
    gap = upstream.received[1]["t"] - upstream.received[0]["t"]
    assert 0.9 <= gap < 2.6, gap  # whole seconds in the header: between 1 and 2 s away


async def test_retry_after_past_the_deadline_returns_the_answer_at_once(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=503, headers={"Retry-After": "30"}, body={"status": "error", "code": "MAINTENANCE"}))
    async with gateway(gateway_document(upstream.url)) as gw:
        started = time.monotonic()
        status, headers, body = await call(session, "GET", f"{gw.url}/v1/users/me")
    assert status == 503 and code_of(body) == "MAINTENANCE" and headers["Retry-After"] == "30"
    assert time.monotonic() - started < 0.5 and len(upstream.received) == 1


async def test_4xx_are_never_retried(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=404), Step(status=403), Step(status=409))
    async with gateway(gateway_document(upstream.url)) as gw:
        statuses = [(await call(session, "GET", f"{gw.url}/v1/bookings/bk_{i}"))[0] for i in range(3)]
    assert statuses == [404, 403, 409] and len(upstream.received) == 3


async def test_retry_budget_caps_attempts_under_a_failing_upstream(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=500)
    document = gateway_document(upstream.url, retry={"max_attempts": 3, "base_delay_ms": 1, "max_delay_ms": 2, "budget_percent": 20, "min_retries_per_second": 1, "budget_window_s": 10}, breaker={"fail_max": 10_000})
    callers = 100
    async with gateway(document) as gw:
        statuses = [(await call(session, "GET", f"{gw.url}/v1/users/me"))[0] for _ in range(callers)]
    # without a budget: 300 attempts. With it: 100 + max(20 % of 100, 1/s × 10 s) retries
    assert statuses == [500] * callers
    assert callers < len(upstream.received) <= callers + 20 + 1, len(upstream.received)


async def test_rotated_key_is_reread_after_invalid_token(upstream: ScriptedUpstream, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    key_file = tmp_path / "pmc_live"
    key_file.write_text("pmc_live_old_key_0001\n")
    upstream.then(Step(status=401, body={"status": "error", "code": "INVALID_TOKEN", "message": "Bearer token expired"}), Step(status=200))
    document = gateway_document(upstream.url, environments={"live": {"api_key_file": str(key_file)}, "test": {"api_key_env": "PMC_TEST_API_KEY"}})
    async with gateway(document) as gw:
        key_file.write_text("pmc_live_new_key_0002\n")  # the operator rotated it
        status, headers, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
        assert status == 200 and headers["X-Gateway-Attempts"] == "2"
        upstream.then(Step(status=401, body={"status": "error", "code": "INVALID_TOKEN"}))
        status, headers, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert status == 401 and headers["X-Gateway-Attempts"] == "1"  # unchanged key: no retry
    sent = [r["headers"]["Authorization"] for r in upstream.received]
    assert sent == ["Bearer pmc_live_old_key_0001", "Bearer pmc_live_new_key_0002", "Bearer pmc_live_new_key_0002"]


async def test_idempotent_replay_conflict_and_reuse(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=200, body={"status": "ok", "bookingId": "bk_1027"}, delay_s=0.3))
    async with gateway(gateway_document(upstream.url)) as gw:
        url, key = f"{gw.url}/v1/bookings", {"Idempotency-Key": "order-4711"}
        first = asyncio.create_task(call(session, "POST", url, json=BOOKING, headers=key))
        await asyncio.sleep(0.1)
        status, _, body = await call(session, "POST", url, json=BOOKING, headers=key)
        assert (status, code_of(body)) == (409, "IDEMPOTENCY_KEY_IN_USE")
        status, headers, body = await first
        assert status == 200 and "Idempotent-Replayed" not in headers

        status, headers, replay = await call(session, "POST", url, json=BOOKING, headers=key)
        assert (status, replay, headers["Idempotent-Replayed"]) == (200, body, "true")
        assert headers["X-Gateway-Attempts"] == "0"
        status, _, body = await call(session, "POST", url, json={**BOOKING, "timezone": "Asia/Kolkata"}, headers=key)
        assert (status, code_of(body)) == (422, "IDEMPOTENCY_KEY_REUSED")
        status, _, _ = await call(session, "POST", url, token=OPS_TOKEN, json=BOOKING, headers=key)
        assert status == 200  # another client's key space
    assert len(upstream.received) == 2


async def test_failed_answers_are_not_stored_for_replay(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=500), Step(status=500), Step(status=500), Step(status=200, body={"status": "ok", "n": 2}))
    async with gateway(gateway_document(upstream.url)) as gw:
        status, _, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING, headers={"Idempotency-Key": "k"})
        assert status == 500
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING, headers={"Idempotency-Key": "k"})
    assert status == 200 and json.loads(body)["n"] == 2 and "Idempotent-Replayed" not in headers


async def test_breaker_opens_refuses_fast_then_half_opens_and_closes(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=500)
    document = gateway_document(upstream.url, breaker={"fail_max": 3, "reset_timeout_s": 1}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        url = f"{gw.url}/v1/users/me"
        assert [(await call(session, "GET", url))[0] for _ in range(3)] == [500, 500, 500]
        status, headers, body = await call(session, "GET", url)
        assert (status, code_of(body)) == (503, "CIRCUIT_OPEN") and headers["Retry-After"] == "1"
        assert len(upstream.received) == 3  # refused without touching the upstream
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/availability")
        assert status == 500  # another route has its own breaker

        await asyncio.sleep(1.05)
        upstream.default = Step(status=200, delay_s=0.3)
        trial = asyncio.create_task(call(session, "GET", url))
        await asyncio.sleep(0.1)
        status, _, body = await call(session, "GET", url)
        assert (status, code_of(body)) == (503, "CIRCUIT_OPEN")  # half-open: one trial only
        assert (await trial)[0] == 200
        assert [(await call(session, "GET", url))[0] for _ in range(3)] == [200, 200, 200]  # closed
        breaker = gw.components.breakers.get("live", "/v1/users/me")
        assert breaker.state == "closed"


async def test_failed_trial_reopens(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=502)
    document = gateway_document(upstream.url, breaker={"fail_max": 2, "reset_timeout_s": 0.5}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        url = f"{gw.url}/v1/users/me"
        for _ in range(2):
            await call(session, "GET", url)
        await asyncio.sleep(0.55)
        assert (await call(session, "GET", url))[0] == 502  # the trial fails…
        status, _, body = await call(session, "GET", url)
        assert (status, code_of(body)) == (503, "CIRCUIT_OPEN")  # …and the circuit is open again
    assert len(upstream.received) == 3


async def test_a_success_between_failures_resets_the_count(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=500), Step(status=500), Step(status=200), Step(status=500), Step(status=500))
    document = gateway_document(upstream.url, breaker={"fail_max": 3}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        statuses = [(await call(session, "GET", f"{gw.url}/v1/users/me"))[0] for _ in range(5)]
        assert statuses == [500, 500, 200, 500, 500]  # never three failures in a row: still closed
        assert gw.components.breakers.get("live", "/v1/users/me").state == "closed"
        upstream.then(Step(status=500))
        await call(session, "GET", f"{gw.url}/v1/users/me")  # the third in a row
        status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert (status, code_of(body)) == (503, "CIRCUIT_OPEN")


async def test_4xx_and_429_do_not_open_the_breaker(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(status=422)
    document = gateway_document(upstream.url, breaker={"fail_max": 2}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        statuses = [(await call(session, "POST", f"{gw.url}/v1/bookings", json={}))[0] for _ in range(5)]
        assert statuses == [422] * 5
        assert gw.components.breakers.get("live", "/v1/bookings").state == "closed"


async def test_rate_budget_refuses_with_truthful_retry_after(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    document = gateway_document(upstream.url, environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 30}}, budget={"max_wait_ms": 0, "burst": 1})
    document["clients"]["booking-web"]["environments"] = ["live"]
    document["clients"]["ops-tools"]["environments"] = ["live"]
    async with gateway(document) as gw:
        assert (await call(session, "GET", f"{gw.url}/v1/users/me"))[0] == 200
        status, headers, body = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert (status, code_of(body)) == (429, "RATE_BUDGET_EXHAUSTED") and headers["Retry-After"] == "2"
        assert json.loads(body)["limit"] == "key"
    assert len(upstream.received) == 1


async def test_budget_wait_spreads_requests(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    document = gateway_document(upstream.url, environments={"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 600}}, budget={"max_wait_ms": 2000, "burst": 1})
    document["clients"]["booking-web"]["environments"] = ["live"]
    document["clients"]["ops-tools"]["environments"] = ["live"]
    async with gateway(document) as gw:
        await call(session, "GET", f"{gw.url}/v1/users/me")  # warm up: a cold first request can stall the loop
        await asyncio.sleep(0.1)
        upstream.received.clear()
        results = await asyncio.gather(*(call(session, "GET", f"{gw.url}/v1/users/me") for _ in range(8)))
    assert [r[0] for r in results] == [200] * 8
    times = sorted(r["t"] for r in upstream.received)
    # 600/min = one slot every 100 ms. Slots are spaced when granted; a send delayed by a busy
    # loop can land next to the following one, so check the spread, not every single gap.
    assert times[-1] - times[0] >= 0.65, times
    assert max(sum(1 for t in times if start <= t < start + 0.1) for start in times) <= 2


async def test_client_cap_limits_one_client_while_another_passes(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    document = gateway_document(upstream.url, budget={"max_wait_ms": 300})
    document["clients"]["booking-web"]["requests_per_minute"] = 1
    document["clients"]["ops-tools"]["environments"] = ["live", "test"]
    async with gateway(document) as gw:
        assert (await call(session, "GET", f"{gw.url}/v1/users/me"))[0] == 200
        status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert (status, code_of(body)) == (429, "RATE_BUDGET_EXHAUSTED") and json.loads(body)["limit"] == "client"
        assert (await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN, headers={"X-PMC-Environment": "live"}))[0] == 200


async def test_upstream_429_pauses_the_key(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=429, headers={"Retry-After": "1"}, body={"status": "error", "code": "RATE_LIMITED"}))
    document = gateway_document(upstream.url, budget={"max_wait_ms": 3000}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        status, _, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
        assert status == 429  # a POST without key is not retried; the 429 passes through
        started = time.monotonic()
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert status == 200 and time.monotonic() - started >= 0.9  # held until Retry-After passed
    assert upstream.received[1]["t"] - upstream.received[0]["t"] >= 0.95


@pytest.mark.parametrize("value", ["abc", "-3", ""])
async def test_unparseable_retry_after_falls_back_to_backoff(value: str, upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=503, headers={"Retry-After": value}), Step(status=200))
    async with gateway(gateway_document(upstream.url)) as gw:
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
    assert status == 200 and upstream.received[1]["t"] - upstream.received[0]["t"] < 0.5


def test_live_key_constant_is_what_tests_inject() -> None:
    assert os.environ.get("PMC_LIVE_API_KEY") in (None, LIVE_KEY)
