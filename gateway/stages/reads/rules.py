"""What a shared read may reuse, and for how long (SPEC §3 ``[reads]``, RFC 9111, RFC 5861).

Pure functions over headers and settings: no store, no clock. ``ReadRules`` is built once from
``[reads]``; the stage asks it per request.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.request.types import Headers, UpstreamRequest, UpstreamResponse
from gateway.settings import ReadsSettings

BOOKING_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BOOKING_ROUTES_PREFIX = "/v1/bookings"
_DIRECTIVE = re.compile(r"\s*([A-Za-z-]+)\s*(?:=\s*\"?([^\",]*)\"?)?\s*")
# Never part of a stored answer: each answer gets its own (hop or gateway headers).
_NOT_STORED = frozenset({"age", "cache-status", "x-gateway-cache", "set-cookie"})


@dataclass(frozen=True, slots=True)
class ReadRoute:
    """One listed route's cache rules."""

    fresh_s: float
    stale_while_revalidate_s: float
    stale_if_error_s: float
    invalidated_by: frozenset[str]
    max_entry_bytes: int


@dataclass(frozen=True, slots=True)
class ReadRules:
    coalesce: bool
    routes: Mapping[str, ReadRoute] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: ReadsSettings | None) -> ReadRules:
        if settings is None:
            return cls(coalesce=False)
        return cls(
            coalesce=settings.coalesce,
            routes={
                route: ReadRoute(
                    fresh_s=r.fresh_s,
                    stale_while_revalidate_s=r.stale_while_revalidate_s,
                    stale_if_error_s=r.stale_if_error_s,
                    invalidated_by=frozenset(r.invalidated_by),
                    max_entry_bytes=r.max_entry_bytes,
                )
                for route, r in settings.routes.items()
            },
        )

    @property
    def enabled(self) -> bool:
        return self.coalesce or bool(self.routes)

    def routes_invalidated_by(self, source: str) -> tuple[str, ...]:
        return tuple(route for route, rule in self.routes.items() if source in rule.invalidated_by)


def directives(value: str | None) -> dict[str, str]:
    """``Cache-Control`` as lower-cased directive → argument ('' for none)."""
    found: dict[str, str] = {}
    for part in (value or "").split(","):
        match = _DIRECTIVE.fullmatch(part)
        if match and match.group(1):
            found.setdefault(match.group(1).lower(), match.group(2) or "")
    return found


def header(headers: Headers, name: str) -> str | None:
    lowered = name.lower()
    values = [v for k, v in headers if k.lower() == lowered]
    return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class CallerAsks:
    """The caller's ``Cache-Control`` on a read (RFC 9111 §5.2.1)."""

    refresh: bool  # no-cache or max-age=0: go upstream, refresh the entry
    only_if_cached: bool

    @classmethod
    def of(cls, request: UpstreamRequest) -> CallerAsks:
        asked = directives(header(request.headers, "Cache-Control"))
        refresh = "no-cache" in asked or asked.get("max-age") == "0" or "no-store" in asked
        if header(request.headers, "Pragma") == "no-cache" and "max-age" not in asked:
            refresh = True
        return cls(refresh=refresh, only_if_cached="only-if-cached" in asked)


def entry_key(request: UpstreamRequest) -> str:
    """What makes two reads identical: environment, path and query, ``Accept``. Headers the
    answer ``Vary``-s on are compared against the entry itself (``varies_from``)."""
    return entry_key_of(request.environment, request.target, header(request.headers, "Accept") or "")


def entry_key_of(environment: str, target: str, accept: str) -> str:
    digest = hashlib.sha256()
    for part in (environment, target, accept):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def scope_of(environment: str, route: str) -> str:
    return f"{environment}|{route}"


def vary_names(response: UpstreamResponse) -> tuple[str, ...]:
    value = response.header("Vary") or ""
    return tuple(sorted({name.strip().lower() for name in value.split(",") if name.strip()}))


def vary_values(request_headers: Headers, names: tuple[str, ...]) -> dict[str, str]:
    return {name: header(request_headers, name) or "" for name in names}


def storable_for(response: UpstreamResponse, rule: ReadRoute) -> float | None:
    """Seconds the answer stays fresh, or None when it must not be stored (SPEC §5 "Cache")."""
    if response.status != 200 or rule.fresh_s <= 0 or len(response.body) > rule.max_entry_bytes:
        return None
    if response.header("Set-Cookie") is not None or "*" in vary_names(response):
        return None
    control = directives(response.header("Cache-Control"))
    if {"no-store", "private", "no-cache"} & control.keys():
        return None
    fresh = rule.fresh_s
    for name in ("s-maxage", "max-age"):  # s-maxage first: a shared cache's own
        if name in control:
            try:
                fresh = min(fresh, max(0.0, float(control[name])))
            except ValueError:
                return None
            break
    return fresh if fresh > 0 else None


def may_serve_stale(response_headers: Headers) -> bool:
    control = directives(header(response_headers, "Cache-Control"))
    return not ({"must-revalidate", "proxy-revalidate"} & control.keys())


def stored_headers(response: UpstreamResponse) -> Headers:
    return tuple((k, v) for k, v in response.headers if k.lower() not in _NOT_STORED)


def cache_status(kind: str, *, ttl_s: float | None = None, detail: str | None = None) -> tuple[str, str]:
    """RFC 9211 ``Cache-Status`` in the SPEC's forms."""
    if kind == "hit":
        value = f"pmc-gateway; hit; ttl={math.floor(ttl_s or 0)}"
    elif kind == "stale":
        value = f"pmc-gateway; hit; ttl=-{math.ceil(ttl_s or 0)}; detail={detail}"
    elif kind == "stored":
        value = "pmc-gateway; fwd=miss; stored"
    elif kind == "collapsed":
        value = "pmc-gateway; fwd=miss; collapsed"
    elif kind == "bypass":
        value = "pmc-gateway; fwd=request"
    else:
        value = "pmc-gateway; fwd=miss"
    return ("Cache-Status", value)


def is_booking_write(request: UpstreamRequest) -> bool:
    return request.method in BOOKING_WRITE_METHODS and (
        request.route == BOOKING_ROUTES_PREFIX or request.route.startswith(BOOKING_ROUTES_PREFIX + "/")
    )
