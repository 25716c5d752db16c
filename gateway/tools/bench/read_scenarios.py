"""The shared-read scenarios of ``pmc-gateway bench --scenarios``, direct vs two gateway replicas.

- ``storm``: ten services read availability for three days at 1/s each (five times the key's
  limit) while one service books a free slot it just read every 6 s through the target, and other
  systems book on PinmyCal directly every 10 s (announced by signed ``booking.*`` webhooks, sent to
  the gateways; direct has no cache to tell). Counted: reads answered, upstream calls and 429s,
  bookings made and failed on a stale read (409), and reads stale after a booking — started after
  the booker was answered (or more than 1 s after the webhook was accepted) and still listing the
  slot as free.
- ``outage``: PinmyCal answers 503 to everything for a while, five services reading: reads served,
  and how many of those were marked stale.

Each target has its own simulator (its own slot state and key), so neither sees the other's bookings.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim

STORM_DAYS = ("2026-04-06", "2026-04-07", "2026-04-08")
EVENT_TYPE = "evt_storm"
WEBHOOK_GRACE_S = 1.0  # a read this long after a webhook was accepted must not list its slot


@dataclass(frozen=True)
class ReadScenario:
    name: str
    title: str
    seconds: float
    readers: int
    healthy_first_s: float = 0.0  # outage: PinmyCal answers normally this long, then fails


def read_scenarios(scale: float) -> tuple[ReadScenario, ...]:
    return (
        ReadScenario("storm", "ten readers at 1/s (5x the limit), a booking every 6 s through the target, one outside every 10 s", 60 * scale, 10),
        ReadScenario("outage", "PinmyCal answers 503 to everything while five services read at 1/s each", 40 * scale, 5, healthy_first_s=10 * scale),
    )


@dataclass
class ReadTally:
    reads: int = 0
    reads_ok: int = 0
    reads_stale_marked: int = 0
    reads_during_outage: int = 0
    served_during_outage: int = 0
    bookings_tried: int = 0
    bookings_made: int = 0
    bookings_refused: int = 0  # 429 from the gateway's budget or the upstream
    bookings_conflict: int = 0  # 409: booked from an answer that was no longer true
    stale_after_booking: int = 0
    worst_stale_s: float = 0.0
    stale_after_webhook: int = 0
    answers: list[tuple[float, float, str, list[str]]] = field(default_factory=list)  # (started, ended, day, free slots)


@dataclass
class Target:
    """One side of a scenario: where callers send reads and bookings, and its own simulator."""

    name: str
    base: Callable[[int], str]  # the i-th request's base URL (two replicas take turns)
    headers: dict[str, str]
    sim: Simulator
    tally: ReadTally = field(default_factory=ReadTally)
    booked_at: dict[str, float] = field(default_factory=dict)  # "day start" → when the booker was answered


def availability(day: str) -> str:
    return f"/v1/availability?eventTypeId={EVENT_TYPE}&date={day}&timezone=UTC"


async def _read(session: aiohttp.ClientSession, target: Target, i: int, day: str, outage: Callable[[], bool]) -> list[str] | None:
    began = time.monotonic()
    down = outage()
    target.tally.reads += 1
    target.tally.reads_during_outage += down
    try:
        async with session.get(target.base(i) + availability(day), headers=target.headers) as answer:
            body = await answer.read()
            status, cache = answer.status, answer.headers.get("Cache-Status", "")
    except (aiohttp.ClientError, TimeoutError):
        return None
    if status != 200:
        return None
    target.tally.reads_ok += 1
    target.tally.served_during_outage += down
    target.tally.reads_stale_marked += "detail=stale" in cache
    slots = list(json.loads(body).get("slots", []))
    target.tally.answers.append((began, time.monotonic(), day, slots))
    return slots


async def _reader(session: aiohttp.ClientSession, target: Target, scenario: ReadScenario, n: int, outage: Callable[[], bool]) -> None:
    started = time.monotonic()
    tasks: list[asyncio.Task[list[str] | None]] = []
    i = 0
    while (due := started + i + n / scenario.readers) < started + scenario.seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(_read(session, target, n + i, STORM_DAYS[(n + i) % len(STORM_DAYS)], outage)))
        i += 1
    await asyncio.gather(*tasks)


async def _booker(session: aiohttp.ClientSession, target: Target, scenario: ReadScenario, rng: random.Random) -> None:
    started = time.monotonic()
    n = 0
    while (due := started + 3 + n * 6) < started + scenario.seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        day = STORM_DAYS[n % len(STORM_DAYS)]
        n += 1
        free = await _read(session, target, n, day, lambda: False)
        if not free:
            continue
        start = rng.choice(free)
        booking = {"eventTypeId": EVENT_TYPE, "invitee": {"name": "Storm", "email": "storm@company.com"}, "start": start, "timezone": "UTC"}
        target.tally.bookings_tried += 1
        try:
            async with session.post(target.base(n) + "/v1/bookings", json=booking, headers=target.headers) as answer:
                await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError):
            continue
        if status == 200:
            target.tally.bookings_made += 1
            target.booked_at[f"{day} {start}"] = time.monotonic()
        elif status == 409:
            target.tally.bookings_conflict += 1
        elif status == 429:
            target.tally.bookings_refused += 1


async def _outside(target: Target, scenario: ReadScenario) -> None:
    started = time.monotonic()
    n = 1
    while (due := started + n * 10) < started + scenario.seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        target.sim.book_outside()
        n += 1


def _staleness(target: Target, webhook_accepted: dict[str, float]) -> None:
    """Reads that listed a slot as free although they started after it was booked and known."""
    tally = target.tally
    for began, _ended, day, slots in tally.answers:
        for start in slots:
            known = target.booked_at.get(f"{day} {start}")
            if known is not None and began > known:
                tally.stale_after_booking += 1
                tally.worst_stale_s = max(tally.worst_stale_s, began - known)
            told = webhook_accepted.get(start)
            if told is not None and began > told + WEBHOOK_GRACE_S:
                tally.stale_after_webhook += 1


class ReadScenarios:
    """Started before the gateways (they need each scenario's simulator as an environment's
    ``base_url``), driven beside the rate-budget scenarios, then closed."""

    def __init__(self, *, scale: float, latency_ms: float, limit: int, webhook_secret: bytes) -> None:
        self.plan = read_scenarios(scale)
        self._latency_ms, self._limit, self._secret = latency_ms, limit, webhook_secret
        self._sims: dict[tuple[str, str], tuple[Any, Simulator, str]] = {}

    async def start(self) -> dict[str, str]:
        """Each scenario's simulator per side; returns environment → the gateway side's base URL."""
        for scenario in self.plan:
            for side in ("direct", "gateway"):
                config = SimConfig(port=0, rate_limit=self._limit, faults=Faults(latency_ms=self._latency_ms), seed=11,
                                   webhook_secret=self._secret, webhook_base_delay_s=0.2, webhook_environment=scenario.name)
                runner, port, sim = await start_sim(config)
                self._sims[(scenario.name, side)] = (runner, sim, f"http://127.0.0.1:{port}")
        return {s.name: self._sims[(s.name, "gateway")][2] for s in self.plan}

    async def close(self) -> None:
        for runner, _, _ in self._sims.values():
            await runner.cleanup()

    async def run(self, replicas: list[str], gateway_headers: Callable[[str], dict[str, str]], direct_key: Callable[[str], str]) -> list[dict[str, Any]]:
        for scenario in self.plan:  # the gateways' simulators announce bookings to the first replica
            sim = self._sims[(scenario.name, "gateway")][1]
            sim.config.webhook_url = f"{replicas[0]}/webhooks/pinmycal"
            sim.start_webhooks()
        targets: dict[tuple[str, str], Target] = {}
        drives = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
            for scenario in self.plan:
                _, direct_sim, direct_url = self._sims[(scenario.name, "direct")]
                gateway_sim = self._sims[(scenario.name, "gateway")][1]
                sides = (
                    Target("direct", _always(direct_url), {"Authorization": f"Bearer {direct_key(scenario.name)}"}, direct_sim),
                    Target("gateway", lambda i: replicas[i % len(replicas)], gateway_headers(scenario.name), gateway_sim),
                )
                for target in sides:
                    targets[(scenario.name, target.name)] = target
                    outage = _outage_clock(scenario)
                    drives += [_reader(session, target, scenario, n, outage) for n in range(scenario.readers)]
                    if scenario.name == "storm":
                        drives += [_booker(session, target, scenario, random.Random(5)), _outside(target, scenario)]
                    else:
                        drives.append(_fail_after(target.sim, scenario.healthy_first_s))
            await asyncio.gather(*drives)
            await asyncio.sleep(0.5)  # the last webhooks land
        return [self._rows(scenario, targets) for scenario in self.plan]

    def _rows(self, scenario: ReadScenario, targets: dict[tuple[str, str], Target]) -> dict[str, Any]:
        rows = []
        for side in ("direct", "gateway"):
            target = targets[(scenario.name, side)]
            _staleness(target, dict(target.sim.webhook_accepted_at))
            t = target.tally
            rows.append(
                {
                    "target": side,
                    "reads": t.reads,
                    "readsOk": t.reads_ok,
                    "readsStaleMarked": t.reads_stale_marked,
                    "readsDuringOutage": t.reads_during_outage,
                    "servedDuringOutage": t.served_during_outage,
                    "upstreamCalls": len(target.sim.received),
                    "upstream429": target.sim.rate_limited,
                    "bookingsTried": t.bookings_tried,
                    "bookingsMade": t.bookings_made,
                    "bookingsRefused": t.bookings_refused,
                    "bookingsConflict": t.bookings_conflict,
                    "outsideBookings": target.sim.outside_bookings,
                    "staleAfterBooking": t.stale_after_booking,
                    "worstStaleS": round(t.worst_stale_s, 2),
                    "staleAfterWebhook": t.stale_after_webhook,
                }
            )
        return {"name": scenario.name, "title": scenario.title, "seconds": scenario.seconds, "rows": rows}


def _always(url: str) -> Callable[[int], str]:
    return lambda _i: url


def _outage_clock(scenario: ReadScenario) -> Callable[[], bool]:
    """True once the scenario's upstream has gone down (never for a scenario without an outage)."""
    began = time.monotonic()
    return lambda: scenario.healthy_first_s > 0 and time.monotonic() - began >= scenario.healthy_first_s


async def _fail_after(sim: Simulator, seconds: float) -> None:
    await asyncio.sleep(seconds)
    sim.faults.error_rate = 1.0


def render_read_scenarios(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for scenario in rows:
        out += ["", f"{scenario['name']} ({scenario['seconds']:g} s): {scenario['title']}"]
        if scenario["name"] == "storm":
            out.append(
                f"  {'target':8} {'reads 200':>12} {'upstream calls':>15} {'upstream 429':>13} {'booked':>7} {'409 stale':>10} "
                f"{'refused':>8} {'stale after booking (worst)':>28} {'stale >1 s after webhook':>25}"
            )
            for row in scenario["rows"]:
                stale = f"{row['staleAfterBooking']} ({row['worstStaleS']:.1f} s)"
                out.append(
                    f"  {row['target']:8} {row['readsOk']:>5} / {row['reads']:<5} {row['upstreamCalls']:>15} {row['upstream429']:>13} "
                    f"{row['bookingsMade']:>3} / {row['bookingsTried']:<2} {row['bookingsConflict']:>10} {row['bookingsRefused']:>8} "
                    f"{stale:>28} {row['staleAfterWebhook']:>25}"
                )
        else:
            out.append(f"  {'target':8} {'served during the outage':>26} {'marked stale':>13} {'reads 200 in all':>18}")
            for row in scenario["rows"]:
                out.append(
                    f"  {row['target']:8} {row['servedDuringOutage']:>10} / {row['readsDuringOutage']:<13} {row['readsStaleMarked']:>13} "
                    f"{row['readsOk']:>8} / {row['reads']:<7}"
                )
    return out
