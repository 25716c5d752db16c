"""Every instrument the gateway exports (SPEC §8), declared once as data.

A declaration is all there is to know about a metric: its OpenTelemetry name, kind, unit,
attributes (in the order the histograms key their series), buckets, which attributes its
start-up zero series span, and the span event a fact counted on it adds. ``telemetry.py``
builds the instruments from these, stages count facts on them through their observer,
and dashboards/ and the alert rules read ``exposition`` — no metric name is typed anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.core.histogram_buckets import (
    ADDED_LATENCY_BUCKETS,
    BUDGET_WAIT_BUCKETS,
    JOB_DURATION_BUCKETS,
    SECONDS_BUCKETS,
)
from gateway.observability.names import (
    BUDGET_LIMIT,
    BUDGET_LIMITS,
    ERROR_TYPE,
    HEDGE_OUTCOMES,
    HTTP_METHOD,
    HTTP_ROUTE,
    HTTP_STATUS,
    INVALIDATION_SOURCES,
    JOB_OUTCOMES,
    JOB_POLL_SOURCES,
    OUTCOME,
    PMC_CLIENT,
    PMC_ENVIRONMENT,
    PMC_SOURCE,
    READ_RESULTS,
    REASON,
    RESULT,
    SOURCE,
)

Kind = Literal["counter", "histogram", "gauge"]
_UNIT_SUFFIX = {"s": "_seconds", "d": "_days", "": ""}


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per instrument
class Instrument:
    name: str  # OpenTelemetry name
    kind: Kind
    description: str
    unit: str = ""
    attributes: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    # The attributes start-up zero series span, so panels and alerts read 0, not nothing:
    # pmc.environment and pmc.client take the configured callers, http.route the routes the
    # stage that counts it declares, anything else the values listed in ``zero_values``.
    # None: no zero series; (): one without attributes.
    zero: tuple[str, ...] | None = None
    zero_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    event: str | None = None  # the span event a fact counted here adds to the current span

    @property
    def exposition(self) -> str:
        """The Prometheus name: dots to underscores, the unit's suffix, ``_total`` for counters."""
        base = self.name.replace(".", "_")
        if not base.endswith(_UNIT_SUFFIX[self.unit]):
            base += _UNIT_SUFFIX[self.unit]
        return base + "_total" if self.kind == "counter" else base


SERVER_DURATION = Instrument(
    "http.server.request.duration", "histogram", "Duration of requests the gateway served", unit="s",
    attributes=(HTTP_METHOD, HTTP_ROUTE, HTTP_STATUS, PMC_CLIENT, PMC_ENVIRONMENT, PMC_SOURCE),
    buckets=SECONDS_BUCKETS, zero=(PMC_CLIENT, PMC_ENVIRONMENT),
)
CLIENT_DURATION = Instrument(
    "http.client.request.duration", "histogram", "Duration of each upstream attempt", unit="s",
    attributes=(HTTP_METHOD, HTTP_ROUTE, PMC_ENVIRONMENT, HTTP_STATUS, ERROR_TYPE),
    buckets=SECONDS_BUCKETS, zero=(PMC_ENVIRONMENT,),
)
ADDED_LATENCY = Instrument(
    "pmc_gateway_added_latency", "histogram",
    "What the gateway itself added to a proxied request: its duration less upstream attempts, backoff and rate-budget wait",
    unit="s", attributes=(HTTP_ROUTE, PMC_ENVIRONMENT), buckets=ADDED_LATENCY_BUCKETS, zero=(PMC_ENVIRONMENT,),
)
RETRIES = Instrument(
    "pmc_gateway_retries", "counter", "Upstream attempts that were retries, by reason",
    attributes=(PMC_ENVIRONMENT, HTTP_ROUTE, REASON), zero=(PMC_ENVIRONMENT,), event="pmc.retry",
)
RETRY_BUDGET_EXHAUSTED = Instrument(
    "pmc_gateway_retry_budget_exhausted", "counter", "Retries skipped because the retry budget was spent",
    attributes=(PMC_ENVIRONMENT,), zero=(PMC_ENVIRONMENT,), event="pmc.retry_budget_exhausted",
)
BREAKER_STATE = Instrument(
    "pmc_gateway_breaker_state", "gauge", "Breaker state: 0 closed, 1 half-open, 2 open",
    attributes=(PMC_ENVIRONMENT, HTTP_ROUTE),
)
BREAKER_REFUSED = Instrument(
    "pmc_gateway_breaker_refused", "counter", "Calls answered 503 CIRCUIT_OPEN without reaching the upstream",
    attributes=(PMC_ENVIRONMENT, HTTP_ROUTE), zero=(PMC_ENVIRONMENT,), event="pmc.breaker.open",
)
BUDGET_WAIT = Instrument(
    "pmc_gateway_budget_wait", "histogram", "Time attempts waited for a rate-budget slot", unit="s",
    attributes=(PMC_ENVIRONMENT, PMC_CLIENT), buckets=BUDGET_WAIT_BUCKETS, zero=(PMC_ENVIRONMENT, PMC_CLIENT),
)
BUDGET_REJECTED = Instrument(
    "pmc_gateway_budget_rejected", "counter", "Requests answered 429 RATE_BUDGET_EXHAUSTED, by the limit that held them back",
    attributes=(PMC_ENVIRONMENT, PMC_CLIENT, BUDGET_LIMIT), zero=(PMC_ENVIRONMENT, PMC_CLIENT, BUDGET_LIMIT),
    zero_values={BUDGET_LIMIT: BUDGET_LIMITS}, event="pmc.budget.rejected",
)
UPSTREAM_THROTTLED = Instrument(
    "pmc_gateway_upstream_throttled", "counter", "Upstream 429 answers (each pauses the key)",
    attributes=(PMC_ENVIRONMENT,), zero=(PMC_ENVIRONMENT,), event="pmc.upstream.throttled",
)
IDEMPOTENT_REPLAYS = Instrument(
    "pmc_gateway_idempotent_replays", "counter", "Answers replayed from the idempotency store",
    attributes=(PMC_ENVIRONMENT, PMC_CLIENT), zero=(PMC_ENVIRONMENT, PMC_CLIENT), event="pmc.idempotent.replayed",
)
WEBHOOK_REJECTED = Instrument(
    "pmc_gateway_webhook_rejected", "counter", "Webhook posts refused, by reason",
    attributes=(REASON,), zero=(REASON,), zero_values={REASON: ("invalid_signature",)},
)
WEBHOOK_BACKLOG = Instrument("pmc_gateway_webhook_delivery_backlog", "gauge", "Webhook deliveries not yet delivered")
STORE_UP = Instrument("pmc_gateway_store_up", "gauge", "1 when the shared store answers")
API_KEY_AGE = Instrument(
    "pmc_gateway_api_key_age_days", "gauge", "Days since each environment's API key was rotated", unit="d",
    attributes=(PMC_ENVIRONMENT,),
)
BUDGET_USED = Instrument(
    "pmc_gateway_budget_used_ratio", "gauge", "Admissions on each environment's key in the last 60 s, over its limit",
    attributes=(PMC_ENVIRONMENT,),
)
JOBS = Instrument(
    "pmc_gateway_jobs", "counter", "Jobs followed for a caller's Prefer: wait, by how they ended",
    attributes=(OUTCOME,), zero=(OUTCOME,), zero_values={OUTCOME: JOB_OUTCOMES},
)
JOB_DURATION = Instrument(
    "pmc_gateway_job_duration", "histogram", "From a followed job's 202 to its final answer", unit="s",
    buckets=JOB_DURATION_BUCKETS, zero=(),
)
JOB_POLLS = Instrument(
    "pmc_gateway_job_polls", "counter", "Callers' and follows' job polls, by who answered: upstream, a shared poll, the cache",
    attributes=(SOURCE,), zero=(SOURCE,), zero_values={SOURCE: JOB_POLL_SOURCES},
)
READS = Instrument(
    "pmc_gateway_reads", "counter", "Answers on shared-read routes and joined calls, by how they were served",
    attributes=(HTTP_ROUTE, RESULT), zero=(HTTP_ROUTE, RESULT), zero_values={RESULT: READ_RESULTS}, event="pmc.read",
)
READ_INVALIDATIONS = Instrument(
    "pmc_gateway_read_invalidations", "counter", "Shared-read invalidations, by what caused them",
    attributes=(SOURCE,), zero=(SOURCE,), zero_values={SOURCE: INVALIDATION_SOURCES},
)
HEDGES = Instrument(
    "pmc_gateway_hedges", "counter", "Hedged reads, by outcome: won (the hedge answered first), lost, skipped (no room)",
    attributes=(HTTP_ROUTE, OUTCOME), zero=(HTTP_ROUTE, OUTCOME), zero_values={OUTCOME: HEDGE_OUTCOMES}, event="pmc.hedge",
)

INSTRUMENTS: tuple[Instrument, ...] = tuple(value for value in list(globals().values()) if isinstance(value, Instrument))

# The SPEC §8 families a scrape must show from start-up (tests/integration/test_telemetry.py
# checks each); the other three appear only with their facts (a Redis store, a rotation date).
PROMETHEUS_NAMES = tuple(
    i.exposition for i in INSTRUMENTS if i not in (RETRY_BUDGET_EXHAUSTED, STORE_UP, API_KEY_AGE)
)
