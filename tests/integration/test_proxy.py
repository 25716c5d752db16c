"""The proxy as a calling service sees it (SPEC §4), against the real simulator or a
scripted upstream server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.tools.sim.server import Simulator
from tests.support.servers import (
    LIVE_KEY,
    OPS_TOKEN,
    TEST_KEY,
    WEB_TOKEN,
    ScriptedUpstream,
    Step,
    call,
    closed_port,
    gateway,
    gateway_document,
)

BOOKING = {
    "eventTypeId": "evt_demo",
    "invitee": {"name": "Jordan Lee", "email": "jordan@company.com"},
    "start": "2026-03-10T09:30:00Z",
    "timezone": "Asia/Kolkata",
}
ULID_ID = re.compile(r"^req_[0-9A-HJKMNP-TV-Z]{26}$")


def envelope(body: bytes) -> dict[str, object]:
    payload: dict[str, object] = json.loads(body)
    assert payload["status"] == "error" and payload["source"] == "gateway"
    return payload


async def test_booking_through_the_gateway_injects_the_environment_key(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    sim_url, simulator = sim
    async with gateway(gateway_document(sim_url)) as gw:
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
        assert status == 200
        payload = json.loads(body)
        assert payload["bookingId"].startswith("bk_") and payload["meetingUrl"].startswith("https://")
        assert headers["X-Gateway-Attempts"] == "1"

        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me", headers={"X-PMC-Environment": "test"})
        assert status == 200
    seen = list(simulator.received)
    assert [r["authorization"] for r in seen] == [f"Bearer {LIVE_KEY}", f"Bearer {TEST_KEY}"]
    assert all(WEB_TOKEN not in json.dumps(r) for r in seen)


async def test_unknown_or_missing_caller_is_401_and_nothing_goes_upstream(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        for token, extra in ((None, {}), ("not-a-known-token", {}), (None, {"Authorization": "Basic dXNlcjpwYXNz"})):
            status, headers, body = await call(session, "GET", f"{gw.url}/v1/users/me", token=token, headers=extra)
            assert status == 401
            assert envelope(body)["code"] == "GATEWAY_UNAUTHENTICATED"
            assert envelope(body)["requestId"] == headers["X-Request-Id"]
    assert upstream.received == []


async def test_environment_outside_the_clients_scope_is_403(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN, headers={"X-PMC-Environment": "live"})
        assert (status, envelope(body)["code"]) == (403, "ENVIRONMENT_FORBIDDEN")
        status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me", headers={"X-PMC-Environment": "staging"})
        assert (status, envelope(body)["code"]) == (403, "ENVIRONMENT_FORBIDDEN")
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN)
        assert status == 200  # ops-tools' default environment is test
    assert len(upstream.received) == 1
    assert upstream.received[0]["headers"]["Authorization"] == f"Bearer {TEST_KEY}"


async def raw_request(port: int, request_line: str, headers: str = "") -> tuple[int, bytes]:
    """Send a request exactly as written (clients normalise paths; attackers do not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{request_line}\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {WEB_TOKEN}\r\n{headers}Connection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/v1/users/me",
        "/v1//users/me",
        "/v1/bookings/../../_gateway/status",
        "/v1/../_gateway/status",
        "/v1/%2e%2e/_gateway/status",
        "/v1/%2E%2E/%2e%2E/etc/passwd",
        "/v1/bookings/%252e%252e/x",
        "/v1/./users/me",
        "/v1/users%2fme",
        "/v1/users%5cme",
        "/v1/users/me%00",
        "/v1/bad%zzescape",
        "http://evil.example/v1/users/me",
    ],
)
async def test_unsafe_targets_are_refused(target: str, upstream: ScriptedUpstream) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        status, body = await raw_request(port, f"GET {target} HTTP/1.1")
        assert status == 400, (target, body)
        assert envelope(body)["code"] == "BAD_REQUEST"
    assert upstream.received == []


async def test_paths_outside_v1_are_404(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        for path in ("/", "/v2/users/me", "/v1", "/admin"):
            status, _, body = await call(session, "GET", f"{gw.url}{path}")
            assert (status, envelope(body)["code"]) == (404, "NOT_FOUND"), path
    assert upstream.received == []


async def test_request_ids_are_kept_when_valid_and_generated_otherwise(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        _, headers, _ = await call(session, "GET", f"{gw.url}/v1/users/me", headers={"X-Request-Id": "svc-a:order.42_x-1"})
        assert headers["X-Request-Id"] == "svc-a:order.42_x-1"
        generated = []
        for bad in ("has space", "x" * 129, "semi;colon", ""):
            _, headers, _ = await call(session, "GET", f"{gw.url}/v1/users/me", headers={"X-Request-Id": bad})
            assert ULID_ID.match(headers["X-Request-Id"]), headers["X-Request-Id"]
            generated.append(headers["X-Request-Id"])
        _, headers, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert ULID_ID.match(headers["X-Request-Id"])
        generated.append(headers["X-Request-Id"])
    assert len(set(generated)) == len(generated)
    assert generated == sorted(generated)  # ULIDs are time-ordered
    sent = [r["headers"]["X-Request-Id"] for r in upstream.received]
    assert sent == ["svc-a:order.42_x-1", *generated]


async def test_upstream_errors_pass_through_unchanged(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    body_422 = b'{"status":"error","code":"VALIDATION_FAILED","errors":[{"field":"invitee.email","message":"bad"}],"requestId":"req_up1"}'
    body_500 = b"<html>upstream exploded</html>"
    upstream.then(
        Step(status=422, body=body_422, headers={"X-Upstream-Thing": "kept", "Cache-Control": "no-store"}),
        Step(status=500, body=body_500, headers={"Content-Type": "text/html"}),
    )
    async with gateway(gateway_document(upstream.url)) as gw:
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
        assert (status, body) == (422, body_422)
        assert headers["X-Upstream-Thing"] == "kept" and headers["Cache-Control"] == "no-store"
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
        assert (status, body) == (500, body_500)  # a POST without Idempotency-Key is not retried
        assert headers["Content-Type"] == "text/html"
        assert headers["X-Gateway-Attempts"] == "1"


async def test_hop_by_hop_headers_stop_at_the_gateway(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.then(Step(headers={"Connection": "close, X-Secret-Hop", "X-Secret-Hop": "hop", "Keep-Alive": "timeout=5", "X-End-To-End": "yes"}))
    async with gateway(gateway_document(upstream.url)) as gw:
        _, headers, _ = await call(
            session, "GET", f"{gw.url}/v1/users/me",
            headers={"Connection": "keep-alive, X-Caller-Hop", "X-Caller-Hop": "1", "Proxy-Authorization": "Basic x", "X-Caller-End": "yes", "X-PMC-Environment": "live"},
        )
    assert headers["X-End-To-End"] == "yes" and "X-Secret-Hop" not in headers and "Keep-Alive" not in headers
    sent = {k.lower() for k in upstream.received[0]["headers"]}
    assert "x-caller-end" in sent
    assert not sent & {"x-caller-hop", "proxy-authorization", "x-pmc-environment"}


async def test_oversized_body_is_413(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url, server={"max_body_bytes": 4096})) as gw:
        status, _, body = await call(session, "POST", f"{gw.url}/v1/bookings", data=b"x" * 5000, headers={"Content-Type": "application/json"})
        assert (status, envelope(body)["code"]) == (413, "PAYLOAD_TOO_LARGE")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming too
            for _ in range(10):
                yield b"y" * 1000

        status, _, body = await call(session, "POST", f"{gw.url}/v1/bookings", data=chunks())
        assert (status, envelope(body)["code"]) == (413, "PAYLOAD_TOO_LARGE")
        status, _, _ = await call(session, "POST", f"{gw.url}/v1/bookings", data=b"z" * 4000)
        assert status == 200
    assert [len(r["body"]) for r in upstream.received] == [4000]


async def test_refused_connection_is_502_after_every_attempt(session: aiohttp.ClientSession) -> None:
    document = gateway_document(f"http://127.0.0.1:{closed_port()}")
    async with gateway(document) as gw:
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
    assert (status, envelope(body)["code"]) == (502, "UPSTREAM_UNAVAILABLE")
    assert headers["X-Gateway-Attempts"] == "3"  # nothing was sent, so even a POST may be retried


async def test_attempt_timeout_and_deadline_give_504_in_time(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(delay_s=5)
    document = gateway_document(upstream.url, upstream={"attempt_timeout_ms": 300, "deadline_ms": 800})
    async with gateway(document) as gw:
        started = time.monotonic()
        status, headers, body = await call(session, "GET", f"{gw.url}/v1/users/me")
        elapsed = time.monotonic() - started
    assert (status, envelope(body)["code"]) == (504, "UPSTREAM_TIMEOUT")
    assert elapsed < 1.5, elapsed  # the 800 ms deadline holds, retries included
    assert int(headers["X-Gateway-Attempts"]) >= 2


async def test_caller_trace_is_continued_upstream(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with gateway(gateway_document(upstream.url)) as gw:
        await call(session, "GET", f"{gw.url}/v1/users/me", headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"})
    sent = upstream.received[0]["headers"]["traceparent"]
    _version, trace_id, parent_id, flags = sent.split("-")
    assert trace_id == caller_trace and parent_id != "00f067aa0ba902b7" and flags == "01"


async def test_health_and_ready(sim: tuple[str, Simulator], session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(sim[0])) as gw:
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/health", token=None)
        assert (status, json.loads(body)["status"]) == (200, "ok")
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/ready", token=None)
        assert (status, json.loads(body)) == (200, {"status": "ready"})
        gw.components.draining = True
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/ready", token=None)
        assert (status, json.loads(body)["status"]) == (503, "not_ready") and "shutting down" in json.loads(body)["problems"]


async def test_lost_connection_after_sending_is_not_retried_for_post(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    upstream.default = Step(drop=True)
    async with gateway(gateway_document(upstream.url)) as gw:
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=BOOKING)
        assert (status, envelope(body)["code"]) == (502, "UPSTREAM_UNAVAILABLE")
        assert headers["X-Gateway-Attempts"] == "1"  # ambiguous: it may have been booked
        status, headers, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
        assert status == 502 and headers["X-Gateway-Attempts"] == "3"  # a GET is safe to repeat
    assert len(upstream.received) == 4


def test_closed_port_really_refuses() -> None:
    port = closed_port()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 1):
        pass


async def test_a_403_names_its_client_and_says_the_gateway_made_it(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    """Regression (issue 21): a 403 carried client="" in metrics and null in the access log."""
    from tests.support.servers import ADMIN_TOKEN

    async with gateway(gateway_document(upstream.url)) as gw:
        status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN, headers={"X-PMC-Environment": "live"})
        assert status == 403
        await call(session, "GET", f"{gw.url}/v1/users/me")  # passed through
        metrics = (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN))[2].decode()
    counts = [line for line in metrics.splitlines() if line.startswith("http_server_request_duration_seconds_count{")]
    forbidden = [line for line in counts if 'http_response_status_code="403"' in line]
    assert forbidden and 'pmc_client="ops-tools"' in forbidden[0] and 'pmc_source="gateway"' in forbidden[0]
    assert any('http_response_status_code="200"' in line and 'pmc_source="upstream"' in line for line in counts)
