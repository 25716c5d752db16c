"""``pmc-gateway demo``: the simulator, the gateway (memory store) and light synthetic
traffic in one process, with faults injected now and then so retries and breakers show.
Prints the gateway URL, a curl that books through it, and the dashboard URL."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway import settings
from gateway.app import build_components
from gateway.observability import log
from gateway.serve import run_async, run_worker
from gateway.tools.sim.server import Faults, SimConfig, start_sim

DEMO_CLIENT_TOKEN = "demo-client-token-booking-web"
DEMO_ADMIN_TOKEN = "demo-admin-token-change-me"
DEMO_SECRETS = {
    "PMC_DEMO_LIVE_KEY": "pmc_live_demo_key_0001",
    "PMC_DEMO_TEST_KEY": "pmc_test_demo_key_0001",
    "PMC_GATEWAY_ADMIN_TOKEN": DEMO_ADMIN_TOKEN,
    "PMC_WEBHOOK_SECRET": "whsec_demo_2f9c1e",
}
BOOKING = {  # the printed curl's: a day the synthetic traffic leaves alone, so it is free
    "eventTypeId": "evt_demo",
    "invitee": {"name": "Jordan Lee", "email": "jordan@company.com"},
    "start": "2026-03-20T09:30:00Z",
    "timezone": "Asia/Kolkata",
}
ASYNC_BOOKING = {**BOOKING, "start": "2026-03-12T09:30:00Z"}
TRAFFIC_DAY = "2026-03-10"
AVAILABILITY = f"/v1/availability?eventTypeId=evt_demo&date={TRAFFIC_DAY}&timezone=Asia/Kolkata"
HELD_BOOKINGS = 4  # the traffic cancels its oldest booking past this many, so the day never fills


def demo_document(gateway_port: int, sim_port: int, subscriber_url: str) -> dict[str, object]:
    upstream = f"http://127.0.0.1:{sim_port}"
    return {
        "server": {"listen": f"127.0.0.1:{gateway_port}", "shutdown_grace_s": 3},
        "store": {"url": "memory://"},
        "upstream": {"base_url": upstream, "attempt_timeout_ms": 1500, "deadline_ms": 6000},
        "environments": {
            "live": {"api_key_env": "PMC_DEMO_LIVE_KEY", "rate_limit_per_minute": 120},
            "test": {"api_key_env": "PMC_DEMO_TEST_KEY", "rate_limit_per_minute": 120},
        },
        "clients": {
            "booking-web": {
                "token_sha256": settings.token_digest(DEMO_CLIENT_TOKEN),
                "environments": ["live", "test"],
            }
        },
        "breaker": {"fail_max": 5, "reset_timeout_s": 10},
        "reads": {  # shared reads: availability cached 10 s, dropped by every booking, stale if PinmyCal fails
            "coalesce": True,
            "routes": {"/v1/availability": {"fresh_s": 10, "stale_if_error_s": 3600, "invalidated_by": ["booking"]}},
        },
        "webhooks": {
            "secret_envs": ["PMC_WEBHOOK_SECRET"],
            "allow_insecure_http": True,  # the demo subscriber is plain http on 127.0.0.1
            "subscribers": [{"name": "demo-subscriber", "url": subscriber_url}],
        },
    }


FAULT_CYCLE_S = 300


class _Booker:
    """The traffic's bookings: a free slot of the last availability answer, the oldest cancelled
    past ``HELD_BOOKINGS`` (each booking and cancellation drops the cached availability)."""

    def __init__(self) -> None:
        self.free: list[str] = []
        self.held: list[str] = []

    def saw(self, path: str, status: int, body: bytes) -> None:
        if path == AVAILABILITY and status == 200:
            with contextlib.suppress(ValueError, AttributeError):
                self.free = list(json.loads(body).get("slots", []))

    def next_booking(self) -> dict[str, Any] | None:
        return {**BOOKING, "start": self.free[0]} if self.free else None

    def booked(self, status: int, body: bytes) -> None:
        with contextlib.suppress(ValueError, AttributeError):
            booking_id = json.loads(body).get("bookingId")
            if status == 200 and isinstance(booking_id, str):
                self.held.append(booking_id)

    def to_cancel(self) -> str | None:
        return self.held.pop(0) if len(self.held) > HELD_BOOKINGS else None


async def _traffic(gateway: str, sim: str, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """About one request a second, mostly reads (the shared cache answers most of them): four
    healthy minutes (the SLOs green), then a 35-second fault phase (retries, stale answers, the
    breaker opening and recovering), every five minutes."""
    headers = {"Authorization": f"Bearer {DEMO_CLIENT_TOKEN}"}
    booker = _Booker()
    calls: Iterator[tuple[str, str, dict[str, Any] | None, dict[str, Any]]] = itertools.cycle(
        [
            ("GET", AVAILABILITY, None, {}),
            ("GET", "/v1/users/me", None, {}),
            ("GET", AVAILABILITY, None, {}),
            ("POST", "/v1/bookings", None, {"book": True}),
            ("GET", AVAILABILITY, None, {}),
            ("GET", "/v1/availability?eventTypeId=evt_demo&date=2026-03-11&timezone=Asia/Kolkata", None, {"X-PMC-Environment": "test"}),
            ("POST", "/v1/bookings", {**BOOKING, "invitee": {"name": "", "email": "nope"}}, {}),
            ("GET", AVAILABILITY, None, {}),
            ("DELETE", "/v1/bookings/{held}", None, {"cancel": True}),
        ]
    )
    phases = [  # (second of the five minutes it starts, faults)
        (0, {"errorRate": 0.0, "timeoutRate": 0.0}),
        (240, {"errorRate": 0.2}),
        (255, {"errorRate": 0.95}),
        (265, {"errorRate": 0.0}),
    ]
    started = time.monotonic()
    async with aiohttp.ClientSession(headers=headers) as session:
        current = None
        while not stop.is_set():
            second = int(time.monotonic() - started) % FAULT_CYCLE_S
            phase = max(p for p in phases if p[0] <= second)
            if phase is not current:
                current = phase
                with contextlib.suppress(aiohttp.ClientError):
                    await session.post(f"{sim}/_sim/faults", json=phase[1])
            method, path, body, extra = next(calls)
            request_headers = {k: v for k, v in extra.items() if k not in ("book", "cancel")}
            if extra.get("book"):
                body = booker.next_booking()
                request_headers["Idempotency-Key"] = f"demo-{int(time.time() * 1000)}"
            if extra.get("cancel"):
                held = booker.to_cancel()
                path = path.format(held=held) if held else ""
            if (extra.get("book") and body is None) or not path:
                continue
            try:
                async with session.request(method, gateway + path, json=body, headers=request_headers) as response:
                    answer = await response.read()
                    stats["ok" if response.status < 500 else "failed"] += 1
                    booker.saw(path, response.status, answer)
                    if extra.get("book"):
                        booker.booked(response.status, answer)
            except aiohttp.ClientError:
                stats["failed"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.8)


async def _async_booking(gateway: str) -> None:
    """One booking made as a job, followed by the gateway (Prefer: wait), and how to see its story."""
    headers = {"Authorization": f"Bearer {DEMO_CLIENT_TOKEN}", "Prefer": "respond-async, wait=15"}
    try:
        async with aiohttp.ClientSession() as session, session.post(f"{gateway}/v1/bookings", json=ASYNC_BOOKING, headers=headers) as response:
            body = await response.json(content_type=None)
            request_id = response.headers.get("X-Request-Id", "?")
    except (aiohttp.ClientError, ValueError) as exc:
        print(f"  async booking failed: {exc}", flush=True)
        return
    state = body.get("state") or body.get("status")
    print(
        f"""An async booking (Prefer: respond-async, wait=15): the gateway followed job {body.get('jobId')} to '{state}'
for you. Its whole story — the job, its polls, the booking.created webhook and its delivery:

  PMC_GATEWAY_ADMIN_TOKEN={DEMO_ADMIN_TOKEN} {command()} triage {request_id} --url {gateway}
""",
        flush=True,
    )


def command() -> str:
    """How to run ``pmc-gateway`` as printed: the script beside this interpreter (``make demo`` runs
    from .venv, which is not on PATH), relative to the working directory when it is under it."""
    script = Path(sys.executable).with_name("pmc-gateway")
    if not script.exists():
        return "pmc-gateway"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _demo_subscriber(received: list[str]) -> tuple[web.AppRunner, str]:
    """Stands in for an internal service that subscribes to booking events."""

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        received.append(request.headers.get("X-PMC-Event-Type", "?"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks/pinmycal", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, f"http://127.0.0.1:{port}/hooks/pinmycal"


def run_demo(args: argparse.Namespace) -> int:
    for name, value in DEMO_SECRETS.items():
        os.environ.setdefault(name, value)
    log_path = Path(tempfile.gettempdir()) / "pmc-gateway-demo.log"
    log_file = log_path.open("a", buffering=1)
    log.configure(stream=log_file)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        gateway_port = args.port or _free_port()
        received: list[str] = []
        subscriber, subscriber_url = await _demo_subscriber(received)
        sim_runner, sim_port, _ = await start_sim(
            SimConfig(
                port=args.sim_port,
                faults=Faults(latency_ms=120),
                job_eta_s=5,
                outside_bookings_per_minute=2,  # other systems booking on PinmyCal: seen only by webhook
                webhook_url=f"http://127.0.0.1:{gateway_port}/webhooks/pinmycal",
                webhook_secret=os.environ["PMC_WEBHOOK_SECRET"].encode(),
            )
        )
        config = settings.parse(demo_document(gateway_port, sim_port, subscriber_url))
        components = build_components(config, settings.resolve_secrets(config, os.environ))
        started = asyncio.Event()
        bound: dict[str, int] = {}

        def on_started(_: object, port: int) -> None:
            bound["port"] = port
            started.set()

        gateway_stop = asyncio.Event()
        gateway_task = asyncio.create_task(run_worker(components, on_started=on_started, stop=gateway_stop))
        await asyncio.wait({gateway_task, asyncio.create_task(started.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if gateway_task.done():
            await gateway_task  # raises the start-up error
        gateway = f"http://127.0.0.1:{bound['port']}"
        sim = f"http://127.0.0.1:{sim_port}"
        print(
            f"""
pmc-gateway demo is running (Ctrl-C stops everything)

  gateway     {gateway}
  simulator   {sim}   (PinmyCal API stand-in; faults at {sim}/_sim/faults)
  dashboard   {gateway}/_gateway/dashboard#token={DEMO_ADMIN_TOKEN}   (opens signed in)
  webhooks    simulator → {gateway}/webhooks/pinmycal (verified, deduplicated) → {subscriber_url}
  logs        {log_path}
  traffic     about one request a second: four healthy minutes, then 35 s of injected upstream
              faults (retries, the breaker opening and closing), every five minutes

Book through the gateway (the gateway injects the PinmyCal key; you never hold it):

  curl -s -X POST {gateway}/v1/bookings \\
    -H 'Authorization: Bearer {DEMO_CLIENT_TOKEN}' \\
    -H 'Content-Type: application/json' \\
    -H 'Idempotency-Key: my-first-booking' \\
    -d '{json.dumps(BOOKING, separators=(",", ":"))}'

Then find everything about it by its requestId (the X-Request-Id response header):

  PMC_GATEWAY_ADMIN_TOKEN={DEMO_ADMIN_TOKEN} {command()} triage <requestId> --url {gateway}
""",
            flush=True,
        )
        await _async_booking(gateway)
        stats = {"ok": 0, "failed": 0}
        traffic = None if args.no_traffic else asyncio.create_task(_traffic(gateway, sim, stop, stats))
        deadline = time.monotonic() + args.duration_s if args.duration_s else None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 10)
            if traffic is not None and not stop.is_set():
                print(
                    f"  demo traffic: {stats['ok']} answered, {stats['failed']} failed (5xx); "
                    f"{len(received)} webhook events relayed to the subscriber",
                    flush=True,
                )
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
        print("stopping…", flush=True)
        if traffic is not None:
            await traffic
        gateway_stop.set()
        await gateway_task
        await sim_runner.cleanup()
        await subscriber.cleanup()
        print("stopped.", flush=True)

    try:
        run_async(main)
    finally:
        log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(argparse.Namespace(port=8080, sim_port=0, no_traffic=False, duration_s=0)))
