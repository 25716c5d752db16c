"""Every metric, span attribute and label name (SPEC §8), declared once. Instruments
(telemetry.py), spans (access_log, the upstream client), dashboards and alert rules
(dashboards/) are all built from these."""

from __future__ import annotations

# -- metric names (OpenTelemetry name → Prometheus name in the comment) -----------------
SERVER_DURATION = "http.server.request.duration"  # http_server_request_duration_seconds
CLIENT_DURATION = "http.client.request.duration"  # http_client_request_duration_seconds
RETRIES = "pmc_gateway_retries"  # pmc_gateway_retries_total
RETRY_BUDGET_EXHAUSTED = "pmc_gateway_retry_budget_exhausted"  # ..._total
BREAKER_STATE = "pmc_gateway_breaker_state"  # 0 closed, 1 half-open, 2 open
BUDGET_WAIT = "pmc_gateway_budget_wait"  # pmc_gateway_budget_wait_seconds
BUDGET_REJECTED = "pmc_gateway_budget_rejected"  # pmc_gateway_budget_rejected_total
UPSTREAM_THROTTLED = "pmc_gateway_upstream_throttled"  # pmc_gateway_upstream_throttled_total
IDEMPOTENT_REPLAYS = "pmc_gateway_idempotent_replays"  # pmc_gateway_idempotent_replays_total
WEBHOOK_REJECTED = "pmc_gateway_webhook_rejected"  # pmc_gateway_webhook_rejected_total
WEBHOOK_BACKLOG = "pmc_gateway_webhook_delivery_backlog"  # gauge
STORE_UP = "pmc_gateway_store_up"  # gauge: 1 reachable, 0 falling back to local
API_KEY_AGE = "pmc_gateway_api_key_age_days"  # gauge per environment
BUDGET_USED = "pmc_gateway_budget_used_ratio"  # gauge per environment: admissions in 60 s / limit
JOBS = "pmc_gateway_jobs"  # pmc_gateway_jobs_total{outcome}: how followed jobs ended
JOB_DURATION = "pmc_gateway_job_duration"  # pmc_gateway_job_duration_seconds: 202 to final, when followed
JOB_POLLS = "pmc_gateway_job_polls"  # pmc_gateway_job_polls_total{source}: upstream, shared, cache
ADDED_LATENCY = "pmc_gateway_added_latency"  # pmc_gateway_added_latency_seconds: what the gateway itself took
READS = "pmc_gateway_reads"  # pmc_gateway_reads_total{http_route, result}: how shared reads were answered
READ_INVALIDATIONS = "pmc_gateway_read_invalidations"  # pmc_gateway_read_invalidations_total{source}
HEDGES = "pmc_gateway_hedges"  # pmc_gateway_hedges_total{http_route, outcome}: won, lost, skipped

class Exposition:
    """The Prometheus names of the instruments above (OpenTelemetry name, unit suffix, ``_total``
    for counters): what dashboards/ and the alert rules are built from, never typed again there."""

    SERVER_DURATION = "http_server_request_duration_seconds"
    CLIENT_DURATION = "http_client_request_duration_seconds"
    RETRIES = "pmc_gateway_retries_total"
    RETRY_BUDGET_EXHAUSTED = "pmc_gateway_retry_budget_exhausted_total"
    BREAKER_STATE = "pmc_gateway_breaker_state"
    BUDGET_WAIT = "pmc_gateway_budget_wait_seconds"
    BUDGET_REJECTED = "pmc_gateway_budget_rejected_total"
    UPSTREAM_THROTTLED = "pmc_gateway_upstream_throttled_total"
    IDEMPOTENT_REPLAYS = "pmc_gateway_idempotent_replays_total"
    WEBHOOK_REJECTED = "pmc_gateway_webhook_rejected_total"
    WEBHOOK_BACKLOG = "pmc_gateway_webhook_delivery_backlog"
    STORE_UP = "pmc_gateway_store_up"
    API_KEY_AGE = "pmc_gateway_api_key_age_days"
    BUDGET_USED = "pmc_gateway_budget_used_ratio"
    ADDED_LATENCY = "pmc_gateway_added_latency_seconds"
    JOBS = "pmc_gateway_jobs_total"
    JOB_DURATION = "pmc_gateway_job_duration_seconds"
    JOB_POLLS = "pmc_gateway_job_polls_total"
    READS = "pmc_gateway_reads_total"
    READ_INVALIDATIONS = "pmc_gateway_read_invalidations_total"
    HEDGES = "pmc_gateway_hedges_total"


# The SPEC §8 families a scrape must show (tests/integration/test_telemetry.py checks each).
PROMETHEUS_NAMES = tuple(
    value for name, value in vars(Exposition).items() if not name.startswith("_") and name not in ("RETRY_BUDGET_EXHAUSTED", "STORE_UP", "API_KEY_AGE")
)

# -- attribute names -------------------------------------------------------------------
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"
HTTP_RESEND_COUNT = "http.request.resend_count"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
ERROR_TYPE = "error.type"
PMC_REQUEST_ID = "pmc.request_id"
PMC_CLIENT = "pmc.client"
PMC_ENVIRONMENT = "pmc.environment"
PMC_ATTEMPTS = "pmc.attempts"
PMC_UPSTREAM_REQUEST_ID = "pmc.upstream_request_id"
REASON = "reason"  # SPEC §7: pmc_gateway_webhook_rejected_total{reason}
PMC_BREAKER = "pmc.breaker"
PMC_HEDGE = "pmc.hedge"  # on the CLIENT span of a hedged attempt
PMC_SOURCE = "pmc.source"  # who made the answer: "gateway" (its own envelope) or "upstream" (passed through)
BUDGET_LIMIT = "limit"  # SPEC §8: pmc_gateway_budget_rejected_total{limit}: key, client, share
BUDGET_LIMITS = ("key", "client", "share")
OUTCOME = "outcome"
JOB_OUTCOMES = ("completed", "failed", "not_final")
SOURCE = "source"
JOB_POLL_SOURCES = ("upstream", "shared", "cache")
RESULT = "result"
READ_RESULTS = ("hit", "stale", "collapsed", "miss", "bypass")
INVALIDATION_SOURCES = ("write", "webhook", "job", "purge")
HEDGE_OUTCOMES = ("won", "lost", "skipped")

# Attribute order of the duration histograms (a missing value leaves its attribute out).
SERVER_DURATION_ATTRIBUTES = (HTTP_METHOD, HTTP_ROUTE, HTTP_STATUS, PMC_CLIENT, PMC_ENVIRONMENT, PMC_SOURCE)
ADDED_LATENCY_ATTRIBUTES = (HTTP_ROUTE, PMC_ENVIRONMENT)
CLIENT_DURATION_ATTRIBUTES = (HTTP_METHOD, HTTP_ROUTE, PMC_ENVIRONMENT, HTTP_STATUS, ERROR_TYPE)
BUDGET_WAIT_ATTRIBUTES = (PMC_ENVIRONMENT, PMC_CLIENT)
