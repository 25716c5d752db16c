"""Bad input and attacks against a real gateway process: always a clean refusal, never a
traceback, a hang, a leaked secret, or a request forwarded that should not have been."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import ssl
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import settings as settings_module
from gateway.errors import BadRequest, ConfigError
from gateway.inbound.path_safety import check_target
from gateway.tools.sim.server import Faults, SimConfig, start_sim
from tests.support.servers import (
    ADMIN_TOKEN,
    OPS_TOKEN,
    SECRET_VALUES,
    WEB_TOKEN,
    GatewayProcess,
    ScriptedUpstream,
    call,
    gateway,
    gateway_document,
    start_gateway_process,
)

fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Peer:
    """A gateway process in front of a recording simulator, driven with raw sockets."""

    def __init__(self, tmp: Path) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        threading.Thread(target=self._run_sim, daemon=True).start()
        self.ready.wait(10)
        self.process: GatewayProcess = start_gateway_process(gateway_document(self.sim_url, server={"max_body_bytes": 4096}), tmp)
        self.port = int(self.process.url.rsplit(":", 1)[1])

    def _run_sim(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.runner, port, self.simulator = await start_sim(SimConfig(port=0, rate_limit=0, faults=Faults(latency_ms=0)))
            self.sim_url = f"http://127.0.0.1:{port}"
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def raw(self, payload: bytes, timeout: float = 5.0) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout) as sock:
            sock.sendall(payload)
            chunks = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)

    def forwarded(self) -> list[dict[str, Any]]:
        return list(self.simulator.received)

    def close(self) -> None:
        self.process.terminate()
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    running = Peer(tmp_path_factory.mktemp("hardening"))
    yield running
    running.close()
    output = running.process.output()
    assert "Traceback" not in output, "the gateway printed a traceback under fuzzing"
    for secret in SECRET_VALUES:
        assert secret not in output


def status_of(response: bytes) -> int:
    assert response.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), response[:80]  # 1.0 when the request line was unreadable
    return int(response[9:12])


def body_of(response: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.split(b"\r\n\r\n", 1)[1] or b"{}")
    return body


PIECES = [*"abc./%2eE5cC0fF\\:;@~-_", "%2e", "%2E", "..", "%25", "%2f", "%5c", "%00", "//", "bookings", "users", "me"]
segment = st.lists(st.sampled_from(PIECES), max_size=6).map("".join)


@fuzz
@given(segments=st.lists(segment, min_size=1, max_size=5), query=st.text(alphabet="abc=&%.?/#", max_size=10))
def test_fuzzed_targets_are_refused_or_forwarded_safely(peer: Peer, segments: list[str], query: str) -> None:
    target = "/v1/" + "/".join(segments) + (f"?{query}" if query else "")
    before = len(peer.forwarded())
    response = peer.raw(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEB_TOKEN}\r\nConnection: close\r\n\r\n".encode("latin-1"))
    status = status_of(response)
    after = peer.forwarded()[before:]
    try:
        check_target(target)
        safe = True
    except BadRequest:
        safe = False
    if not safe:
        assert status == 400 and body_of(response)["code"] == "BAD_REQUEST" and after == []
    for forwarded in after:  # whatever reached the upstream stayed under /v1/ with no climbing segment
        path = forwarded["path"].split("?", 1)[0]
        assert path.startswith("/v1/") and "/../" not in path + "/" and "//" not in path


header_value = st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=300)


@fuzz
@given(name=st.sampled_from(["X-Request-Id", "Idempotency-Key", "X-PMC-Environment", "traceparent", "X-Custom", "Authorization"]), value=header_value, duplicate=st.booleans())
def test_fuzzed_headers_get_an_answer_never_a_crash(peer: Peer, name: str, value: str, duplicate: bool) -> None:
    auth = "" if name == "Authorization" else f"Authorization: Bearer {WEB_TOKEN}\r\n"
    extra = f"{name}: {value}\r\n" * (2 if duplicate else 1)
    response = peer.raw(f"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n{auth}{extra}Connection: close\r\n\r\n".encode("latin-1"))
    status = status_of(response)
    assert status in (200, 400, 401, 403), (status, response[:200])
    if status == 200:
        returned = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        request_id = next(line.split(": ", 1)[1] for line in returned.split("\r\n") if line.startswith("x-request-id:"))
        assert len(request_id) <= 128 and "\n" not in request_id


@pytest.mark.parametrize(
    "injection",
    [
        "X-Request-Id: abc\r\nX-Injected: 1",
        "X-Custom: a\rb",
        "X-Custom: a\nSet-Cookie: x=1",
        "X-Custom: " + "a" * 10000,  # beyond the 8190-byte field limit
        "Bad Header Name: 1",
    ],
)
def test_header_injection_and_oversized_headers(peer: Peer, injection: str) -> None:
    before = len(peer.forwarded())
    response = peer.raw(f"GET /v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEB_TOKEN}\r\n{injection}\r\nConnection: close\r\n\r\n".encode())
    status = status_of(response) if response else 400
    if status == 200:  # the line split into two legitimate-looking headers: nothing of it may come back
        assert b"x-injected" not in response.lower() and b"set-cookie" not in response.lower()
    else:
        assert status in (400, 431) and len(peer.forwarded()) == before


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Content-Length: -1\r\n\r\n",
    ],
)
def test_request_smuggling_is_refused(peer: Peer, framing: str) -> None:
    before = len(peer.forwarded())
    response = peer.raw(f"POST /v1/bookings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEB_TOKEN}\r\n{framing}".encode())
    assert status_of(response) == 400 and body_of(response)["code"] == "BAD_REQUEST"
    assert body_of(response)["source"] == "gateway"
    assert len(peer.forwarded()) == before


@fuzz
@given(body=st.binary(max_size=6000))
def test_fuzzed_bodies(peer: Peer, body: bytes) -> None:
    response = peer.raw(
        f"POST /v1/bookings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEB_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    status = status_of(response)
    try:
        parses = not body or json.loads(body) is not ... # an empty body is no JSON document to check
    except ValueError:
        parses = False
    # SPEC §4: a body that says JSON but does not parse is 400, without an upstream call
    assert status in ((413,) if len(body) > 4096 else (200, 422) if parses else (400,))


def test_admin_endpoints_need_the_admin_token(peer: Peer) -> None:
    for method, path in (("GET", "/_gateway/status"), ("GET", "/_gateway/metrics"), ("GET", "/_gateway/requests/x"),
                         ("GET", "/_gateway/webhooks/dead-letters"), ("POST", "/_gateway/webhooks/dead-letters/x/replay"), ("POST", "/_gateway/reload")):
        for token in (None, WEB_TOKEN, OPS_TOKEN, ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", "Basic " + ADMIN_TOKEN):
            auth = "" if token is None else (f"Authorization: {token}\r\n" if token.startswith("Basic") else f"Authorization: Bearer {token}\r\n")
            response = peer.raw(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            assert status_of(response) == 401, (method, path, token)
        ok = peer.raw(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        assert status_of(ok) != 401
    for open_path in ("/_gateway/health", "/_gateway/ready", "/_gateway/dashboard"):
        assert status_of(peer.raw(f"GET {open_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())) == 200


@fuzz
@given(document=st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["server", "store", "upstream", "environments", "clients", "retry", "listen", "url", "workers", "live", "token_sha256", "environments", "x"]), children, max_size=4),
    max_leaves=12,
))
def test_fuzzed_config_documents_only_ever_raise_config_errors(document: Any) -> None:
    if not isinstance(document, dict):
        document = {"server": document}
    try:
        settings_module.parse(document)
    except ConfigError as exc:
        assert exc.problems and all(":" in p for p in exc.problems)


@fuzz
@given(text=st.text(max_size=200))
def test_fuzzed_config_files_never_crash_check_config(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("cfg") / "gateway.toml"
    path.write_text(text)
    try:
        settings_module.load(path)
    except ConfigError:
        pass
    else:
        tomllib.loads(text)  # only valid TOML that validates can load


async def test_upstream_tls_is_verified_and_a_ca_file_fixes_it(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    from tests.integration.test_webhooks import make_certificate

    cert, key = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    upstream = ScriptedUpstream()
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    try:
        async with gateway(gateway_document(f"https://127.0.0.1:{port}", retry={"max_attempts": 1})) as gw:
            status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me")
            assert (status, json.loads(body)["code"]) == (502, "UPSTREAM_UNAVAILABLE")  # self-signed: refused
        assert upstream.received == []
        async with gateway(gateway_document(f"https://127.0.0.1:{port}", upstream={"ca_file": str(cert)})) as gw:
            status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
            assert status == 200  # the configured CA bundle makes it trusted
        assert len(upstream.received) == 1
    finally:
        await runner.cleanup()


async def test_undecodable_bytes_never_stop_records_or_log_lines() -> None:
    """Bytes that were not UTF-8 reach Python as lone surrogates; orjson refuses those. The
    triage writer and the access log must still write them (escaped), not crash."""
    import structlog

    from gateway.admin.triage import RecordWriter
    from gateway.core.clock import ManualClock
    from gateway.observability import log
    from gateway.request.record import RequestRecord
    from gateway.store.memory import MemoryStore

    writer = RecordWriter(MemoryStore(ManualClock()))
    writer.submit(RequestRecord(request_id="req_odd", started_at=0.0, path="/v1/users/\udcff"))
    assert await writer.flush()
    stored = await writer.get("req_odd")
    assert stored is not None and stored["path"] == "/v1/users/\udcff"
    lines = io.StringIO()
    previous = log.configure(stream=lines)
    try:
        structlog.get_logger("t").warning("odd", value="\udcff")
    finally:
        log.configure(stream=previous)
    assert '"value":"\\udcff"' in lines.getvalue()
