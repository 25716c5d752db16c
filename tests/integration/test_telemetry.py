"""Traces, metrics, access log and triage records, as an on-call engineer uses them (SPEC §6, §8)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.instruments import PROMETHEUS_NAMES
from tests.support.otlp import GrpcReceiver, HttpReceiver, Received
from tests.support.servers import (
    ADMIN_TOKEN,
    OPS_TOKEN,
    SECRET_VALUES,
    WEB_TOKEN,
    ScriptedUpstream,
    Step,
    call,
    closed_port,
    gateway,
    gateway_document,
    start_gateway_process,
)

SERVER, CLIENT = 2, 3  # SpanKind in OTLP
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@contextlib.asynccontextmanager
async def exporting_over_http(upstream_url: str) -> AsyncIterator[tuple[HttpReceiver, dict[str, Any]]]:
    """A live OTLP/HTTP receiver, and a gateway document that exports traces and metrics to it."""
    receiver = HttpReceiver()
    await receiver.start()
    try:
        yield receiver, gateway_document(upstream_url, telemetry={"otlp_endpoint": receiver.endpoint, "otlp_protocol": "http/protobuf"})
    finally:
        await receiver.stop()


async def retried_request_trace(upstream: ScriptedUpstream, endpoint: str, protocol: str, received: Received, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=503), Step(status=503), Step(status=200, body={"status": "ok", "requestId": "req_upstream9"}))
    document = gateway_document(upstream.url, telemetry={"otlp_endpoint": endpoint, "otlp_protocol": protocol})
    async with gateway(document) as gw:
        status, headers, _ = await call(
            session, "GET", f"{gw.url}/v1/users/me", headers={"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"}
        )
        assert status == 200
    # leaving the block shut the gateway down, which flushes its batched spans
    for _ in range(50):
        if len([s for s in received.spans if s.trace_id == CALLER_TRACE]) >= 4:
            break
        await asyncio.sleep(0.1)
    spans = [s for s in received.spans if s.trace_id == CALLER_TRACE]
    server = [s for s in spans if s.kind == SERVER]
    clients = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.attributes.get("http.request.resend_count", 0))
    assert len(server) == 1 and len(clients) == 3
    root = server[0]
    assert root.name == "GET /v1/users/me" and root.parent_span_id == "00f067aa0ba902b7"
    assert root.attributes["http.request.method"] == "GET" and root.attributes["http.route"] == "/v1/users/me"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["pmc.attempts"] == 3 and root.attributes["pmc.client"] == "booking-web"
    assert root.attributes["pmc.environment"] == "live" and root.attributes["pmc.upstream_request_id"] == "req_upstream9"
    assert root.events.count("pmc.retry") == 2
    assert [c.attributes.get("http.request.resend_count") for c in clients] == [None, 1, 2]
    assert [c.attributes.get("http.response.status_code") for c in clients] == [503, 503, 200]
    assert [c.attributes.get("error.type") for c in clients] == ["503", "503", None]
    assert all(c.parent_span_id == root.span_id for c in clients)
    assert {s.attributes["pmc.request_id"] for s in spans} == {headers["X-Request-Id"]}
    assert [r["headers"]["traceparent"].split("-")[2] for r in upstream.received] == [c.span_id for c in clients]


async def test_otlp_grpc_trace_of_a_retried_request(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    receiver = GrpcReceiver()
    receiver.start()
    try:
        await retried_request_trace(upstream, receiver.endpoint, "grpc", receiver.received, session)
        assert "http.server.request.duration" in receiver.received.metric_names  # metrics go by OTLP too
    finally:
        receiver.stop()


@pytest.mark.parametrize("exemplar_filter", ["", "trace_based"])
async def test_otlp_http_trace_of_a_retried_request(
    exemplar_filter: str, upstream: ScriptedUpstream, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", exemplar_filter)
    receiver = HttpReceiver()
    await receiver.start()
    try:
        await retried_request_trace(upstream, receiver.endpoint, "http/protobuf", receiver.received, session)
        assert "http.client.request.duration" in receiver.received.metric_names
        # exemplars cost every record a reservoir offer: off unless asked for, then linked to the trace
        assert receiver.received.exemplar_trace_ids == ({CALLER_TRACE} if exemplar_filter else set())
    finally:
        await receiver.stop()


async def test_sampled_out_requests_still_carry_the_trace_upstream(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With OTEL_TRACES_SAMPLER dropping a trace, nothing is exported, yet the upstream still
    gets the caller's trace id (flags 00) and the log line still names it."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    async with exporting_over_http(upstream.url) as (receiver, document):
        async with gateway(document) as gw:
            for flags in ("00", "00"):
                status, _, _ = await call(
                    session, "GET", f"{gw.url}/v1/users/me", headers={"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-{flags}"}
                )
                assert status == 200
            status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")  # a new trace, ratio 0
            assert status == 200
        await asyncio.sleep(0.5)
        assert receiver.received.spans == []
        sent = [r["headers"]["traceparent"].split("-") for r in upstream.received]
        assert [(version, trace_id, flags) for version, trace_id, _, flags in sent[:2]] == [("00", CALLER_TRACE, "00")] * 2
        assert sent[2][1] != CALLER_TRACE and int(sent[2][1], 16) != 0
        assert int(sent[2][3], 16) & 0x01 == 0  # not sampled (0x02 is W3C's random-trace-id flag)
        assert len({span_id for _, _, span_id, _ in sent}) == 3  # each attempt its own span id


async def test_unreachable_collector_costs_nothing_but_a_warning(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    document = gateway_document(upstream.url, telemetry={"otlp_endpoint": f"http://127.0.0.1:{closed_port()}", "otlp_protocol": "http/protobuf"})
    async with gateway(document) as gw:
        started = time.monotonic()
        statuses = [(await call(session, "GET", f"{gw.url}/v1/users/me"))[0] for _ in range(20)]
        assert statuses == [200] * 20 and time.monotonic() - started < 2


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_prometheus_and_otlp_report_the_same_counts(upstream: ScriptedUpstream, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both outputs come from one aggregation (gateway/observability/otlp/metrics.py): OTLP pushes every
    interval, the exposition is collected at each scrape, and a push never leaks into it."""
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    async with exporting_over_http(upstream.url) as (receiver, document), gateway(document) as gw:
        for _ in range(5):
            assert (await call(session, "GET", f"{gw.url}/v1/users/me"))[0] == 200
        for _ in range(50):  # a push after the fifth request
            if receiver.received.histogram_counts.get("http.server.request.duration") == 5:
                break
            await asyncio.sleep(0.1)
        pushed = receiver.received.histogram_counts.get("http.server.request.duration")
        await asyncio.sleep(0.5)  # more pushes, no new traffic
        pushes = receiver.received.metric_pushes
        _, _, body = await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN)
    assert pushed == 5 and pushes >= 3
    counts = [
        s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "http_server_request_duration_seconds_count" and s.labels.get("pmc_client") == "booking-web"
        and s.labels.get("http_route") == "/v1/users/me"  # beside it, the start-up zero series (SPEC §8)
    ]
    assert counts == [5.0]  # one series, counted once


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


async def test_metrics_count_the_traffic_sent(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    document = gateway_document(
        upstream.url,
        budget={"max_wait_ms": 200},
        reads={"routes": {"/v1/availability": {"fresh_s": 10}}},  # every feature on: the shared-read
        hedging={"routes": ["/v1/availability"]},  # and hedge families exist from start-up too
    )
    document["clients"]["ops-tools"]["requests_per_minute"] = 1
    async with gateway(document) as gw:
        for _ in range(3):
            await call(session, "GET", f"{gw.url}/v1/users/me")  # 3 × 200
        upstream.then(Step(status=503), Step(status=200))
        await call(session, "GET", f"{gw.url}/v1/availability")  # one retry
        for _ in range(2):
            await call(session, "POST", f"{gw.url}/v1/bookings", json={"a": 1}, headers={"Idempotency-Key": "k1"})  # one replay
        await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN)
        await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN)  # the client's cap: one 429
        upstream.then(Step(status=429, headers={"Retry-After": "0"}))
        await call(session, "POST", f"{gw.url}/v1/bookings", json={})  # an upstream 429
        await call(session, "POST", f"{gw.url}/webhooks/pinmycal", data=b"{}", token=None)  # a rejected webhook
        status, headers, body = await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN)
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=None))[0] == 401
        assert (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=WEB_TOKEN))[0] == 401
    text = body.decode()
    for name in PROMETHEUS_NAMES:
        assert name in text, f"{name} is missing from /_gateway/metrics"
    samples = scrape(text)
    proxied = total(samples, "http_server_request_duration_seconds_count", pmc_client="booking-web") + total(
        samples, "http_server_request_duration_seconds_count", pmc_client="ops-tools"
    )
    assert proxied == 9
    assert total(samples, "http_server_request_duration_seconds_count", http_route="/v1/users/me", http_response_status_code="200") == 4
    assert total(samples, "http_server_request_duration_seconds_bucket", le="0.18") > 0
    assert total(samples, "http_client_request_duration_seconds_count") == len(upstream.received) == 8
    assert total(samples, "pmc_gateway_retries_total", http_route="/v1/availability") == 1
    assert total(samples, "pmc_gateway_idempotent_replays_total") == 1
    assert total(samples, "pmc_gateway_budget_rejected_total", pmc_client="ops-tools") == 1
    assert total(samples, "pmc_gateway_upstream_throttled_total", pmc_environment="live") == 1
    assert total(samples, "pmc_gateway_webhook_rejected_total") == 1
    assert total(samples, "pmc_gateway_budget_wait_seconds_count") == 8
    assert total(samples, "pmc_gateway_breaker_state", http_route="/v1/users/me") == 0  # closed
    assert total(samples, "pmc_gateway_webhook_delivery_backlog") == 0


async def test_triage_record_through_endpoint_and_cli(upstream: ScriptedUpstream, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=503), Step(status=502, delay_s=0.05), Step(status=200, body={"status": "ok", "requestId": "req_up77"}))
    process = start_gateway_process(gateway_document(upstream.url), tmp_path)
    try:
        status, headers, _ = await call(session, "GET", f"{process.url}/v1/users/me?x=1")
        request_id = headers["X-Request-Id"]
        await asyncio.sleep(0.5)  # records are written in batches, off the request path
        url = f"{process.url}/_gateway/requests/{request_id}"
        assert (await call(session, "GET", url, token=None))[0] == 401
        assert (await call(session, "GET", url, token=WEB_TOKEN))[0] == 401
        status, _, body = await call(session, "GET", url, token=ADMIN_TOKEN)
        assert status == 200
        record = json.loads(body)
        assert record["requestId"] == request_id and record["status"] == 200 and record["path"] == "/v1/users/me"
        assert record["client"] == "booking-web" and record["environment"] == "live" and record["route"] == "/v1/users/me"
        assert record["upstreamRequestId"] == "req_up77" and len(record["traceId"]) == 32
        assert [a["status"] for a in record["attempts"]] == [503, 502, 200]
        assert record["attempts"][1]["latencyMs"] >= 50 and record["attempts"][1]["delayMs"] >= 0
        assert record["startedAt"].endswith("Z")
        assert (await call(session, "GET", f"{process.url}/_gateway/requests/req_unknown", token=ADMIN_TOKEN))[0] == 404

        env = {**os.environ, "PMC_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}
        cli = [sys.executable, "-m", "gateway.cli", "triage", request_id, "--url", process.url]
        shown = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, env=env, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert request_id in shown.stdout and "req_up77" in shown.stdout
        assert "#1" in shown.stdout and "#3" in shown.stdout and "503" in shown.stdout
        assert "where the time went" in shown.stdout and "retry backoff" in shown.stdout
        raw = await asyncio.to_thread(subprocess.run, [*cli, "--json"], capture_output=True, text=True, env=env, timeout=30)
        assert json.loads(raw.stdout)["attempts"] == record["attempts"]
        denied = await asyncio.to_thread(subprocess.run, [*cli, "--token", "wrong-token"], capture_output=True, text=True, env=env, timeout=30)
        assert denied.returncode == 1 and "401" in denied.stderr and "Traceback" not in denied.stderr
    finally:
        process.terminate()
    access = [line for line in process.log_lines() if line.get("event") == "request" and line.get("requestId") == request_id]
    assert len(access) == 1
    line = access[0]
    assert {"requestId", "traceId", "client", "environment", "method", "route", "status", "latencyMs", "attempts", "upstreamRequestId"} <= set(line)
    assert (line["attempts"], line["traceId"], line["upstreamRequestId"]) == (3, record["traceId"], "req_up77")
    # written without structlog's chain (log.access_line), shaped as every other line
    listening = next(line for line in process.log_lines() if line.get("event") == "listening")
    assert line["level"] == "info" and set(listening) >= {"event", "level", "ts"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"]) and len(line["ts"]) == len(listening["ts"])


async def test_202_answers_record_the_job_id(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(status=202, body={"status": "accepted", "jobId": "job_4421", "eta": "15s", "requestId": "req_a"}))
    async with gateway(gateway_document(upstream.url)) as gw:
        _, headers, _ = await call(session, "POST", f"{gw.url}/v1/bookings", json={})
        record = await gw.components.records.get(headers["X-Request-Id"])
    assert record is not None and record["jobId"] == "job_4421"


async def test_status_shows_slo_figures_breakers_and_failures(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(*[Step(status=200)] * 8, Step(status=500), Step(status=500))
    document = gateway_document(upstream.url, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        for _ in range(10):
            await call(session, "GET", f"{gw.url}/v1/users/me")
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/status", token=ADMIN_TOKEN)
        assert (await call(session, "GET", f"{gw.url}/_gateway/status", token=None))[0] == 401
    assert status == 200
    doc = json.loads(body)
    last5m = doc["slo"]["windows"]["last5m"]
    assert last5m["requests"] == 10 and last5m["errors"] == 2
    assert last5m["availability"] == pytest.approx(0.8)
    assert last5m["errorBudgetSpent"] == pytest.approx(0.2 / 0.0005)
    assert last5m["latencyP50Ms"] is not None and last5m["latencyP99Ms"] >= last5m["latencyP50Ms"]
    assert doc["slo"]["routes"]["/v1/users/me"]["requests"] == 10
    assert doc["targets"] == {
        "latencyMs": 180, "availability": 0.9995, "latencyTailMs": 1000, "latencyTailObjective": 0.99,
        "addedLatencyMs": 50, "addedLatencyObjective": 0.999,
    }
    assert [b["state"] for b in doc["breakers"]] == ["closed"]
    assert len(doc["recentFailures"]) == 2 and doc["recentFailures"][0]["status"] == 500
    assert doc["store"]["healthy"] is True and doc["budgets"][0]["limitPerMinute"] == 6000
    assert doc["budgetUseLastMinute"] == {"live|booking-web": 10}


async def test_no_secret_in_output_spans_metrics_or_records(upstream: ScriptedUpstream, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    receiver = HttpReceiver()
    await receiver.start()
    document = gateway_document(upstream.url, telemetry={"otlp_endpoint": receiver.endpoint, "otlp_protocol": "http/protobuf"})
    process = start_gateway_process(document, tmp_path)
    seen: list[str] = []
    try:
        upstream.then(Step(status=503), Step(status=401, body={"status": "error", "code": "INVALID_TOKEN"}))
        ids = []
        for method, path, token in (("GET", "/v1/users/me", WEB_TOKEN), ("POST", "/v1/bookings", WEB_TOKEN), ("GET", "/v1/users/me", "bad"), ("GET", "/v1/users/me", OPS_TOKEN)):
            _, headers, body = await call(session, method, f"{process.url}{path}", token=token, json={} if method == "POST" else None)
            ids.append(headers["X-Request-Id"])
            seen.append(body.decode(errors="replace"))
        await asyncio.sleep(0.6)
        for admin_path in ("/_gateway/metrics", "/_gateway/status", *(f"/_gateway/requests/{i}" for i in ids)):
            seen.append((await call(session, "GET", f"{process.url}{admin_path}", token=ADMIN_TOKEN))[2].decode())
    finally:
        await asyncio.to_thread(process.terminate)  # the receiver shares this loop: keep it answering
        await receiver.stop()
    seen.append(process.output())
    seen.append(json.dumps([s.__dict__ for s in receiver.received.spans]))
    assert len(receiver.received.spans) >= 4
    everything = "\n".join(seen)
    for secret in SECRET_VALUES:
        assert secret not in everything, f"a secret leaked: {secret[:8]}…"
