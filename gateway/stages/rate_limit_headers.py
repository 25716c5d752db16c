"""The upstream's rate-limit headers (SPEC §1): ``RateLimit-Remaining`` / ``RateLimit-Reset``
or their ``X-RateLimit-*`` forms. ``*-Reset`` is seconds until the window frees; an
``X-RateLimit-Reset`` that large can only be a Unix time, and is read as one."""

from __future__ import annotations

from collections.abc import Callable

UNIX_TIME_FROM = 1_000_000_000  # seconds: no window is 31 years long, so this is a date
MAX_RESET_S = 3600.0


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 and number == number and number != float("inf") else None


def parse_rate_limit(header: Callable[[str], str | None], *, now_wall: float) -> tuple[int, float] | None:
    """``(remaining, reset_s)`` from an answer's headers, or None when it carries no usable pair."""
    for prefix in ("RateLimit-", "X-RateLimit-"):
        remaining = _number(header(prefix + "Remaining"))
        reset = _number(header(prefix + "Reset"))
        if remaining is None or reset is None:
            continue
        if reset >= UNIX_TIME_FROM:
            reset = max(0.0, reset - now_wall)
        return int(remaining), min(reset, MAX_RESET_S)
    return None
