"""The retry predicate and the Retry-After and rate-limit header parsers (SPEC §1, §5)."""

from __future__ import annotations

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import UpstreamTimeout, UpstreamUnavailable
from gateway.request.types import UpstreamResponse
from gateway.stages.rate_limit_headers import parse_rate_limit
from gateway.stages.retry.policy import retry_reason
from gateway.stages.retry.retry_after import parse_retry_after
from tests.support.fakes import make_request

NOW = 1_773_135_000.0


@pytest.mark.parametrize(
    ("method", "key", "outcome", "reason"),
    [
        ("GET", None, UpstreamResponse(503, (), b""), "status_503"),
        ("GET", None, UpstreamResponse(429, (), b""), "status_429"),
        ("GET", None, UpstreamResponse(404, (), b""), None),
        ("POST", None, UpstreamResponse(503, (), b""), None),  # not idempotent: may have booked
        ("POST", "k", UpstreamResponse(503, (), b""), "status_503"),
        ("POST", None, UpstreamUnavailable("refused", sent=False), "connect_error"),  # never sent: any method
        ("POST", None, UpstreamUnavailable("lost", sent=True), None),
        ("PUT", None, UpstreamTimeout("slow", sent=True), "upstream_timeout"),
        ("GET", None, UpstreamUnavailable("too large", sent=True, retryable=False), None),
    ],
)
def test_only_what_is_safe_is_retried(method: str, key: str | None, outcome: object, reason: str | None) -> None:
    request = make_request(ManualClock(), method=method, idempotency_key=key)
    response = outcome if isinstance(outcome, UpstreamResponse) else None
    error = outcome if not isinstance(outcome, UpstreamResponse) else None
    assert retry_reason(request, response, error) == reason  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 5.0), (" 0 ", 0.0), ("Wed, 11 Mar 2026 09:30:10 GMT", 10.0), ("Wed, 11 Mar 2026 09:29:00 GMT", 0.0),
     ("soon", None), ("-1", None), (None, None), ("99999999", 86_400.0)],
)
def test_retry_after_in_both_forms(value: str | None, seconds: float | None) -> None:
    now = 1_773_221_400.0  # Wed, 11 Mar 2026 09:30:00 GMT
    assert parse_retry_after(value, now_wall=now) == seconds


def test_rate_limit_headers_in_both_forms_and_a_reset_that_is_a_date() -> None:
    def headers(pairs: dict[str, str]):  # type: ignore[no-untyped-def]
        return lambda name: pairs.get(name)

    assert parse_rate_limit(headers({"RateLimit-Remaining": "7", "RateLimit-Reset": "30"}), now_wall=NOW) == (7, 30.0)
    assert parse_rate_limit(headers({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 12)}), now_wall=NOW) == (0, 12.0)
    assert parse_rate_limit(headers({"RateLimit-Remaining": "7"}), now_wall=NOW) is None  # half a pair says nothing
    assert parse_rate_limit(headers({"RateLimit-Remaining": "nan", "RateLimit-Reset": "1"}), now_wall=NOW) is None
