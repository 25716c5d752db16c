"""Delivers accepted webhook events to every matching subscriber, durably.

Each process runs one relay. It leases due events from the store (a lease that lapses
because its holder died makes the event due again), POSTs the original body with
``X-PMC-Event-Id``, ``X-PMC-Event-Type`` and, when the subscriber has a secret, the
gateway's own ``X-PMC-Signature`` (same scheme as PinmyCal's), and acknowledges the
round: done, retry after an exponential backoff with jitter
(uniform(½, 1) × min(delivery_max_delay_s, delivery_base_delay_ms · 2^attempt)), or — once
the next try would fall past ``delivery_horizon_s`` after acceptance — dead letter.
Only the subscribers still pending are tried again. Delivery is at least once:
subscribers deduplicate by ``X-PMC-Event-Id``.

An acknowledgement the store could not take (a failover, a blip) is kept and sent again before
the next claim, for as long as the lease it belongs to holds: otherwise the event would wait out
its whole lease although its round is over. Past the lease another relay may own the event, so
the kept acknowledgement is dropped and the lapsed lease does its job.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from gateway.core.clock import Clock, Pace, real_time_pace
from gateway.core.tasks import stop_task
from gateway.errors import StoreError
from gateway.settings import SubscriberSettings, WebhookSettings
from gateway.store.protocols import WebhookStore
from gateway.upstream.client import client_ssl_context
from gateway.upstream.egress_proxy import proxy_for
from gateway.webhooks.event import WebhookEvent
from gateway.webhooks.links import note_deliveries
from gateway.webhooks.signature import sign

log = structlog.get_logger("gateway.webhooks")

DELIVERY_TIMEOUT_S = 10.0
# a round posts to every subscriber at once, each bounded by the delivery timeout, so a live relay
# never outlives this lease; kept short because a lost claim answer strands the event for as long
LEASE_S = DELIVERY_TIMEOUT_S + 5.0
BATCH = 16


@dataclass(frozen=True)
class UnsentAck:
    outcome: str
    blob: bytes
    score: float
    lease_end: float


def matching(subscribers: tuple[SubscriberSettings, ...], event_type: str) -> list[str]:
    return [s.name for s in subscribers if event_type in s.events]


class WebhookRelay:
    def __init__(
        self,
        *,
        store: WebhookStore,
        settings: WebhookSettings,
        subscriber_secrets: Mapping[str, bytes],
        clock: Clock,
        pace: Pace = real_time_pace,
        rng: random.Random,
        poll_s: float = 0.2,
        ca_file: str = "",
        proxy_url: str = "",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._secrets = dict(subscriber_secrets)
        self._subscribers = {s.name: s for s in settings.subscribers}
        self._clock = clock
        self._pace = pace
        self._rng = rng
        self._poll_s = poll_s
        self._ca_file = ca_file
        self._proxy_url = proxy_url
        self._environ = dict(environ or {})  # the proxy variables, handed in by the composition root
        self.backlog = 0
        self.dead_letters = 0
        self._unsent_acks: dict[str, UnsentAck] = {}
        self._counted_at = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def status_section(self) -> dict[str, object]:
        return {"backlog": self.backlog, "deadLetters": self.dead_letters}

    def replace_secrets(self, subscriber_secrets: Mapping[str, bytes]) -> None:
        self._secrets = dict(subscriber_secrets)

    def backoff_s(self, attempts: int) -> float:
        ceiling = min(self._settings.delivery_max_delay_s, self._settings.delivery_base_delay_ms / 1000 * 2 ** (attempts - 1))
        return float(ceiling * self._rng.uniform(0.5, 1.0))

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=64, ssl=client_ssl_context(self._ca_file))
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_S))
        self._task = asyncio.create_task(self._run(), name="webhook-relay")

    async def close(self) -> None:
        await stop_task(self._task)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                busy = await self.run_round()
            except StoreError as exc:
                log.warning("webhook_store_unavailable", error=str(exc))
                await self._pace(1.0)
                continue
            if not busy:
                await self._pace(self._poll_s)

    async def run_round(self) -> bool:
        """One claim and its deliveries; whether anything was due."""
        now = self._clock.wall()
        await self._resend_acks(now)
        blobs = await self._store.webhook_claim(now, LEASE_S, BATCH)
        if now - self._counted_at >= 1.0 or blobs:
            self.backlog, self.dead_letters = await self._store.webhook_counts()
            self._counted_at = now
        if not blobs:
            return False
        lease_end = now + LEASE_S
        await asyncio.gather(*(self._deliver(WebhookEvent.from_blob(blob), lease_end) for blob in blobs))
        return True

    async def _resend_acks(self, now: float) -> None:
        for event_id, ack in list(self._unsent_acks.items()):
            if now >= ack.lease_end:
                del self._unsent_acks[event_id]
                continue
            await self._store.webhook_finish(event_id, ack.outcome, ack.blob, ack.score)
            del self._unsent_acks[event_id]
            log.info("webhook_ack_resent", eventId=event_id, outcome=ack.outcome)

    async def _finish(self, event_id: str, outcome: str, blob: bytes, score: float, lease_end: float) -> None:
        try:
            await self._store.webhook_finish(event_id, outcome, blob, score)
        except StoreError as exc:
            log.warning("webhook_ack_failed", eventId=event_id, error=str(exc))
            self._unsent_acks[event_id] = UnsentAck(outcome, blob, score, lease_end)

    async def _deliver(self, event: WebhookEvent, lease_end: float) -> None:
        targets = [name for name in event.pending if name in self._subscribers]
        results = await asyncio.gather(*(self._post(self._subscribers[name], event) for name in targets))
        failures = {name: error for name, error in zip(targets, results, strict=True) if error is not None}
        await note_deliveries(self._store, event, dict(zip(targets, results, strict=True)))
        now = self._clock.wall()
        if not failures:
            log.info("webhook_delivered", eventId=event.event_id, type=event.type, subscribers=targets, attempts=event.attempts + 1)
            await self._finish(event.event_id, "done", b"", 0.0, lease_end)
            return
        event.attempts += 1
        event.pending = sorted(failures)
        event.last_error = "; ".join(f"{name}: {error}" for name, error in sorted(failures.items()))
        next_try = now + self.backoff_s(event.attempts)
        if next_try > event.horizon_from + self._settings.delivery_horizon_s:
            event.dead_at = now
            log.error("webhook_dead_letter", eventId=event.event_id, type=event.type, attempts=event.attempts, error=event.last_error)
            await self._finish(event.event_id, "dead", event.to_blob(), now, lease_end)
        else:
            log.warning("webhook_delivery_failed", eventId=event.event_id, attempts=event.attempts, retryInS=round(next_try - now, 3), error=event.last_error)
            await self._finish(event.event_id, "retry", event.to_blob(), next_try, lease_end)

    async def _post(self, subscriber: SubscriberSettings, event: WebhookEvent) -> str | None:
        """None when delivered, else why not."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "X-PMC-Event-Id": event.event_id,
            "X-PMC-Event-Type": event.type,
            "X-Request-Id": event.request_id,
        }
        secret = self._secrets.get(subscriber.name)
        if secret is not None:
            timestamp = str(int(self._clock.wall()))
            headers["X-PMC-Timestamp"] = timestamp
            headers["X-PMC-Signature"] = sign(secret, timestamp, event.body)
        route: dict[str, Any] = {}
        proxy = proxy_for(subscriber.url, self._proxy_url, self._environ)  # the same egress as upstream calls
        if proxy is not None:
            route["proxy"] = proxy.name
            if proxy.authorization:
                route["proxy_headers"] = {"Proxy-Authorization": proxy.authorization}
        try:
            async with self._session.post(subscriber.url, data=event.body, headers=headers, allow_redirects=False, **route) as response:
                await response.read()
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__
