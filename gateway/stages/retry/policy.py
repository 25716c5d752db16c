"""What may be retried (SPEC §5): the explicit predicate, and nothing else.

Connect failures before the request was sent: any method. For idempotent requests (GET, HEAD,
OPTIONS, PUT, DELETE, or POST/PATCH with Idempotency-Key) also attempt timeouts, connections
lost after sending, and 429/500/502/503/504 answers. A failure the transport marks not
retryable (a response too large, say) never is.
"""

from __future__ import annotations

from gateway.errors import UpstreamFailure
from gateway.request.types import UpstreamRequest, UpstreamResponse

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def retry_reason(request: UpstreamRequest, response: UpstreamResponse | None, error: UpstreamFailure | None) -> str | None:
    """Why this outcome may be retried, or None when it is final."""
    if error is not None:
        if not error.retryable:
            return None
        if not error.sent:
            return "connect_error"
        return error.code.lower() if request.idempotent else None
    if response is None:
        return None
    if response.status in RETRYABLE_STATUSES and request.idempotent:
        return f"status_{response.status}"
    return None
