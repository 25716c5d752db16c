"""Webhook ingress (``POST {webhooks.path}``) and the dead-letter admin endpoints (SPEC §7).

An event is verified, parsed, then deduplicated and stored in one atomic store call
before the 200; if it cannot be stored durably the answer is 503 so the sender retries.
Every rejection is logged with requestId, source IP and reason, and counted in
``pmc_gateway_webhook_rejected_total{reason}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog
from aiohttp import web

from gateway import errors
from gateway.core.clock import Clock
from gateway.inbound.admin_guard import admin_guard
from gateway.inbound.source_ip import Network, source_ip
from gateway.observability.instruments import WEBHOOK_REJECTED
from gateway.observability.names import REASON
from gateway.observability.telemetry import Telemetry
from gateway.request.body import read_body
from gateway.request.envelope import json_response
from gateway.request.keys import RECORD
from gateway.settings import WebhookSettings
from gateway.stages.reads.invalidation import ReadInvalidator
from gateway.store.protocols import WebhookStore
from gateway.webhooks.event import WebhookEvent, environment_of, parse_event
from gateway.webhooks.links import link_event
from gateway.webhooks.relay import matching
from gateway.webhooks.signature import verify

T = TypeVar("T")
log = structlog.get_logger("gateway.webhooks")

REASONS: dict[type[errors.Refusal], str] = {
    errors.InvalidSignature: "invalid_signature",
    errors.StaleTimestamp: "stale_timestamp",
    errors.BadRequest: "bad_request",
    errors.PayloadTooLarge: "payload_too_large",
    errors.StoreUnavailable: "store_unavailable",
}


def webhook_routes(
    *,
    settings: WebhookSettings,
    secrets: Callable[[], Sequence[bytes]],
    store: WebhookStore,
    clock: Clock,
    telemetry: Telemetry,
    max_body_bytes: int,
    body_timeout_s: float,
    trusted: Sequence[Network],
    admin_token: Callable[[], str | None],
    environments: Sequence[str] = (),
    reads: ReadInvalidator | None = None,
) -> list[web.RouteDef]:
    guard = admin_guard(admin_token)

    async def receive(request: web.Request) -> web.StreamResponse:
        record = request[RECORD]
        try:
            body = await read_body(request, max_body_bytes, body_timeout_s)
            verify(
                secrets=secrets(),
                timestamp_header=request.headers.get("X-PMC-Timestamp"),
                signature_header=request.headers.get("X-PMC-Signature"),
                body=body,
                now=clock.wall(),
                tolerance_s=settings.tolerance_s,
            )
            event_id, event_type = parse_event(body)
            now = clock.wall()
            event = WebhookEvent(
                event_id=event_id,
                type=event_type,
                body=body,
                request_id=record.request_id,
                accepted_at=now,
                horizon_from=now,
                pending=matching(settings.subscribers, event_type),
            )
            try:
                accepted = await store.webhook_accept(event_id, event.to_blob(), settings.dedupe_ttl_s, now)
            except errors.StoreError as exc:
                raise errors.StoreUnavailable("the event could not be stored durably; retry later", retry_after_s=5) from exc
        except errors.Refusal as refusal:
            reason = REASONS.get(type(refusal), "other")
            telemetry.count(WEBHOOK_REJECTED, {REASON: reason})
            log.warning(
                "webhook_rejected",
                requestId=record.request_id,
                sourceIp=source_ip(request.remote, request.headers.get("X-Forwarded-For"), trusted),
                reason=reason,
                detail=refusal.message,
            )
            raise
        answer: dict[str, object] = {"status": "ok", "eventId": event_id, "requestId": record.request_id}
        if not accepted:
            answer["duplicate"] = True
        log.info("webhook_accepted", eventId=event_id, type=event_type, duplicate=not accepted, subscribers=event.pending)
        if accepted:
            await link_event(store, event, environments, now)
        if reads is not None and event_type.startswith("booking."):
            # before the 200: from the moment the event is accepted no stale availability is served
            await reads.booking_changed("webhook", environment_of(body))
        return json_response(answer)

    async def dead_letters(request: web.Request) -> web.StreamResponse:
        limit = min(500, max(1, int(request.query.get("limit", "100")) if request.query.get("limit", "100").isdigit() else 100))
        blobs = await _store_call(store.webhook_dead_letters(limit))
        return json_response({"deadLetters": [WebhookEvent.from_blob(b).summary() for b in blobs]})

    async def replay(request: web.Request) -> web.StreamResponse:
        event_id = request.match_info["event_id"]
        blob = await _store_call(store.webhook_get(event_id))
        event = WebhookEvent.from_blob(blob) if blob is not None else None
        if event is None or event.dead_at is None:
            raise errors.NotFound(f"no dead letter {event_id[:128]}")
        now = clock.wall()
        event.attempts, event.dead_at, event.horizon_from = 0, None, now
        if not await _store_call(store.webhook_replay(event_id, event.to_blob(), now)):
            raise errors.NotFound(f"no dead letter {event_id[:128]}")
        log.info("webhook_replayed", eventId=event_id)
        return json_response({"status": "ok", "eventId": event_id, "replayed": True})

    return [
        web.post(settings.path, receive, name="webhook"),
        web.get("/_gateway/webhooks/dead-letters", guard(dead_letters), name="dead_letters"),
        web.post("/_gateway/webhooks/dead-letters/{event_id}/replay", guard(replay), name="dead_letter_replay"),
    ]


async def _store_call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except errors.StoreError as exc:
        raise errors.StoreUnavailable("the store is unreachable; retry later", retry_after_s=5) from exc
