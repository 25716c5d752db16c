"""A lean load generator for the benchmark: N keep-alive HTTP/1.1 connections on raw asyncio
protocols, each sending its next request as soon as the previous answer arrived, for a
bounded number of requests. Runs in its own process (pinned off the measured core) and
prints one JSON line: count, errors, seconds, latency percentiles."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _LENGTH.search(self.buffer, 0, end + 2)
        length = int(match.group(1)) if match else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    async def send(self, request: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return await self.waiter


def request_bytes(host: str, path: str, headers: list[str], request_id: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *headers]
    if request_id:
        lines.append(f"X-Request-Id: {request_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def run(url: str, connections: int, requests: int, headers: list[str], unique_ids: bool, timeout_s: float) -> dict[str, object]:
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    path = "/" + path
    loop = asyncio.get_running_loop()
    conns = [(await loop.create_connection(Connection, host, int(port)))[1] for _ in range(connections)]
    latencies: list[float] = []
    errors = 0
    issued = 0
    fixed = request_bytes(hostport, path, headers, None)
    run_id = os.getpid()

    async def worker(conn: Connection) -> None:
        nonlocal issued, errors
        while issued < requests:
            issued += 1
            payload = request_bytes(hostport, path, headers, f"bench-{run_id}-{issued}") if unique_ids else fixed
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.send(payload), timeout_s)
            except (TimeoutError, ConnectionError):
                errors += 1
                return
            latencies.append(time.perf_counter() - started)
            if status >= 400:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return {"count": len(latencies), "errors": errors, "seconds": elapsed, "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pmc-gateway-loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--unique-ids", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(args.url, args.connections, args.requests, args.header, args.unique_ids, args.timeout_s))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
