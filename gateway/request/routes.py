"""Route templates: the low-cardinality name of a path, for metrics, spans and breakers.

Known PinmyCal resources keep their name; ids become ``{id}``; anything else folds
into ``/v1/{other}`` so an authenticated caller cannot blow up label cardinality.
"""

from __future__ import annotations

from functools import lru_cache

KNOWN_RESOURCES = frozenset({"users", "availability", "bookings", "jobs", "event-types", "webhooks"})
_LITERAL_SEGMENTS = frozenset({"me", "cancel", "reschedule", "confirm"})


@lru_cache(maxsize=4096)
def route_template(path: str) -> str:
    """``/v1/bookings/bk_1027/cancel?x=1`` → ``/v1/bookings/{id}/cancel``."""
    path = path.split("?", 1)[0]
    segments = path.strip("/").split("/")
    if len(segments) < 2 or segments[0] != "v1":
        return "/v1/{other}"
    resource = segments[1]
    if resource not in KNOWN_RESOURCES:
        return "/v1/{other}"
    parts = ["", "v1", resource]
    for segment in segments[2:6]:
        parts.append(segment if segment in _LITERAL_SEGMENTS else "{id}")
    if len(segments) > 6:
        parts.append("…")
    return "/".join(parts)
