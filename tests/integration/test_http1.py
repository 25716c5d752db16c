"""The upstream transport (gateway/upstream/http1.py) against real sockets that answer byte for byte."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.upstream.http1 import (
    BadHeader,
    ConnectFailed,
    ExchangeFailed,
    ExchangeTimeout,
    Http1Origin,
)
from tests.support.servers import closed_port

Answer = Callable[[bytes], bytes | None]  # request head → raw answer (None: hang up without one)


class RawServer:
    """Reads one request head (and its Content-Length body) at a time and writes back raw bytes."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                raw = self.answer(head)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if b"connection: close" in raw.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Answer], asyncio.Future[tuple[RawServer, Http1Origin]]]]:
    made: list[tuple[RawServer, Http1Origin]] = []

    async def make(answer: Answer, **options: float) -> tuple[RawServer, Http1Origin]:
        server = RawServer(answer)
        port = await server.start()
        origin = Http1Origin("127.0.0.1", port, ssl_context=None, **options)  # type: ignore[arg-type]
        made.append((server, origin))
        return server, origin

    yield make  # type: ignore[misc]
    for server, origin in made:
        await origin.close()
        await server.close()


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> Answer:
    return lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def get(origin: Http1Origin, method: str = "GET", headers=(), body: bytes = b"", timeout_s: float = 2.0):  # type: ignore[no-untyped-def]
    return await origin.request(method, "/v1/users/me?x=1", list(headers), body, timeout_s=timeout_s, connect_timeout_s=1.0)


async def test_request_is_one_well_formed_message_and_connections_are_reused(raw) -> None:  # type: ignore[no-untyped-def]
    server, origin = await raw(ok(extra=b"X-Upstream: yes\r\n"))
    first = await get(origin, "POST", [("Content-Type", "application/json"), ("X-Request-Id", "req_1")], b'{"a":1}')
    second = await get(origin)
    assert (first.status, first.body) == (200, b'{"ok":true}')
    assert ("X-Upstream", "yes") in first.headers
    assert server.requests[0] == (
        f"POST /v1/users/me?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{origin.port}\r\nContent-Type: application/json\r\n"
        'X-Request-Id: req_1\r\nContent-Length: 7\r\n\r\n{"a":1}'
    ).encode()
    assert b"Content-Length" not in server.requests[1]  # a GET without a body says nothing about one
    assert second.status == 200 and server.connections == 1


async def test_chunked_and_close_delimited_answers_are_read_whole(raw) -> None:  # type: ignore[no-untyped-def]
    _, chunked = await raw(lambda _: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert (await get(chunked)).body == b"hello world"
    _, closing = await raw(lambda _: b"HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nuntil the end")
    assert (await get(closing)).body == b"until the end"
    assert (await get(closing)).body == b"until the end"  # a fresh connection for the next one


async def test_head_answers_and_informational_answers(raw) -> None:  # type: ignore[no-untyped-def]
    _, head = await raw(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    response = await get(head, "HEAD")
    assert response.status == 200 and response.body == b""
    _, early = await raw(lambda _: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    response = await get(early, "POST")
    assert (response.status, response.body) == (201, b"ok")
    assert ("Link", "</a>") not in response.headers


async def test_header_injection_is_refused_before_sending(raw) -> None:  # type: ignore[no-untyped-def]
    server, origin = await raw(ok())
    for bad in ("a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b"):
        with pytest.raises(BadHeader):
            await get(origin, headers=[("X-Value", bad)])
    assert server.requests == []


async def test_timeout_means_maybe_sent_and_the_connection_is_not_reused(raw) -> None:  # type: ignore[no-untyped-def]
    server, origin = await raw(lambda head: ok()(head) if b"fast" in head else b"")  # never answers the slow one
    started = time.monotonic()
    with pytest.raises(ExchangeTimeout) as caught:
        await get(origin, timeout_s=0.2)
    assert caught.value.sent and 0.19 <= time.monotonic() - started < 1.0
    assert (await get(origin, headers=[("X-Speed", "fast")])).status == 200
    assert server.connections == 2


async def test_refused_connect_means_not_sent(raw) -> None:  # type: ignore[no-untyped-def]
    origin = Http1Origin("127.0.0.1", closed_port(), ssl_context=None)
    with pytest.raises(ConnectFailed) as caught:
        await get(origin)
    assert not caught.value.sent


async def test_hang_up_without_answer_means_maybe_sent(raw) -> None:  # type: ignore[no-untyped-def]
    _, origin = await raw(lambda _: None)
    with pytest.raises(ExchangeFailed) as caught:
        await get(origin)
    assert caught.value.sent


async def test_garbage_answer_is_a_failure_not_a_crash(raw) -> None:  # type: ignore[no-untyped-def]
    _, origin = await raw(lambda _: b"SMTP ready\r\n\r\n")
    with pytest.raises(ExchangeFailed, match="invalid HTTP"):
        await get(origin)


async def test_pool_limit_queues_callers_instead_of_opening_more(raw) -> None:  # type: ignore[no-untyped-def]
    server, origin = await raw(ok(), limit=2)
    results = await asyncio.gather(*(get(origin) for _ in range(20)))
    assert all(r.status == 200 for r in results)
    assert server.connections <= 2


async def test_a_slow_body_is_read_whole_within_the_timeout() -> None:
    """An answer whose body trickles in, in pieces, is one answer, not a failure."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")
        for _ in range(3):
            await asyncio.sleep(0.05)
            writer.write(b"0123456789")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    origin = Http1Origin("127.0.0.1", server.sockets[0].getsockname()[1], ssl_context=None)
    try:
        answer = await get(origin)
        assert (answer.status, answer.body) == (200, b"0123456789" * 3)
        with pytest.raises(ExchangeTimeout):  # and a body slower than the timeout is a timeout
            await get(origin, timeout_s=0.08)
    finally:
        await origin.close()
        server.close()


async def test_a_reused_connection_closed_unread_is_resent_only_when_replayable(raw) -> None:  # type: ignore[no-untyped-def]
    """The server answers the first request and drops the connection on the second without a
    byte (what an idle close looks like): a GET goes again on a fresh connection; a POST
    without a key is failed as maybe-sent, never sent twice."""
    answers = iter([ok()(b""), None, ok()(b""), ok()(b""), None])
    server, origin = await raw(lambda _: next(answers))
    await get(origin)
    again = await origin.request("GET", "/v1/users/me", [], b"", timeout_s=2, connect_timeout_s=1)
    assert again.status == 200 and server.connections == 2
    await get(origin)
    with pytest.raises(ExchangeFailed) as failed:
        await origin.request("POST", "/v1/bookings", [], b"{}", timeout_s=2, connect_timeout_s=1, replayable=False)
    assert failed.value.sent and sum(r.startswith(b"POST") for r in server.requests) == 1


async def test_the_servers_keep_alive_timeout_retires_connections_early(raw) -> None:  # type: ignore[no-untyped-def]
    _, origin = await raw(ok(extra=b"Keep-Alive: timeout=1\r\n"))
    await get(origin)
    assert origin.server_idle_s == 1.0 and origin.max_idle_s(True) == 0.75
