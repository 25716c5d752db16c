"""The upstream transport against a real nginx 1.22 (issue 19), and beside aiohttp's client
where a case runs through both: the gateway must do at least as well."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.nginx import ForwardProxy, Nginx, private_ca
from tests.support.servers import call, closed_port, gateway, gateway_document

pytestmark = pytest.mark.slow


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path)
    yield server
    server.stop()


def upstream_document(base_url: str, **upstream: Any) -> dict[str, Any]:
    return gateway_document(
        base_url,
        retry={"max_attempts": 1},  # the transport's own correctness, not hidden by retries
        upstream={"base_url": base_url, "connect_timeout_ms": 1000, "attempt_timeout_ms": 5000, "deadline_ms": 8000, **upstream},
    )


KEEPALIVE_S = 0.15  # nginx's keepalive_timeout, short so 200 spaced requests take 30 s, not 200


@pytest.fixture
def racing_nginx(tmp_path: Path) -> Iterator[Nginx]:
    server = Nginx(tmp_path, keepalive_timeout=f"{int(KEEPALIVE_S * 1000)}ms")
    yield server
    server.stop()


async def idle_close_race(send: Any, requests: int = 200) -> list[tuple[str, int]]:
    """One caller, requests spaced within 1 % either side of nginx's keepalive_timeout, so the
    pooled connection is closed by nginx just as a request is written; half POST without a key."""
    rng = random.Random(19)
    outcomes: list[tuple[str, int]] = []
    for i in range(requests):
        method = "POST" if i % 2 else "GET"
        outcomes.append((method, await send(method)))
        await asyncio.sleep(rng.uniform(KEEPALIVE_S * 0.99, KEEPALIVE_S * 1.01))
    return outcomes


async def aiohttp_failures_on_the_race(url: str, requests: int) -> int:
    async with aiohttp.ClientSession() as client:

        async def direct(method: str) -> int:
            try:
                async with client.request(method, f"{url}/v1/echo", json={"a": 1} if method == "POST" else None) as answer:
                    await answer.read()
                    return answer.status
            except aiohttp.ClientError:
                return 502

        return sum(status != 200 for _, status in await idle_close_race(direct, requests))


async def test_the_idle_close_race_gives_no_false_502(racing_nginx: Nginx, session: aiohttp.ClientSession) -> None:
    async with gateway(upstream_document(racing_nginx.url)) as gw:

        async def through(method: str) -> int:
            return (await call(session, method, f"{gw.url}/v1/echo", json={"a": 1} if method == "POST" else None))[0]

        outcomes = await idle_close_race(through)
    failures = [o for o in outcomes if o[1] != 200]
    posts_received = sum(1 for _, method, path, _ in racing_nginx.log() if method == "POST" and path == "/v1/echo")
    # aiohttp's pooled client on the same race, the baseline: the gateway does at least as well
    baseline = await aiohttp_failures_on_the_race(racing_nginx.url, 200)
    print(f"idle-close race, 200 requests: gateway {len(failures)} failed, aiohttp's client {baseline} failed")
    assert len(outcomes) == 200
    assert failures == []  # 0 false 502s in 200 requests
    assert posts_received == 100  # and no POST sent twice
    assert len(failures) <= baseline


async def test_keepalive_requests_closes_are_followed(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    async with gateway(upstream_document(nginx.closing_url)) as gw:
        statuses = [(await call(session, m, f"{gw.url}/v1/echo", json={} if m == "POST" else None))[0] for m in ["GET", "POST"] * 10]
    assert statuses == [200] * 20
    connections = {c for c, *_ in nginx.log()}
    assert len(connections) >= 20 // 3  # a new connection after every third answer (Connection: close)


async def test_an_answer_under_max_response_bytes_passes_whole(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    nginx.add_file("big.bin", 70 * 1024 * 1024)
    expected = (nginx.root / "files" / "big.bin").read_bytes()
    async with gateway(upstream_document(nginx.url, max_response_bytes=80 * 1024 * 1024)) as gw:
        status, _, body = await call(session, "GET", f"{gw.url}/v1/files/big.bin")
    assert status == 200 and body == expected


async def test_an_answer_over_max_response_bytes_is_502_at_once_and_not_retried(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    nginx.add_file("big.bin", 70 * 1024 * 1024)
    document = upstream_document(nginx.url)
    document["retry"] = {"max_attempts": 3, "base_delay_ms": 1, "max_delay_ms": 2}
    async with gateway(document) as gw:
        started = time.monotonic()
        status, headers, body = await call(session, "GET", f"{gw.url}/v1/files/big.bin")
        elapsed = time.monotonic() - started
    assert status == 502 and b"UPSTREAM_UNAVAILABLE" in body and b"max_response_bytes" in body
    assert headers["X-Gateway-Attempts"] == "1"  # deterministic: no retry, no second budget slot
    assert [m for _, m, p, _ in nginx.log() if p == "/v1/files/big.bin"] == ["GET"]
    assert elapsed < 2  # refused on its Content-Length, not after pulling 70 MB


async def test_a_chunked_answer_over_the_limit_stops_early(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    nginx.add_file("big.bin", 4 * 1024 * 1024)  # random bytes: gzip does not shrink them
    async with gateway(upstream_document(nginx.url, max_response_bytes=1024 * 1024)) as gw:
        status, _, body = await call(session, "GET", f"{gw.url}/v1/gzip/big.bin", headers={"Accept-Encoding": "gzip"})
    assert status == 502 and b"max_response_bytes" in body


async def test_head_keeps_content_length_and_reuses_the_pool(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    size = (nginx.root / "files" / "small.json").stat().st_size
    async with gateway(upstream_document(nginx.url)) as gw:
        answers = [await call(session, "HEAD", f"{gw.url}/v1/files/small.json") for _ in range(3)]
        status, _, body = await call(session, "GET", f"{gw.url}/v1/files/small.json")
    assert [a[0] for a in answers] == [200] * 3
    assert all(a[1]["Content-Length"] == str(size) and "ETag" in a[1] for a in answers)
    assert status == 200 and len(body) == size  # the connection stayed in step after HEADs
    assert len({c for c, *_ in nginx.log()}) == 1  # one pooled connection for all four


async def test_204_304_and_gzip_pass_through_as_nginx_sent_them(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    async with gateway(upstream_document(nginx.url)) as gw:
        no_content = await call(session, "GET", f"{gw.url}/v1/nocontent")
        first = await call(session, "GET", f"{gw.url}/v1/files/small.json")
        unchanged = await call(session, "GET", f"{gw.url}/v1/files/small.json", headers={"If-None-Match": first[1]["ETag"]})
        async with session.get(f"{gw.url}/v1/gzip/small.json", headers={"Authorization": f"Bearer {_web_token()}", "Accept-Encoding": "gzip"}, auto_decompress=False) as answer:
            compressed = await answer.read()
            encoding = answer.headers.get("Content-Encoding")
    assert (no_content[0], no_content[2]) == (204, b"")
    assert (unchanged[0], unchanged[2]) == (304, b"")
    assert encoding == "gzip" and gzip.decompress(compressed) == (nginx.root / "files" / "small.json").read_bytes()


def _web_token() -> str:
    from tests.support.servers import WEB_TOKEN

    return WEB_TOKEN


async def test_tls_with_a_private_ca(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    ca, cert, key = private_ca(tmp_path, "localhost")
    server = Nginx(tmp_path, tls=(cert, key))
    try:
        async with gateway(upstream_document(server.url, ca_file=str(ca))) as gw:
            assert (await call(session, "GET", f"{gw.url}/v1/echo"))[0] == 200
        async with gateway(upstream_document(server.url)) as gw:  # without the CA: not trusted
            status, _, body = await call(session, "GET", f"{gw.url}/v1/echo")
            assert status == 502 and b"UPSTREAM_UNAVAILABLE" in body
    finally:
        server.stop()


@pytest.fixture
async def tls_upstream_behind_a_proxy(tmp_path: Path) -> AsyncIterator[tuple[Nginx, Path]]:
    ca, cert, key = private_ca(tmp_path, "api.pinmycal.internal")
    server = Nginx(tmp_path, tls=(cert, key))
    yield server, ca
    server.stop()


async def test_https_through_an_egress_proxy_from_the_environment(tls_upstream_behind_a_proxy: tuple[Nginx, Path], session: aiohttp.ClientSession) -> None:
    server, ca = tls_upstream_behind_a_proxy
    proxy = ForwardProxy({"api.pinmycal.internal": "127.0.0.1"})
    proxy_url = await proxy.start()
    base = f"https://api.pinmycal.internal:{server.port}"  # a name only the proxy can resolve
    try:
        async with gateway(upstream_document(base, ca_file=str(ca))) as gw:
            status, _, body = await call(session, "GET", f"{gw.url}/v1/echo")
            assert status == 502 and b"gaierror" in body  # directly, the name does not resolve
        async with gateway(upstream_document(base, ca_file=str(ca)), env={"HTTPS_PROXY": proxy_url}) as gw:
            assert [(await call(session, "GET", f"{gw.url}/v1/echo"))[0] for _ in range(3)] == [200] * 3
        async with gateway(upstream_document(base, ca_file=str(ca)), env={"HTTPS_PROXY": proxy_url, "NO_PROXY": ".internal"}) as gw:
            assert (await call(session, "GET", f"{gw.url}/v1/echo"))[0] == 502  # NO_PROXY: direct again
    finally:
        await proxy.close()
    assert proxy.seen[0] == f"CONNECT api.pinmycal.internal:{server.port} HTTP/1.1"
    assert len(proxy.seen) == 1  # one tunnel, kept alive for all three


async def test_a_plain_http_upstream_through_proxy_url(nginx: Nginx, session: aiohttp.ClientSession) -> None:
    proxy = ForwardProxy({"pinmycal.internal": "127.0.0.1"})
    proxy_url = await proxy.start()
    try:
        async with gateway(upstream_document(f"http://pinmycal.internal:{nginx.port}", proxy_url=proxy_url)) as gw:
            assert (await call(session, "GET", f"{gw.url}/v1/echo"))[0] == 200
    finally:
        await proxy.close()
    assert proxy.seen == [f"GET http://pinmycal.internal:{nginx.port}/v1/echo HTTP/1.1"]


async def test_proxy_credentials_come_from_the_environment_and_are_never_shown(tls_upstream_behind_a_proxy: tuple[Nginx, Path], session: aiohttp.ClientSession) -> None:
    server, ca = tls_upstream_behind_a_proxy
    proxy = ForwardProxy({"api.pinmycal.internal": "127.0.0.1"}, credentials="egress:s3cret-pass")
    proxy_url = await proxy.start()
    base = f"https://api.pinmycal.internal:{server.port}"
    try:
        async with gateway(upstream_document(base, ca_file=str(ca)), env={"HTTPS_PROXY": proxy_url}) as gw:
            status, _, body = await call(session, "GET", f"{gw.url}/v1/echo")
        assert status == 502 and b"407" in body and f"127.0.0.1:{proxy.port}".encode() in body  # names the proxy
        with_credentials = proxy_url.replace("http://", "http://egress:s3cret-pass@")
        async with gateway(upstream_document(base, ca_file=str(ca)), env={"HTTPS_PROXY": with_credentials}) as gw:
            status, _, body = await call(session, "GET", f"{gw.url}/v1/echo")
            status_doc = (await call(session, "GET", f"{gw.url}/_gateway/status", token=_admin()))[2]
        assert status == 200
        assert b"s3cret" not in status_doc
    finally:
        await proxy.close()


def _admin() -> str:
    from tests.support.servers import ADMIN_TOKEN

    return ADMIN_TOKEN


async def test_a_proxy_that_is_down_is_named_at_once(session: aiohttp.ClientSession) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    async with gateway(upstream_document("https://api.pinmycal.internal", proxy_url=down)) as gw:
        started = time.monotonic()
        status, _, body = await call(session, "GET", f"{gw.url}/v1/echo")
    assert status == 502 and b"egress proxy" in body and down.removeprefix("http://").encode() in body
    assert time.monotonic() - started < 2  # never a hang


async def test_webhook_deliveries_go_through_the_egress_proxy(session: aiohttp.ClientSession) -> None:
    from tests.support.servers import WEBHOOK_SECRET
    from tests.support.webhooks import Subscriber, signed

    subscriber = Subscriber()
    await subscriber.start()
    proxy = ForwardProxy({"hooks.internal": "127.0.0.1"})
    proxy_url = await proxy.start()
    document = upstream_document("http://127.0.0.1:9", proxy_url=proxy_url)
    document["webhooks"] = {
        "secret_envs": ["PMC_WEBHOOK_SECRET"], "allow_insecure_http": True, "delivery_base_delay_ms": 50,
        "subscribers": [{"name": "booking-svc", "url": f"http://hooks.internal:{subscriber.port}/hooks"}],
    }
    try:
        async with gateway(document) as gw:
            body, headers = signed({"eventId": "evt_proxy_1", "type": "booking.created", "data": {"bookingId": "bk_1"}}, WEBHOOK_SECRET)
            async with session.post(f"{gw.url}/webhooks/pinmycal", data=body, headers=headers) as answer:
                assert answer.status == 200
            deadline = time.monotonic() + 10
            while not subscriber.deliveries and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
    finally:
        await proxy.close()
        await subscriber.stop()
    assert subscriber.event_ids() == ["evt_proxy_1"]  # hooks.internal resolves only behind the proxy
    assert proxy.seen == [f"POST http://hooks.internal:{subscriber.port}/hooks HTTP/1.1"]
