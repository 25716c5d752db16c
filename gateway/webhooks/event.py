"""An accepted webhook event as the store keeps it, with its delivery state."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field

from gateway.errors import BadRequest

EVENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass
class WebhookEvent:
    event_id: str
    type: str
    body: bytes
    request_id: str
    accepted_at: float
    horizon_from: float  # deliveries give up this long after it (reset by a replay)
    pending: list[str] = field(default_factory=list)  # subscriber names still to deliver to
    attempts: int = 0
    last_error: str | None = None
    dead_at: float | None = None

    def to_blob(self) -> bytes:
        return json.dumps(
            {
                "eventId": self.event_id,
                "type": self.type,
                "body": base64.b64encode(self.body).decode(),
                "requestId": self.request_id,
                "acceptedAt": self.accepted_at,
                "horizonFrom": self.horizon_from,
                "pending": self.pending,
                "attempts": self.attempts,
                "lastError": self.last_error,
                "deadAt": self.dead_at,
            }
        ).encode()

    @classmethod
    def from_blob(cls, blob: bytes) -> WebhookEvent:
        d = json.loads(blob)
        return cls(
            d["eventId"], d["type"], base64.b64decode(d["body"]), d["requestId"], d["acceptedAt"],
            d["horizonFrom"], list(d["pending"]), d["attempts"], d["lastError"], d["deadAt"],
        )

    def summary(self) -> dict[str, object]:
        """What the dead-letter listing shows (the body too: it is the sender's, not a secret)."""
        return {
            "eventId": self.event_id,
            "type": self.type,
            "requestId": self.request_id,
            "acceptedAt": self.accepted_at,
            "deadAt": self.dead_at,
            "attempts": self.attempts,
            "pending": self.pending,
            "lastError": self.last_error,
            "body": self.body.decode("utf-8", "replace"),
        }


def parse_event(body: bytes) -> tuple[str, str]:
    """``(eventId, type)`` of a posted event; ``BadRequest`` when it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("webhook body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("webhook body must be a JSON object")
    event_id, event_type = payload.get("eventId"), payload.get("type")
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise BadRequest("webhook body needs an eventId of 1-128 characters [A-Za-z0-9._:-]")
    if not isinstance(event_type, str) or not 1 <= len(event_type) <= 64:
        raise BadRequest("webhook body needs a type")
    return event_id, event_type


def environment_of(body: bytes) -> str | None:
    """The environment an event names (``environment``, top level or in ``data``), if any."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    data = payload.get("data")
    for holder in (payload, data if isinstance(data, dict) else {}):
        value = holder.get("environment")
        if isinstance(value, str):
            return value
    return None
