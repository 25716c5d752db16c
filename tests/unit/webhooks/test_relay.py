"""The relay's acknowledgements across a store outage (ManualClock, memory store, no sockets)."""

from __future__ import annotations

import random

from gateway.core.clock import ManualClock
from gateway.errors import StoreError
from gateway.settings import SubscriberSettings, WebhookSettings
from gateway.store.memory import MemoryStore
from gateway.webhooks.event import WebhookEvent
from gateway.webhooks.relay import LEASE_S, WebhookRelay


class FinishOutage(MemoryStore):
    """A store that cannot take acknowledgements while ``down``, as during a Redis failover."""

    down = False

    async def webhook_finish(self, event_id: str, outcome: str, blob: bytes, score: float) -> None:
        if self.down:
            raise StoreError("redis: connection refused")
        await super().webhook_finish(event_id, outcome, blob, score)


class RecordingRelay(WebhookRelay):
    """The relay with its HTTP post replaced: each subscriber answers from ``failing``."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.posted: list[str] = []
        self.failing = True

    async def _post(self, subscriber: SubscriberSettings, event: WebhookEvent) -> str | None:
        self.posted.append(event.event_id)
        return "HTTP 503" if self.failing else None


def relay_on(store: MemoryStore, clock: ManualClock) -> RecordingRelay:
    settings = WebhookSettings(
        delivery_base_delay_ms=100, delivery_max_delay_s=1,
        subscribers=(SubscriberSettings(name="booking-svc", url="https://booking.internal/hooks"),),
    )
    return RecordingRelay(store=store, settings=settings, subscriber_secrets={}, clock=clock, rng=random.Random(1))


async def accept(store: MemoryStore, clock: ManualClock, event_id: str) -> None:
    now = clock.wall()
    event = WebhookEvent(event_id, "booking.created", b"{}", "req_1", now, now, pending=["booking-svc"])
    assert await store.webhook_accept(event_id, event.to_blob(), 3600, now)


async def a_round_whose_acknowledgement_is_lost() -> tuple[ManualClock, FinishOutage, RecordingRelay]:
    """One event, delivered once (and failed) while the store could not take the acknowledgement."""
    clock = ManualClock()
    store = FinishOutage(clock)
    relay = relay_on(store, clock)
    await accept(store, clock, "evt_1")
    store.down = True
    assert await relay.run_round()  # delivered (and failed), but the "retry in ~0.1 s" is lost
    store.down = False
    return clock, store, relay


async def test_an_acknowledgement_lost_in_an_outage_is_sent_again_and_the_event_does_not_wait_out_its_lease() -> None:
    clock, store, relay = await a_round_whose_acknowledgement_is_lost()
    clock.advance(2.0)
    relay.failing = False
    await relay.run_round()  # the kept acknowledgement goes first, so the event is due again at once
    assert relay.posted == ["evt_1", "evt_1"]
    assert await store.webhook_counts() == (0, 0)


async def test_a_kept_acknowledgement_is_dropped_once_its_lease_has_lapsed() -> None:
    clock, store, relay = await a_round_whose_acknowledgement_is_lost()
    clock.advance(LEASE_S + 1)  # another relay may own the event now: its lease lapsed
    relay.failing = False
    await relay.run_round()
    assert relay.posted == ["evt_1", "evt_1"]  # delivered through the lapsed lease, not a stale "retry"
    assert await store.webhook_counts() == (0, 0)


async def test_without_the_kept_acknowledgement_the_event_would_be_leased() -> None:
    clock, store, _ = await a_round_whose_acknowledgement_is_lost()
    assert await store.webhook_claim(clock.wall() + 2.0, LEASE_S, 16) == []  # what the resend saves
