"""The SLOs as PromQL, once: the recording rules and alerts (config/prometheus/rules.yml) and the
dashboards' SLO panels are built from these expressions, with the figures of ``[telemetry]``.

Why these SLOs (README "SLO dashboards and alerts" says it for operators):

- **Availability** (99.95 %, PinmyCal's promise): a proxied request is bad when the gateway
  answered 5xx, its own or the upstream's. Multiwindow, multi-burn-rate alerts (Google SRE
  workbook, ch. 5): 14.4x over 1 h and 5 m and 6x over 6 h and 30 m page; 1x over 3 d and 6 h
  is a ticket.
- **Gateway-added latency** (what the gateway owns): a request's time minus its upstream
  attempts, the backoff between them and the rate-budget wait, against a tight threshold.
  It pages with the same burn rates: the gateway being slow is the gateway team's to fix.
- **End-to-end latency** (what PinmyCal owns, mostly): ~180 ms is PinmyCal's *average*, so
  the average is held against it (a ticket when the hour's and the 5 minutes' average exceed
  it), and a tail threshold with its own objective burns a budget of its own, as tickets. A
  share-over-180-ms SLO at 99.95 % would page on half of healthy traffic.

Every ratio is total over "nothing happened": no bad request is 0 (not an empty vector), a
window with no traffic takes the next longer window's ratio (so an idle key neither fires nor
silently resolves an alert), and no traffic anywhere is 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from gateway.observability import instruments as M
from gateway.settings import TelemetrySettings

SERVER = f"{M.SERVER_DURATION.exposition}"
ADDED = f"{M.ADDED_LATENCY.exposition}"
PROXIED = 'pmc_client!=""'
WINDOWS = ("5m", "30m", "1h", "6h", "3d", "30d")
BURNS = (  # (burn rate, long window, short window, for, severity of a paging SLO)
    (14.4, "1h", "5m", "2m", "page"),
    (6.0, "6h", "30m", "15m", "page"),
    (1.0, "3d", "6h", "1h", "ticket"),
)
SPEEDS = {14.4: "Fast", 6.0: "Medium", 1.0: "Slow"}
RUNBOOK = (
    "Open /_gateway/dashboard → recent failures; run `pmc-gateway triage <requestId>` on one to see its "
    "attempts, breaker state, budget wait and upstream requestId, then follow its traceId."
)


@dataclass(frozen=True)
class Slos:
    availability: float = 0.9995
    average_s: float = 0.18
    tail_s: float = 1.0
    tail_objective: float = 0.99
    added_s: float = 0.05
    added_objective: float = 0.999

    @classmethod
    def of(cls, telemetry: TelemetrySettings) -> Slos:
        return cls(
            availability=telemetry.availability_target,
            average_s=telemetry.latency_target_ms / 1000,
            tail_s=telemetry.latency_tail_ms / 1000,
            tail_objective=telemetry.latency_tail_objective,
            added_s=telemetry.added_latency_target_ms / 1000,
            added_objective=telemetry.added_latency_objective,
        )


def le(seconds: float) -> str:
    """A bucket bound as the exposition writes it (``le="0.18"``, ``le="1.0"``)."""
    return str(floatToGoString(seconds))


def _rate(metric: str, selector: str, window: str) -> str:
    matchers = f"{{{selector}}}" if selector else ""
    return f"sum(rate({metric}{matchers}[{window}]))"


def total_over(window: str) -> str:
    return _rate(f"{SERVER}_count", PROXIED, window)


def unavailable_over(window: str) -> str:
    return _rate(f"{SERVER}_count", f'{PROXIED},http_response_status_code=~"5.."', window)


def slower_than(seconds: float) -> Callable[[str], str]:
    under = PROXIED + ',le="' + le(seconds) + '"'
    return lambda w: f"({total_over(w)} - {_rate(SERVER + '_bucket', under, w)})"


def added_total_over(window: str) -> str:
    return _rate(f"{ADDED}_count", "", window)


def added_slower_than(seconds: float) -> Callable[[str], str]:
    under = 'le="' + le(seconds) + '"'
    return lambda w: f"({added_total_over(w)} - {_rate(ADDED + '_bucket', under, w)})"


def ratio(bad: Callable[[str], str], total: Callable[[str], str], window: str) -> str:
    """bad / total over ``window``; where it saw no traffic, the next longer window's; else 0."""
    longer = WINDOWS[WINDOWS.index(window):]
    return " or ".join(f"(({bad(w)} or vector(0)) / ({total(w)} > 0))" for w in longer) + " or vector(0)"


def average(window: str) -> str:
    longer = WINDOWS[WINDOWS.index(window):]
    parts = [f"({_rate(SERVER + '_sum', PROXIED, w)} / ({total_over(w)} > 0))" for w in longer]
    return " or ".join(parts) + " or vector(0)"


@dataclass(frozen=True)
class Sli:
    slug: str  # the recording rules' name part
    slo: str  # the alerts' slo label
    alert: str  # the alerts' name part
    what: str  # for summaries: "availability", ...
    objective: float
    bad: Callable[[str], str]
    total: Callable[[str], str]
    pages: bool

    @property
    def budget(self) -> float:
        return round(1 - self.objective, 10)

    def record(self, window: str) -> str:
        return f"pmc_gateway:{self.slug}:ratio_rate{window}"


def slis(slos: Slos) -> tuple[Sli, ...]:
    return (
        Sli("availability_errors", "availability", "Availability", f"{slos.availability:.4%} availability", slos.availability, unavailable_over, total_over, True),
        Sli(
            "added_latency_slow", "added_latency", "AddedLatency", f"gateway-added latency under {slos.added_s * 1000:g} ms for {slos.added_objective:.2%}",
            slos.added_objective, added_slower_than(slos.added_s), added_total_over, True,
        ),
        Sli(
            "latency_tail_slow", "latency_tail", "LatencyTail", f"end-to-end latency under {slos.tail_s * 1000:g} ms for {slos.tail_objective:.2%}",
            slos.tail_objective, slower_than(slos.tail_s), total_over, False,
        ),
    )


def rules_yaml(slos: Slos) -> str:
    """config/prometheus/rules.yml for these SLOs."""
    out = [
        "# pmc-gateway: SLO recording rules and alerts, generated by `make dashboards` from dashboards/slo.py",
        "# (python -m dashboards.generate --config PATH writes them for another config's [telemetry] figures).",
        "# SLIs count proxied traffic only (pmc_client set), never probes or admin calls. Why these SLOs:",
        "# dashboards/slo.py and README \"SLO dashboards and alerts\".",
        "groups:",
        "  - name: pmc-gateway-sli",
        "    interval: 30s",
        "    rules:",
    ]
    for sli in slis(slos):
        windows = WINDOWS if sli.slug == "availability_errors" else WINDOWS[:-1]
        for window in windows:
            out += [f"      - record: {sli.record(window)}", f"        expr: {ratio(sli.bad, sli.total, window)}"]
    for window in ("5m", "1h"):
        out += [f"      - record: pmc_gateway:latency_avg_seconds:rate{window}", f"        expr: {average(window)}"]
    # The alerts share the recording rules' group, after them: a group's rules run in order, so
    # each alert reads the ratios of the same evaluation. Groups run independently (and in
    # promtool in no fixed order): an alert in a group of its own could read a ratio a whole
    # interval old, or none once that is past the 5 m lookback.
    for sli in slis(slos):
        for burn, long, short, hold, severity in BURNS:
            severity = severity if sli.pages else "ticket"
            threshold = f"({burn:g} * {sli.budget:g})"
            out += [
                f"      - alert: PmcGateway{sli.alert}Burn{SPEEDS[burn]}",
                "        expr: |",
                f"          {sli.record(long)} > {threshold}",
                f"          and {sli.record(short)} > {threshold}",
                f"        for: {hold}",
                f"        labels: {{severity: {severity}, slo: {sli.slo}}}",
                "        annotations:",
                f'          summary: "pmc-gateway is spending the error budget of {sli.what} {burn:g}x too fast ({long} and {short} windows)"',
                f'          runbook: "{RUNBOOK}"',
            ]
    out += [
        "      - alert: PmcGatewayLatencyAverageHigh",
        "        expr: |",
        f"          pmc_gateway:latency_avg_seconds:rate1h > {slos.average_s:g}",
        f"          and pmc_gateway:latency_avg_seconds:rate5m > {slos.average_s:g}",
        "        for: 30m",
        "        labels: {severity: ticket, slo: latency}",
        "        annotations:",
        f'          summary: "the average end-to-end latency has been over {slos.average_s * 1000:g} ms (PinmyCal\'s ~180 ms average) for the last hour"',
        '          runbook: "Compare upstream and gateway-added latency on the SLO dashboard; triage a slow requestId with `pmc-gateway triage <requestId>`."',
    ]
    return "\n".join(out) + "\n" + OPERATIONS


OPERATIONS = f"""
  - name: pmc-gateway-operations
    rules:
      - alert: PmcGatewayWebhookSignatureFailures
        expr: sum(increase({M.WEBHOOK_REJECTED.exposition}{{reason=~"invalid_signature|stale_timestamp"}}[10m])) > 10
        for: 5m
        labels: {{severity: page}}
        annotations:
          summary: "more than 10 webhook posts failed signature or timestamp checks in 10 minutes"
          runbook: "Each rejection is logged with requestId, source IP and reason (event webhook_rejected): triage by requestId; a rotated PinmyCal secret missing from webhooks.secret_envs looks like this, so does someone probing the endpoint."
      - alert: PmcGatewayBreakerStuckOpen
        expr: max by (pmc_environment, http_route) ({M.BREAKER_STATE.exposition}) == 2
        for: 5m
        labels: {{severity: page}}
        annotations:
          summary: "the circuit for {{{{ $labels.pmc_environment }}}} {{{{ $labels.http_route }}}} has been open for 5 minutes"
          runbook: "Callers get 503 CIRCUIT_OPEN. Triage by requestId of a recent failure (/_gateway/status recentFailures) to see the upstream answers that opened it."
      - alert: PmcGatewayStoreDown
        expr: min({M.STORE_UP.exposition}) == 0
        for: 2m
        labels: {{severity: page}}
        annotations:
          summary: "a gateway cannot reach its Redis store: budgets run on the local share, idempotency is per replica, webhooks are refused with 503"
          runbook: "Check Redis; /_gateway/ready on each replica says why. Triage affected requests by requestId."
      - alert: PmcGatewayApiKeyOld
        expr: max by (pmc_environment) ({M.API_KEY_AGE.exposition}) > 90
        for: 1h
        labels: {{severity: ticket}}
        annotations:
          summary: "the PinmyCal API key of {{{{ $labels.pmc_environment }}}} is older than 90 days"
          runbook: "Rotate it (README, rotation runbook); requests keep flowing during a reload. Triage any failures after rotation by requestId."
"""
