"""Hedged reads on a real upstream server (SPEC §5): a held attempt is hedged, the hedge answers,
the held connection is closed; a POST is never hedged; no hedge without budget room."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.support.servers import (
    ADMIN_TOKEN,
    ScriptedUpstream,
    Step,
    call,
    gateway,
    gateway_document,
)

HEDGING = {"routes": ["/v1/availability", "/v1/bookings"], "quantile": 0.95, "min_delay_ms": 20, "max_delay_ms": 150}


async def test_a_held_attempt_is_hedged_the_hedge_answers_and_the_held_connection_is_closed(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(delay_s=3, body={"status": "ok", "slots": ["late"]}), Step(body={"status": "ok", "slots": ["hedge"]}))
    async with gateway(gateway_document(upstream.url, hedging=HEDGING)) as gw:
        began = time.monotonic()
        status, headers, body = await call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-10")
        took = time.monotonic() - began
        assert status == 200 and json.loads(body)["slots"] == ["hedge"]
        assert took < 1.0  # not the 3 s the held attempt would have taken, nor the 1 s attempt timeout
        assert headers["X-Gateway-Attempts"] == "2"
        for _ in range(100):
            if upstream.closed_early:
                break
            await asyncio.sleep(0.02)
        assert upstream.closed_early == ["/v1/availability?date=2026-03-10"]  # abandoned: its connection closed
        status, _, record = await call(session, "GET", f"{gw.url}/_gateway/requests/{headers['X-Request-Id']}", token=ADMIN_TOKEN)
        attempts = json.loads(record)["attempts"]
        assert [(a["hedge"], a["status"], a["error"]) for a in attempts] == [(False, None, "abandoned"), (True, 200, None)]
        metrics = await (await session.get(f"{gw.url}/_gateway/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text()
        assert 'pmc_gateway_hedges_total{http_route="/v1/availability",outcome="won"} 1.0' in metrics
        assert 'pmc_gateway_hedges_total{http_route="/v1/bookings",outcome="skipped"} 0.0' in metrics  # zero series from start-up
        # the held connection was not reused: the next request still answers at once
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert status == 200


async def test_a_post_that_hangs_is_never_hedged(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(delay_s=0.5))
    async with gateway(gateway_document(upstream.url, hedging=HEDGING)) as gw:
        status, headers, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json={}, headers={"Idempotency-Key": "k-1"})
        assert status == 200 and headers["X-Gateway-Attempts"] == "1" and len(upstream.received) == 1


async def test_no_hedge_while_the_key_has_spent_its_share_of_the_limit(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    environments = {"live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 4}}
    async with gateway(gateway_document(upstream.url, hedging={**HEDGING, "max_budget_use": 0.5}, environments=environments)) as gw:
        for _ in range(2):  # half the key's limit spent
            await call(session, "GET", f"{gw.url}/v1/users/me")
        upstream.then(Step(delay_s=0.4))
        status, headers, _ = await call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-10")
        assert status == 200 and headers["X-Gateway-Attempts"] == "1" and len(upstream.received) == 3
        metrics = await (await session.get(f"{gw.url}/_gateway/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text()
        assert 'pmc_gateway_hedges_total{http_route="/v1/availability",outcome="skipped"} 1.0' in metrics


async def test_the_hedges_client_span_says_so(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    upstream.then(Step(delay_s=2), Step())
    async with gateway(gateway_document(upstream.url, hedging=HEDGING), span_exporter=exporter) as gw:
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-11")
        assert status == 200
    # the gateway has stopped: every span ended and flushed
    clients = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
    assert sorted(bool((s.attributes or {}).get("pmc.hedge")) for s in clients) == [False, True]
    hedge = next(s for s in clients if (s.attributes or {}).get("pmc.hedge"))
    assert (hedge.attributes or {}).get("http.request.resend_count") == 1


async def test_the_leader_of_a_coalesced_read_hedges_and_its_followers_get_the_winner(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(delay_s=2, body={"status": "ok", "slots": ["late"]}), Step(body={"status": "ok", "slots": ["hedge"]}))
    reads = {"coalesce": True, "routes": {"/v1/availability": {"fresh_s": 0}}}
    async with gateway(gateway_document(upstream.url, hedging=HEDGING, reads=reads)) as gw:
        answers = await asyncio.gather(*(call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-12") for _ in range(5)))
    assert [json.loads(body)["slots"] for _, _, body in answers] == [["hedge"]] * 5
    assert len(upstream.received) == 2  # one leader, one hedge: followers joined, none hedged alone


async def test_no_hedge_while_the_breaker_is_not_closed(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    """A half-open circuit lets one trial through: that trial is never doubled by a hedge."""
    document = gateway_document(upstream.url, hedging=HEDGING, breaker={"fail_max": 1, "reset_timeout_s": 0.2}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        upstream.then(Step(status=503))
        assert (await call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-13"))[0] == 503  # opens the circuit
        await asyncio.sleep(0.3)  # past reset_timeout: the next call is the half-open trial
        upstream.then(Step(delay_s=0.4))
        status, headers, _ = await call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-13")
        assert status == 200 and headers["X-Gateway-Attempts"] == "1" and len(upstream.received) == 2
        metrics = await (await session.get(f"{gw.url}/_gateway/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).text()
        assert 'pmc_gateway_hedges_total{http_route="/v1/availability",outcome="skipped"} 1.0' in metrics
