"""Webhook ingress and relay (SPEC §7) with real HTTP subscribers and a real redis-server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.tools.sim.server import Faults, SimConfig, start_sim
from gateway.webhooks.signature import sign, verify
from tests.support.servers import (
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    GatewayProcess,
    call,
    closed_port,
    free_port,
    gateway,
    gateway_document,
    start_gateway_process,
)
from tests.support.webhooks import Subscriber, signed

PATH = "/webhooks/pinmycal"
EVENT = {"eventId": "evt_01HZX3K9", "type": "booking.created", "data": {"bookingId": "bk_1027"}}
PREVIOUS = "whsec_previous_0001"
SUB_SECRET = "whsec_subscriber_0001"


def test_spec_test_vector() -> None:
    body = b'{"eventId":"evt_01HZX3K9","type":"booking.created","data":{"bookingId":"bk_1027"}}'
    assert sign(b"whsec_test_2f9c1e", "1773135000", body) == "sha256=18609880e35d96261c69891fd8b5ff953e6a3d66f167bbafc9a98bd355e27355"
    verify(
        secrets=[b"whsec_test_2f9c1e"],
        timestamp_header="1773135000",
        signature_header="sha256=18609880e35d96261c69891fd8b5ff953e6a3d66f167bbafc9a98bd355e27355",
        body=body,
        now=1773135000 + 299,
        tolerance_s=300,
    )


def document(upstream: str, subscribers: list[dict[str, Any]], **webhooks: Any) -> dict[str, Any]:
    doc = gateway_document(upstream)
    doc["webhooks"] = {
        "secret_envs": ["PMC_WEBHOOK_SECRET", "PMC_WEBHOOK_SECRET_PREVIOUS"],
        "allow_insecure_http": True,
        "delivery_base_delay_ms": 50,
        "delivery_max_delay_s": 0.2,
        "subscribers": subscribers,
        **webhooks,
    }
    return doc


def subscriber_entry(sub: Subscriber, name: str = "booking-svc", **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": sub.url, **extra}


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def post_event(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with session.post(url + PATH, data=body, headers=headers) as response:
        return response.status, json.loads(await response.read())


async def test_verification_cases(session: aiohttp.ClientSession) -> None:
    sub = Subscriber()
    await sub.start()
    env = {"PMC_WEBHOOK_SECRET_PREVIOUS": PREVIOUS}
    async with gateway(document("http://127.0.0.1:9", [subscriber_entry(sub)]), env=env) as gw:
        body, headers = signed(EVENT, WEBHOOK_SECRET)
        status, answer = await post_event(session, gw.url, body, headers)
        assert status == 200 and answer["status"] == "ok" and answer["eventId"] == "evt_01HZX3K9" and answer["requestId"].startswith("req_")
        assert "duplicate" not in answer
        status, answer = await post_event(session, gw.url, body, headers)
        assert status == 200 and answer["duplicate"] is True

        now = int(time.time())  # truncated, and the cases run after it: 10 s past the 300 s, not 1
        cases = {
            "wrong secret": (signed({**EVENT, "eventId": "e2"}, "whsec_wrong")[1], 401, "INVALID_SIGNATURE"),
            "missing signature": ({"X-PMC-Timestamp": str(now)}, 401, "INVALID_SIGNATURE"),
            "missing timestamp": ({"X-PMC-Signature": "sha256=" + "0" * 64}, 401, "INVALID_SIGNATURE"),
            "malformed": ({"X-PMC-Timestamp": str(now), "X-PMC-Signature": "md5=abc"}, 401, "INVALID_SIGNATURE"),
            "stale": (signed({**EVENT, "eventId": "e3"}, WEBHOOK_SECRET, now - 310)[1], 401, "STALE_TIMESTAMP"),
            "future": (signed({**EVENT, "eventId": "e4"}, WEBHOOK_SECRET, now + 310)[1], 401, "STALE_TIMESTAMP"),
        }
        for name, (case_headers, want_status, want_code) in cases.items():
            case_body = signed({**EVENT, "eventId": name.replace(" ", "-")}, WEBHOOK_SECRET)[0] if name in ("missing signature", "missing timestamp", "malformed") else None
            payload = case_body or json.dumps({**EVENT, "eventId": {"wrong secret": "e2", "stale": "e3", "future": "e4"}[name]}, separators=(",", ":")).encode()
            status, answer = await post_event(session, gw.url, payload, case_headers)
            assert (status, answer["code"], answer["source"]) == (want_status, want_code, "gateway"), name

        rotated_body, rotated = signed({**EVENT, "eventId": "e5"}, PREVIOUS)
        assert (await post_event(session, gw.url, rotated_body, rotated))[0] == 200  # the previous secret still works
        several = {**rotated, "X-PMC-Signature": f"sha256={'1' * 64}, {rotated['X-PMC-Signature']}"}
        assert (await post_event(session, gw.url, rotated_body, several))[1]["duplicate"] is True

        for bad in (b"not json", b"[1,2]", b'{"type":"booking.created"}', b'{"eventId":"x y","type":"t"}'):
            ts = str(int(time.time()))
            status, answer = await post_event(session, gw.url, bad, {"X-PMC-Timestamp": ts, "X-PMC-Signature": sign(WEBHOOK_SECRET.encode(), ts, bad)})
            assert (status, answer["code"]) == (400, "BAD_REQUEST"), bad
        big = json.dumps({**EVENT, "eventId": "big", "pad": "x" * 1_100_000}).encode()
        ts = str(int(time.time()))
        status, answer = await post_event(session, gw.url, big, {"X-PMC-Timestamp": ts, "X-PMC-Signature": sign(WEBHOOK_SECRET.encode(), ts, big)})
        assert (status, answer["code"]) == (413, "PAYLOAD_TOO_LARGE")

        metrics = (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN))[2].decode()
        await wait_for(lambda: len(sub.deliveries) == 2)
    await sub.stop()
    assert 'pmc_gateway_webhook_rejected_total{reason="invalid_signature"} 4.0' in metrics
    assert 'pmc_gateway_webhook_rejected_total{reason="stale_timestamp"} 2.0' in metrics
    assert 'pmc_gateway_webhook_rejected_total{reason="bad_request"} 4.0' in metrics
    assert 'pmc_gateway_webhook_rejected_total{reason="payload_too_large"} 1.0' in metrics
    assert sorted(sub.event_ids()) == ["e5", "evt_01HZX3K9"]  # accepted ones, each once


async def test_deliveries_carry_the_original_body_and_a_verifiable_signature(session: aiohttp.ClientSession) -> None:
    all_events, cancellations = Subscriber(), Subscriber()
    await all_events.start()
    await cancellations.start()
    subscribers = [
        subscriber_entry(all_events, "all", secret_env="SUB_SECRET"),
        subscriber_entry(cancellations, "cancellations", events=["booking.cancelled"]),
    ]
    async with gateway(document("http://127.0.0.1:9", subscribers), env={"SUB_SECRET": SUB_SECRET}) as gw:
        created_body, headers = signed(EVENT, WEBHOOK_SECRET)
        await post_event(session, gw.url, created_body, headers)
        cancelled_body, headers = signed({"eventId": "evt_c", "type": "booking.cancelled", "data": {}}, WEBHOOK_SECRET)
        await post_event(session, gw.url, cancelled_body, headers)
        await wait_for(lambda: len(all_events.deliveries) == 2 and len(cancellations.deliveries) == 1)
        await asyncio.sleep(0.3)
    await all_events.stop()
    await cancellations.stop()
    first = next(d for d in all_events.deliveries if d["headers"]["X-PMC-Event-Id"] == "evt_01HZX3K9")
    assert first["body"] == created_body and first["headers"]["X-PMC-Event-Type"] == "booking.created"
    verify(secrets=[SUB_SECRET.encode()], timestamp_header=first["headers"]["X-PMC-Timestamp"], signature_header=first["headers"]["X-PMC-Signature"], body=first["body"], now=time.time(), tolerance_s=60)
    assert cancellations.event_ids() == ["evt_c"] and "X-PMC-Signature" not in cancellations.deliveries[0]["headers"]
    assert len(all_events.deliveries) == 2


async def test_subscriber_down_then_up_receives_the_event_once(session: aiohttp.ClientSession) -> None:
    port = free_port()
    sub = Subscriber(port)
    async with gateway(document("http://127.0.0.1:9", [subscriber_entry(sub)])) as gw:
        body, headers = signed(EVENT, WEBHOOK_SECRET)
        assert (await post_event(session, gw.url, body, headers))[0] == 200
        await asyncio.sleep(0.8)  # several failed rounds while nothing listens
        status = json.loads((await call(session, "GET", f"{gw.url}/_gateway/status", token=ADMIN_TOKEN))[2])
        assert status["webhooks"]["backlog"] == 1
        sub.fail_next = 2  # then it answers 503 twice
        await sub.start()
        await wait_for(lambda: len(sub.deliveries) == 1)
        await asyncio.sleep(0.6)
    await sub.stop()
    assert sub.event_ids() == ["evt_01HZX3K9"]


async def test_exhausted_deliveries_become_dead_letters_and_replay(session: aiohttp.ClientSession) -> None:
    port = free_port()
    sub = Subscriber(port)
    doc = document("http://127.0.0.1:9", [subscriber_entry(sub)], delivery_horizon_s=0.5)
    async with gateway(doc) as gw:
        body, headers = signed(EVENT, WEBHOOK_SECRET)
        await post_event(session, gw.url, body, headers)
        dead_url = f"{gw.url}/_gateway/webhooks/dead-letters"

        async def dead() -> list[dict[str, Any]]:
            letters: list[dict[str, Any]] = json.loads((await call(session, "GET", dead_url, token=ADMIN_TOKEN))[2])["deadLetters"]
            return letters

        deadline = time.monotonic() + 10
        while not (letters := await dead()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert [d["eventId"] for d in letters] == ["evt_01HZX3K9"]
        assert letters[0]["attempts"] >= 2 and "booking-svc" in letters[0]["lastError"] and letters[0]["body"] == body.decode()
        assert (await call(session, "GET", dead_url, token=None))[0] == 401

        await sub.start()
        replay = f"{dead_url}/evt_01HZX3K9/replay"
        assert (await call(session, "POST", replay, token=None))[0] == 401
        status, _, answer = await call(session, "POST", replay, token=ADMIN_TOKEN)
        assert status == 200 and json.loads(answer)["replayed"] is True
        await wait_for(lambda: sub.event_ids() == ["evt_01HZX3K9"])
        assert await dead() == []
        assert (await call(session, "POST", replay, token=ADMIN_TOKEN))[0] == 404
    await sub.stop()


async def test_store_down_means_503_so_the_sender_retries(session: aiohttp.ClientSession) -> None:
    doc = document("http://127.0.0.1:9", [])
    doc["store"] = {"url": f"redis://127.0.0.1:{closed_port()}/0"}
    async with gateway(doc) as gw:
        body, headers = signed(EVENT, WEBHOOK_SECRET)
        status, answer = await post_event(session, gw.url, body, headers)
    assert (status, answer["code"]) == (503, "STORE_UNAVAILABLE")


async def test_concurrent_posts_of_one_event_through_two_processes_deliver_once(redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    sub = Subscriber()
    await sub.start()
    doc = document("http://127.0.0.1:9", [subscriber_entry(sub)])
    doc["store"] = {"url": redis_url}
    processes += [start_gateway_process(doc, tmp_path, name=f"gw{i}") for i in range(2)]
    for n in range(5):
        body, headers = signed({**EVENT, "eventId": f"evt_race_{n}"}, WEBHOOK_SECRET)
        answers = await asyncio.gather(*(post_event(session, p.url, body, headers) for p in processes for _ in range(2)))
        assert all(status == 200 for status, _ in answers)
        assert sum(1 for _, a in answers if not a.get("duplicate")) == 1
    await wait_for(lambda: len(sub.deliveries) >= 5)
    await asyncio.sleep(1.0)
    await sub.stop()
    assert sorted(sub.event_ids()) == [f"evt_race_{n}" for n in range(5)]


async def test_event_accepted_before_a_sigkill_is_delivered_after_restart(redis_url: str, tmp_path: Path, processes: list[GatewayProcess], session: aiohttp.ClientSession) -> None:
    port = free_port()
    sub = Subscriber(port)
    doc = document("http://127.0.0.1:9", [subscriber_entry(sub)])
    doc["store"] = {"url": redis_url}
    first = start_gateway_process(doc, tmp_path, name="before")
    processes.append(first)
    body, headers = signed(EVENT, WEBHOOK_SECRET)
    assert (await post_event(session, first.url, body, headers))[0] == 200
    first.kill()  # SIGKILL: no drain, no flush
    await sub.start()
    second = start_gateway_process(doc, tmp_path, name="after")
    processes.append(second)
    await wait_for(lambda: sub.event_ids() == ["evt_01HZX3K9"], timeout=15)
    await sub.stop()


async def test_simulator_webhooks_flow_through_to_subscribers(session: aiohttp.ClientSession) -> None:
    sub = Subscriber()
    await sub.start()
    gateway_port = free_port()
    runner, sim_port, _ = await start_sim(
        SimConfig(port=0, faults=Faults(latency_ms=0), webhook_url=f"http://127.0.0.1:{gateway_port}{PATH}", webhook_secret=WEBHOOK_SECRET.encode(), webhook_base_delay_s=0.2)
    )
    doc = document(f"http://127.0.0.1:{sim_port}", [subscriber_entry(sub)])
    doc["server"] = {**doc["server"], "listen": f"127.0.0.1:{gateway_port}"}
    try:
        async with gateway(doc) as gw:
            booking = {"eventTypeId": "evt_demo", "invitee": {"name": "J", "email": "j@c.com"}, "start": "2026-03-10T09:30:00Z", "timezone": "UTC"}
            status, _, body = await call(session, "POST", f"{gw.url}/v1/bookings", json=booking)
            assert status == 200
            booking_id = json.loads(body)["bookingId"]
            await call(session, "POST", f"{gw.url}/v1/bookings/{booking_id}/cancel")
            await wait_for(lambda: len(sub.deliveries) == 2)
    finally:
        await runner.cleanup()
        await sub.stop()
    types = [d["headers"]["X-PMC-Event-Type"] for d in sub.deliveries]
    assert sorted(types) == ["booking.cancelled", "booking.created"]


def make_certificate(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "gateway.crt", tmp_path / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_1_2_accepted_and_1_1_refused(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    doc = gateway_document("http://127.0.0.1:9")
    doc["server"] = {**doc["server"], "tls": {"cert_file": str(cert), "key_file": str(key)}}
    async with gateway(doc) as gw:
        port = int(gw.url.rsplit(":", 1)[1])

        def handshake(version: ssl.TLSVersion) -> str:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(cafile=str(cert))
            context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old version at all
            context.minimum_version = context.maximum_version = version
            import socket

            with socket.create_connection(("127.0.0.1", port), 5) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return f"{tls.version()} " + tls.recv(64).decode(errors="replace").split("\r\n")[0]

        assert await asyncio.to_thread(handshake, ssl.TLSVersion.TLSv1_2) == "TLSv1.2 HTTP/1.1 200 OK"
        # the server refuses: an alert (plain asyncio) or a closed handshake (uvloop)
        with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNEXPECTED_EOF"):
            await asyncio.to_thread(handshake, ssl.TLSVersion.TLSv1_1)
