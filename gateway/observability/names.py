"""Every span attribute and metric label name (SPEC §8), and the closed sets of values some
labels take, declared once. The instruments themselves are declared in instruments.py."""

from __future__ import annotations

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
