"""Injected time and randomness, so time logic is testable without sleeping."""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: monotonic for durations, wall time for timestamps on the wire."""

    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


@dataclass
class ManualClock:
    """A clock tests move by hand; ``sleep`` advances it instead of waiting."""

    now: float = 1_000.0
    wall_offset: float = 1_773_135_000.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_offset + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)


Pace = Callable[[float], Awaitable[None]]


async def real_time_pace(seconds: float) -> None:
    """How background loops wait between rounds: always real time, whatever clock the request path
    runs on. Injected like the clock (tests pass their own), but never the clock's own ``sleep``: a
    ManualClock's returns at once, and a loop paced by it would spin."""
    await asyncio.sleep(seconds)


def seeded_random(seed: int | None = None) -> random.Random:
    return random.Random(seed)


def iso_utc_ms(seconds: float) -> str:
    """``2026-11-25T13:03:07.123Z``: epoch seconds as ISO-8601 UTC, milliseconds truncated
    (as ``datetime.isoformat(timespec="milliseconds")``), at a fifth of datetime's cost: every
    log line and triage record carries one."""
    fraction, whole = math.modf(seconds)  # split as datetime.fromtimestamp does, so both agree
    micros = round(fraction * 1_000_000)
    second = int(whole) + micros // 1_000_000
    return f"{_second_prefix(second)}.{micros % 1_000_000 // 1000:03d}Z"


@functools.lru_cache(maxsize=8)
def _second_prefix(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
