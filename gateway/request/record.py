"""The triage record (SPEC §6): everything that happened to one request, under its requestId.

One mutable record per request, created by the request-id middleware and annotated by
the stages it passes through; written to the store off the critical path when the
response is sent. It holds no secret: credentials are added innermost, after every
stage that writes here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.clock import iso_utc_ms


@dataclass(slots=True)
class AttemptRecord:
    attempt: int
    status: int | None = None
    error: str | None = None
    latency_ms: float = 0.0
    delay_ms: float = 0.0
    hedge: bool = False
    job_poll: bool = False  # made while following the job this request created

    def to_json(self) -> dict[str, object]:
        return {
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "latencyMs": round(self.latency_ms, 3),
            "delayMs": round(self.delay_ms, 3),
            "hedge": self.hedge,
            **({"jobPoll": True} if self.job_poll else {}),
        }


@dataclass(slots=True)
class CacheRecord:
    """How a shared read was answered (SPEC §6 triage ``cache``)."""

    status: str  # hit | stale | collapsed | miss | bypass
    age_s: float | None = None
    leader_request_id: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "ageS": None if self.age_s is None else round(self.age_s, 3),
            "leaderRequestId": self.leader_request_id,
        }


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started_at: float  # wall clock, seconds
    method: str = ""
    path: str = ""
    route: str = ""
    trace_id: str | None = None
    client: str | None = None
    environment: str | None = None
    status: int | None = None
    latency_ms: float = 0.0
    budget_wait_ms: float = 0.0
    breaker_state: str | None = None
    idempotency_key: str | None = None
    upstream_request_id: str | None = None
    job_id: str | None = None
    booking_id: str | None = None
    job_wait_ms: float = 0.0  # following a job (Prefer: wait): the job's time, not the gateway's
    error_code: str | None = None
    replayed: bool = False
    cache: CacheRecord | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def own_attempts(self) -> int:
        """Upstream attempts for this request itself (``X-Gateway-Attempts``): tries, retries,
        hedges; not the polls made while following its job (those are the job's, in ``job``)."""
        return sum(1 for a in self.attempts if not a.job_poll)

    @property
    def proxied(self) -> bool:
        """A caller's /v1 request (authenticated), not an admin, health or webhook call."""
        return self.client is not None

    def to_json(self) -> dict[str, object]:
        return {
            "requestId": self.request_id,
            "traceId": self.trace_id,
            "client": self.client,
            "environment": self.environment,
            "method": self.method,
            "route": self.route,
            "path": self.path,
            "status": self.status,
            "latencyMs": round(self.latency_ms, 3),
            "budgetWaitMs": round(self.budget_wait_ms, 3),
            "jobWaitMs": round(self.job_wait_ms, 3),
            "breakerState": self.breaker_state,
            "idempotencyKey": self.idempotency_key,
            "startedAt": iso_utc_ms(self.started_at),
            "upstreamRequestId": self.upstream_request_id,
            "jobId": self.job_id,
            "bookingId": self.booking_id,
            "errorCode": self.error_code,
            "replayed": self.replayed,
            "attempts": [a.to_json() for a in self.attempts],
            **({"cache": self.cache.to_json()} if self.cache is not None else {}),
        }

    def gateway_added_s(self, elapsed_s: float) -> float:
        """What the gateway itself took of ``elapsed_s``: less the upstream attempts, the backoff
        before them and the rate-budget wait (waits it chose to make, not work it did)."""
        # A hedge runs beside its attempt, and a job's polls inside the job's wait: each
        # stretch of time counts once.
        elsewhere_ms = self.budget_wait_ms + self.job_wait_ms + sum(
            a.latency_ms + a.delay_ms for a in self.attempts if not a.hedge and not a.job_poll
        )
        return max(0.0, elapsed_s - elsewhere_ms / 1000)
