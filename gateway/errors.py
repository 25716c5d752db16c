"""The gateway's one exception tree; foreign exceptions are mapped into it at the seams.

    GatewayError
    ├── ConfigError                  config or secrets unusable (exit 2 / reload refused)
    ├── StoreError                   the shared store did not answer in time
    │   └── ReplicasBehind           it answered, but too few replicas hold a webhook yet (webhook_ack_replicas)
    └── Refusal                      an answer the gateway makes itself (SPEC §4 table)
        ├── BadRequest               400 BAD_REQUEST
        ├── Unauthenticated          401 GATEWAY_UNAUTHENTICATED
        ├── AdminUnauthorized        401 UNAUTHORIZED (admin endpoints)
        ├── InvalidSignature         401 INVALID_SIGNATURE (webhooks)
        ├── StaleTimestamp           401 STALE_TIMESTAMP (webhooks)
        ├── EnvironmentForbidden     403 ENVIRONMENT_FORBIDDEN
        ├── NotFound                 404 NOT_FOUND
        ├── IdempotencyKeyInUse      409 IDEMPOTENCY_KEY_IN_USE
        ├── PayloadTooLarge          413 PAYLOAD_TOO_LARGE
        ├── IdempotencyKeyReused     422 IDEMPOTENCY_KEY_REUSED
        ├── RateBudgetExhausted      429 RATE_BUDGET_EXHAUSTED   (final: never retried)
        ├── CircuitOpen              503 CIRCUIT_OPEN            (final: never retried)
        ├── StoreUnavailable         503 STORE_UNAVAILABLE (webhook not stored: sender retries)
        └── UpstreamFailure          an attempt ended without an upstream answer
            ├── UpstreamUnavailable  502 UPSTREAM_UNAVAILABLE (connect failed / connection lost)
            └── UpstreamTimeout      504 UPSTREAM_TIMEOUT (attempt timeout or deadline)

``Refusal`` carries everything the envelope needs (status, code, message, extra headers);
``envelope.py`` is the only place that turns one into a response body.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class GatewayError(Exception):
    """Base of every exception the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration or its secrets cannot be used; ``problems`` are ``field.path: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class StoreError(GatewayError):
    """The shared store failed or timed out; callers fall back or refuse, never hang."""


class ReplicasBehind(StoreError):
    """The store answered, but fewer replicas than ``webhook_ack_replicas`` hold the event yet: that
    one webhook is refused (503, the sender retries), the store is not down."""


class Refusal(GatewayError):
    """An answer the gateway gives itself, in the upstream's envelope plus ``source: gateway``."""

    status = 500
    code = "INTERNAL"

    def __init__(
        self, message: str, *, retry_after_s: int | None = None, details: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.details = dict(details or {})  # extra envelope fields, e.g. RATE_BUDGET_EXHAUSTED's "limit"
        self.extra_headers: dict[str, str] = {}  # e.g. a shared read's Cache-Status

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return dict(self.extra_headers)
        return {"Retry-After": str(max(1, self.retry_after_s)), **self.extra_headers}

    def again(self) -> Refusal:
        """The same refusal as a new exception, for another caller (a shared read's follower)."""
        return refusal_of(self.code, self.message, retry_after_s=self.retry_after_s, details=self.details)


class BadRequest(Refusal):
    status, code = 400, "BAD_REQUEST"


class Unauthenticated(Refusal):
    status, code = 401, "GATEWAY_UNAUTHENTICATED"


class AdminUnauthorized(Refusal):
    status, code = 401, "UNAUTHORIZED"


class InvalidSignature(Refusal):
    status, code = 401, "INVALID_SIGNATURE"


class StaleTimestamp(Refusal):
    status, code = 401, "STALE_TIMESTAMP"


class EnvironmentForbidden(Refusal):
    status, code = 403, "ENVIRONMENT_FORBIDDEN"


class NotFound(Refusal):
    status, code = 404, "NOT_FOUND"


class IdempotencyKeyInUse(Refusal):
    status, code = 409, "IDEMPOTENCY_KEY_IN_USE"


class PayloadTooLarge(Refusal):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class IdempotencyKeyReused(Refusal):
    status, code = 422, "IDEMPOTENCY_KEY_REUSED"


class RateBudgetExhausted(Refusal):
    status, code = 429, "RATE_BUDGET_EXHAUSTED"


class CircuitOpen(Refusal):
    status, code = 503, "CIRCUIT_OPEN"


class StoreUnavailable(Refusal):
    status, code = 503, "STORE_UNAVAILABLE"


class UpstreamFailure(Refusal):
    """An upstream attempt ended without an answer.

    ``sent`` tells whether the request may have reached the upstream: a connection
    refused before sending is safe to retry for any method, a lost one is not.
    """

    def __init__(self, message: str, *, sent: bool, retryable: bool = True) -> None:
        super().__init__(message)
        self.sent = sent
        self.retryable = retryable  # False: trying again gets the same (an answer over max_response_bytes)


class UpstreamUnavailable(UpstreamFailure):
    status, code = 502, "UPSTREAM_UNAVAILABLE"


class UpstreamTimeout(UpstreamFailure):
    status, code = 504, "UPSTREAM_TIMEOUT"


def refusal_of(code: str, message: str, *, retry_after_s: int | None = None, details: Mapping[str, str] | None = None) -> Refusal:
    """The refusal a code names, rebuilt from its parts (a shared read's leader on another replica
    was refused: each follower answers with the same refusal)."""
    kinds: list[type[Refusal]] = [Refusal]
    found: type[Refusal] = Refusal
    while kinds:
        kind = kinds.pop()
        if kind.code == code and kind not in (Refusal, UpstreamFailure):
            found = kind
            break
        kinds.extend(kind.__subclasses__())
    if issubclass(found, UpstreamFailure):
        return found(message, sent=True)
    refusal = found(message, retry_after_s=retry_after_s, details=details)
    if found is Refusal:
        refusal.code = code
    return refusal
