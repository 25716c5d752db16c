"""``Retry-After`` in both forms RFC 9110 allows: delay-seconds or an HTTP-date."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 86_400.0


def parse_retry_after(value: str | None, *, now_wall: float) -> float | None:
    """Seconds to wait, or None when absent or unparseable (then the schedule decides)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - now_wall), MAX_RETRY_AFTER_S)
