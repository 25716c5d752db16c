"""The idempotency stage against a fake terminal on the memory store: replay, in flight, reused."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from gateway.observability.instruments import IDEMPOTENT_REPLAYS
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.stages.idempotency import IdempotencyStage
from gateway.store.memory import MemoryStore
from tests.support.fakes import CountedFacts, make_request


class Notes(CountedFacts):
    @property
    def replays(self) -> int:
        return self.times(IDEMPOTENT_REPLAYS)


class Booking:
    def __init__(self, *statuses: int) -> None:
        self.statuses, self.sent = list(statuses), 0
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, _request: UpstreamRequest) -> UpstreamResponse:
        self.sent += 1
        await self.release.wait()
        return UpstreamResponse(self.statuses.pop(0), (("X-Booking", "bk_1"),), b'{"bookingId":"bk_1"}')


def post(clock: ManualClock, key: str = "k1", body: bytes = b'{"a":1}') -> UpstreamRequest:
    return replace(make_request(clock), method="POST", target="/v1/bookings", body=body, idempotency_key=key)


def stage(notes: Notes) -> IdempotencyStage:
    return IdempotencyStage(MemoryStore(), ttl_s=3600, lock_ttl_s=30, observer=notes)


async def test_a_repeat_is_replayed_without_an_upstream_call() -> None:
    clock, notes = ManualClock(), Notes()
    idempotency, upstream = stage(notes), Booking(200)
    first = await idempotency(post(clock), upstream)
    again = await idempotency(post(clock), upstream)
    assert upstream.sent == 1 and notes.replays == 1
    assert (again.status, again.body, again.header("Idempotent-Replayed")) == (first.status, first.body, "true")


async def test_the_same_key_with_another_body_is_422_and_in_flight_is_409() -> None:
    clock, notes = ManualClock(), Notes()
    idempotency, upstream = stage(notes), Booking(200)
    upstream.release.clear()
    first = asyncio.create_task(idempotency(post(clock), upstream))
    await asyncio.sleep(0)
    with pytest.raises(IdempotencyKeyInUse):
        await idempotency(post(clock), upstream)
    upstream.release.set()
    await first
    with pytest.raises(IdempotencyKeyReused):
        await idempotency(post(clock, body=b'{"a":2}'), upstream)
    assert upstream.sent == 1


async def test_a_5xx_releases_the_key_for_a_fresh_try() -> None:
    clock, notes = ManualClock(), Notes()
    idempotency, upstream = stage(notes), Booking(503, 200)
    assert (await idempotency(post(clock), upstream)).status == 503
    assert (await idempotency(post(clock), upstream)).status == 200 and upstream.sent == 2 and notes.replays == 0


async def test_a_get_or_a_post_without_a_key_passes_through() -> None:
    clock, notes = ManualClock(), Notes()
    idempotency, upstream = stage(notes), Booking(200, 200)
    await idempotency(replace(post(clock), idempotency_key=None), upstream)
    await idempotency(replace(post(clock), idempotency_key=None), upstream)
    assert upstream.sent == 2
