"""Fault injection: bounded load from real clients while the upstream, Redis and callers misbehave."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.tools.sim.server import Faults, SimConfig, start_sim
from tests.faults.conftest import Figures
from tests.support.servers import (
    RedisServer,
    call,
    free_port,
    gateway,
    gateway_document,
    start_gateway_process,
)

pytestmark = pytest.mark.faults


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))]


async def drive(session: aiohttp.ClientSession, url: str, total: int, concurrency: int, path: str = "/v1/users/me") -> list[tuple[int, float, str]]:
    """``total`` GETs over ``concurrency`` callers: (status, seconds, error code)."""
    results: list[tuple[int, float, str]] = []
    issued = 0

    async def caller() -> None:
        nonlocal issued
        while issued < total:
            issued += 1
            started = time.monotonic()
            status, _, body = await call(session, "GET", f"{url}{path}")
            code = json.loads(body).get("code", "") if status >= 400 and body.startswith(b"{") else ""
            results.append((status, time.monotonic() - started, code))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return results


async def test_random_5xx_and_timeouts_are_absorbed_within_the_retry_budget(session: aiohttp.ClientSession, figures: Figures) -> None:
    runner, port, simulator = await start_sim(SimConfig(port=0, seed=11, rate_limit=0, faults=Faults(latency_ms=2, error_rate=0.02, timeout_rate=0.01, hang_s=5)))
    document = gateway_document(
        f"http://127.0.0.1:{port}",
        upstream={"attempt_timeout_ms": 150, "deadline_ms": 3000},
        retry={"base_delay_ms": 5, "max_delay_ms": 50},
        breaker={"fail_max": 50},
    )
    total = 3000
    try:
        async with gateway(document) as gw:
            results = await drive(session, gw.url, total, 24)
    finally:
        await runner.cleanup()
    ok = sum(1 for s, _, _ in results if s == 200)
    attempts = len(simulator.received)
    success = ok / total
    figures.add("2 % 5xx + 1 % timeouts", "callers' success rate (idempotent GETs)", f"{100 * success:.3f} % of {total}")
    figures.add("2 % 5xx + 1 % timeouts", "upstream attempts per request", f"{attempts / total:.3f}")
    assert success >= 0.9995
    assert attempts <= total * 1.20 + 3 * 10  # budget_percent 20, min 3/s over 10 s


async def test_upstream_hard_down_then_back(session: aiohttp.ClientSession, figures: Figures) -> None:
    port = free_port()
    runner, _, _ = await start_sim(SimConfig(port=port, rate_limit=0, faults=Faults(latency_ms=1)))
    document = gateway_document(f"http://127.0.0.1:{port}", breaker={"fail_max": 5, "reset_timeout_s": 3}, retry={"max_attempts": 1})
    async with gateway(document) as gw:
        assert (await call(session, "GET", f"{gw.url}/v1/users/me"))[0] == 200
        await runner.cleanup()  # hard down: connections refused
        down_at = time.monotonic()
        before_open = 0
        while True:
            status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me")
            if status == 503 and json.loads(body)["code"] == "CIRCUIT_OPEN":
                break
            before_open += 1
        fast: list[float] = []
        while time.monotonic() - down_at < 10:
            started = time.monotonic()
            status, _, body = await call(session, "GET", f"{gw.url}/v1/users/me")
            if status == 503:
                fast.append(time.monotonic() - started)
            await asyncio.sleep(0.01)
        runner, _, _ = await start_sim(SimConfig(port=port, rate_limit=0, faults=Faults(latency_ms=1)))
        back_at = time.monotonic()
        while (await call(session, "GET", f"{gw.url}/v1/users/me"))[0] != 200:
            assert time.monotonic() - back_at < 3 + 2, "traffic did not recover within reset_timeout_s + 2 s"
            await asyncio.sleep(0.05)
        recovered = time.monotonic() - back_at
    await runner.cleanup()
    figures.add("upstream down 10 s", "failures before the breaker opened", f"{before_open} (fail_max 5)")
    figures.add("upstream down 10 s", "p99 of CIRCUIT_OPEN answers", f"{1000 * p99(fast):.1f} ms over {len(fast)}")
    figures.add("upstream down 10 s", "recovery after the upstream returned", f"{recovered:.2f} s (reset_timeout_s 3)")
    assert before_open <= 5
    assert p99(fast) < 0.020


async def test_429_storm_holds_every_caller_until_retry_after(session: aiohttp.ClientSession, figures: Figures) -> None:
    runner, port, simulator = await start_sim(SimConfig(port=0, rate_limit=0, faults=Faults(latency_ms=1, storm_retry_after_s=2)))
    document = gateway_document(f"http://127.0.0.1:{port}", budget={"max_wait_ms": 4000}, upstream={"deadline_ms": 6000})
    try:
        async with gateway(document) as gw:
            simulator.faults.storm_until = time.time() + 0.5
            results = await drive(session, gw.url, 40, 8)
    finally:
        await runner.cleanup()
    seen = sorted(r["t"] for r in simulator.received)
    first_429 = seen[0]
    in_flight = [t for t in seen if t < first_429 + 0.05]  # sent before any 429 came back: cannot be recalled
    during_pause = [t for t in seen if first_429 + 0.05 <= t < first_429 + 1.95]
    figures.add("429 storm (Retry-After 2 s)", "already in flight when the first 429 came back", f"{len(in_flight)} (8 callers)")
    figures.add("429 storm (Retry-After 2 s)", "upstream requests sent inside the pause", f"{len(during_pause)}")
    figures.add("429 storm (Retry-After 2 s)", "callers answered 200", f"{sum(1 for s, _, _ in results if s == 200)} of 40")
    assert during_pause == []
    assert len(in_flight) <= 8
    assert all(s == 200 for s, _, _ in results)


async def test_redis_killed_and_restarted_under_load(redis_server: RedisServer, session: aiohttp.ClientSession, figures: Figures) -> None:
    redis_server.flush()
    runner, port, _ = await start_sim(SimConfig(port=0, rate_limit=0, faults=Faults(latency_ms=2)))
    document = gateway_document(f"http://127.0.0.1:{port}", store={"url": redis_server.url}, upstream={"deadline_ms": 2000})
    statuses: list[int] = []
    slowest = 0.0
    stop = asyncio.Event()
    try:
        async with gateway(document) as gw:

            async def caller() -> None:
                nonlocal slowest
                while not stop.is_set():
                    started = time.monotonic()
                    status, _, _ = await call(session, "GET", f"{gw.url}/v1/users/me")
                    slowest = max(slowest, time.monotonic() - started)
                    statuses.append(status)

            callers = [asyncio.create_task(caller()) for _ in range(16)]
            await asyncio.sleep(1)
            redis_server.stop()
            await asyncio.sleep(3)
            redis_server.start()
            await asyncio.sleep(3)
            recovered = gw.components.store.healthy  # type: ignore[attr-defined]
            stop.set()
            await asyncio.gather(*callers)
    finally:
        await runner.cleanup()
    server_errors = sum(1 for s in statuses if s >= 500)
    figures.add("Redis killed 3 s under load", "requests / 5xx", f"{len(statuses)} / {server_errors}")
    figures.add("Redis killed 3 s under load", "slowest answer", f"{1000 * slowest:.0f} ms (deadline 2000 ms)")
    assert server_errors == 0 and slowest < 2.0 and recovered


STALL_TIMEOUT_MS = 3000  # server.header_timeout_ms / body_timeout_ms (10 s by default)


async def test_stalled_callers_cannot_exhaust_the_gateway(tmp_path: Path, session: aiohttp.ClientSession, figures: Figures) -> None:
    runner, port, _ = await start_sim(SimConfig(port=0, rate_limit=0, faults=Faults(latency_ms=1)))
    timeouts = {"header_timeout_ms": STALL_TIMEOUT_MS, "body_timeout_ms": STALL_TIMEOUT_MS}
    process = start_gateway_process(gateway_document(f"http://127.0.0.1:{port}", server=timeouts), tmp_path)
    host, gw_port = "127.0.0.1", int(process.url.rsplit(":", 1)[1])
    stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for i in range(300):
            reader, writer = await asyncio.open_connection(host, gw_port)
            if i % 4 == 0:
                writer.write(b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n")  # slow headers
            elif i % 4 == 1:
                writer.write(b"POST /v1/bookings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer client-token-booking-web-0001\r\nContent-Length: 1000\r\n\r\n{")  # slow body
            elif i % 4 == 2:  # one request answered, then the next one's headers trickle
                writer.write(b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                writer.write(b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n")
            stalled.append((reader, writer))  # the rest: connected, silent (half-open)
        latencies = []
        for _ in range(100):
            started = time.monotonic()
            assert (await call(session, "GET", f"{process.url}/v1/users/me"))[0] == 200
            latencies.append(time.monotonic() - started)
        await asyncio.sleep(STALL_TIMEOUT_MS / 1000 + 1)  # past the header and body timeouts
        closed = 0
        kept: list[str] = []
        for i, (reader, writer) in enumerate(stalled):
            try:  # closed (b"") or answered 400 (aiohttp may linger on the unread body before closing)
                data = await asyncio.wait_for(reader.read(200), 1)
                if data == b"" or data.startswith(b"HTTP/1.1 400"):
                    closed += 1
                else:
                    kept.append(f"{i % 4}:{data[:40]!r}")
            except (TimeoutError, ConnectionError) as exc:
                kept.append(f"{i % 4}:{type(exc).__name__}")
            writer.close()
    finally:
        process.terminate()
        await runner.cleanup()
    figures.add("300 stalled callers", "others' p99 while they stall", f"{1000 * p99(latencies):.1f} ms")
    figures.add("300 stalled callers", f"stalled connections closed after {STALL_TIMEOUT_MS / 1000 + 1:g} s", f"{closed} of {len(stalled)} (timeouts {STALL_TIMEOUT_MS / 1000:g} s)")
    assert closed == len(stalled), kept
    assert p99(latencies) < 0.5


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def test_two_thousand_connections_held_open(tmp_path: Path, session: aiohttp.ClientSession, figures: Figures) -> None:
    runner, port, _ = await start_sim(SimConfig(port=0, rate_limit=0, faults=Faults(latency_ms=1)))
    process = start_gateway_process(gateway_document(f"http://127.0.0.1:{port}"), tmp_path)
    gw_port = int(process.url.rsplit(":", 1)[1])
    held: list[asyncio.StreamWriter] = []
    try:
        await call(session, "GET", f"{process.url}/v1/users/me")
        before = rss_mb(process.process.pid)
        for _ in range(2000):
            _, writer = await asyncio.open_connection("127.0.0.1", gw_port)
            writer.write(b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\n")  # opened, request never finished
            held.append(writer)
        await asyncio.sleep(0.5)
        latencies = []
        for _ in range(100):
            started = time.monotonic()
            assert (await call(session, "GET", f"{process.url}/v1/users/me"))[0] == 200
            latencies.append(time.monotonic() - started)
        during = rss_mb(process.process.pid)
    finally:
        for writer in held:
            writer.close()
        process.terminate()
        await runner.cleanup()
    figures.add("2,000 connections held open", "RSS before / with them", f"{before:.0f} / {during:.0f} MB")
    figures.add("2,000 connections held open", "others' median / p99", f"{1000 * statistics.median(latencies):.1f} / {1000 * p99(latencies):.1f} ms")
    assert during - before < 100
    assert p99(latencies) < 0.5
