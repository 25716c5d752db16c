"""Which headers cross the gateway (RFC 9110 §7.6.1: hop-by-hop headers stop here)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.request.types import Headers

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway itself (or by the HTTP layer) on each hop, never copied through.
_REQUEST_DROPPED = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "x-pmc-environment",
    "x-request-id",
    "expect",
    "traceparent",  # replaced by the gateway's own attempt span, continuing the caller's trace
}
_RESPONSE_DROPPED = HOP_BY_HOP | {"content-length", "x-request-id", "date", "server"}


def _connection_tokens(pairs: list[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for key, value in pairs:
        if key.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(","))
    return tokens


def _filter(pairs: Iterable[tuple[str, str]], dropped: frozenset[str]) -> Headers:
    pairs = list(pairs)
    extra = _connection_tokens(pairs)
    return tuple((k, v) for k, v in pairs if (lk := k.lower()) not in dropped and lk not in extra)


def request_headers(pairs: Iterable[tuple[str, str]]) -> Headers:
    """Caller headers to forward upstream: end-to-end only, minus the caller's credentials."""
    return _filter(pairs, _REQUEST_DROPPED)


_HEAD_RESPONSE_DROPPED = _RESPONSE_DROPPED - {"content-length"}


def response_headers(pairs: Iterable[tuple[str, str]], *, head: bool = False) -> Headers:
    """Upstream headers to pass back to the caller unchanged. A HEAD answer keeps its
    Content-Length: it has no body the length could be measured from again."""
    return _filter(pairs, _HEAD_RESPONSE_DROPPED if head else _RESPONSE_DROPPED)
