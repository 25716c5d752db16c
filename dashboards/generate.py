"""Builds the Grafana dashboards from code: ``python -m dashboards.generate`` (or ``make dashboards``).

Uses grafana-foundation-sdk (pinned to 0.0.21: an unpinned install resolves to an
epoch-prefixed build for Grafana 10.1). Metric names come from the declarations in ``gateway.observability.instruments`` (none is typed here);
tests/integration/test_dashboards.py checks every query against a real scrape of a running gateway.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, text, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import DataSourceRef
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    GridPos,
    Threshold,
    ThresholdsMode,
)

from dashboards import slo
from gateway.observability import instruments as M

HERE = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PROXIED = slo.PROXIED
SLOS = slo.Slos()
TARGET_S = SLOS.average_s

SERVER = M.SERVER_DURATION.exposition
CLIENT = M.CLIENT_DURATION.exposition
BUDGET_WAIT = M.BUDGET_WAIT.exposition
READS = M.READS.exposition
READ_INVALIDATIONS = M.READ_INVALIDATIONS.exposition


def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    return q


def pos(x: int, y: int, w: int, h: int) -> GridPos:
    return GridPos(x=x, y=y, w=w, h=h)


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(value=v, color=c) for v, c in steps])


def stat_panel(title: str, expr: str, unit: str, grid: GridPos, steps: tuple[tuple[float | None, str], ...], decimals: int = 3) -> stat.Panel:
    return (
        stat.Panel().title(title).datasource(DATASOURCE).unit(unit).decimals(decimals).grid_pos(grid)
        .with_target(query(expr, instant=True)).thresholds(thresholds(*steps))
    )


def series(title: str, grid: GridPos, unit: str, *targets: prometheus.Dataquery, description: str = "", steps: tuple[tuple[float | None, str], ...] | None = None) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).datasource(DATASOURCE).unit(unit).grid_pos(grid)
    if description:
        panel = panel.description(description)
    for target in targets:
        panel = panel.with_target(target)
    if steps is not None:
        from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
        from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode

        panel = panel.thresholds(thresholds(*steps)).thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
    return panel


def datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def quantile_where_seen(q: float, metric: str, by: str) -> str:
    """A quantile per ``by`` only where that series saw observations: a series with none is a
    gap, not NaN."""
    seen = f"(sum by ({by}) (rate({metric}_count[$__rate_interval])) > 0)"
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[$__rate_interval])) and on ({by}) {seen})"


def quantile(q: float, metric: str = SERVER, selector: str = PROXIED) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))"


def base(title: str, uid: str, tag: str, description: str, since: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(f"pmc-gateway · {title}")
        .uid(uid)
        .tags(["pmc-gateway", tag, "generated"])
        .description(description)
        .refresh("30s")
        .time(since, "now")
        .timezone("browser")
        .with_variable(datasource_variable())
    )


def slo_overview() -> dashboard.Dashboard:
    d = (
        base("SLO overview", "pmc-gateway-slo", "slo", "Availability against 99.95 %, latency against 180 ms, and what the gateway does about them.", "now-6h")
        .link(dashboard.DashboardLink("Incident triage").type(DashboardLinkType.DASHBOARDS).tags(["pmc-gateway"]).keep_time(True))
    )
    d = d.with_row(dashboard.Row("Targets"))
    availability, added, tail = slo.slis(SLOS)
    d = d.with_panel(stat_panel(
        "Availability (30 d)", f"1 - ({slo.ratio(availability.bad, availability.total, '30d')})", "percentunit", pos(0, 1, 4, 4),
        ((None, "red"), (SLOS.availability, "green")), decimals=4,
    ))
    d = d.with_panel(stat_panel(
        "Error budget left (30 d)", f"clamp_min(1 - ({availability.record('30d')}) / {availability.budget:g}, 0)", "percentunit", pos(4, 1, 4, 4),
        ((None, "red"), (0.25, "orange"), (0.5, "green")), decimals=1,
    ))
    d = d.with_panel(stat_panel(
        f"Average latency (5 m) against {SLOS.average_s * 1000:g} ms", "pmc_gateway:latency_avg_seconds:rate5m", "s", pos(8, 1, 4, 4),
        ((None, "green"), (SLOS.average_s, "red")),
    ))
    d = d.with_panel(stat_panel(
        f"Gateway-added latency under {SLOS.added_s * 1000:g} ms (1 h)", f"1 - ({added.record('1h')})",
        "percentunit", pos(12, 1, 4, 4), ((None, "red"), (SLOS.added_objective, "green")), decimals=3,
    ))
    d = d.with_panel(stat_panel(
        f"Requests under {SLOS.tail_s * 1000:g} ms (1 h)", f"1 - ({tail.record('1h')})",
        "percentunit", pos(16, 1, 4, 4), ((None, "red"), (SLOS.tail_objective, "green")), decimals=3,
    ))
    d = d.with_panel(stat_panel(
        "Open breakers", f"count(max by (pmc_environment, http_route) ({M.BREAKER_STATE.exposition}) == 2) or vector(0)",
        "none", pos(20, 1, 4, 4), ((None, "green"), (1, "red")), decimals=0,
    ))
    burn_steps = ((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red"))
    for x, sli, note in (
        (0, availability, "Pages at 14.4 (1 h and 5 m) and 6 (6 h and 30 m); a ticket at 1 (3 d and 6 h)."),
        (8, added, "What the gateway itself adds. Pages like availability: this part is the gateway team's."),
        (16, tail, "End-to-end, PinmyCal's latency included: tickets, never pages."),
    ):
        d = d.with_panel(series(
            f"{sli.alert} burn rate (× budget)", pos(x, 5, 8, 8), "none",
            *(query(f"{sli.record(w)} / {sli.budget:g}", f"{w}", ref) for ref, w in zip("ABCDE", slo.WINDOWS[:5], strict=True)),
            description=note, steps=burn_steps,
        ))
    d = d.with_row(dashboard.Row("Latency"))
    d = d.with_panel(series(
        f"Latency avg / p50 / p95 / p99 against {TARGET_S * 1000:g} ms (an average target)", pos(0, 14, 12, 8), "s",
        query(f"sum(rate({SERVER}_sum{{{PROXIED}}}[$__rate_interval])) / (sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval])) > 0)", "avg", "A"),
        query(quantile(0.5), "p50", "B"), query(quantile(0.95), "p95", "C"), query(quantile(0.99), "p99", "D"),
        steps=((None, "green"), (TARGET_S, "red")),
    ))
    d = d.with_panel(series(
        "Upstream vs gateway-added latency (avg per request)", pos(12, 14, 12, 8), "s",
        query(f"sum(rate({CLIENT}_sum[$__rate_interval])) / (sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval])) > 0)", "upstream (all attempts)", "A"),
        query(f"sum(rate({M.BUDGET_WAIT.exposition}_sum[$__rate_interval])) / "
              f"(sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval])) > 0)", "rate-budget wait", "B"),
        query(f"sum(rate({slo.ADDED}_sum[$__rate_interval])) / (sum(rate({slo.ADDED}_count[$__rate_interval])) > 0)", "gateway itself (added)", "C"),
    ))
    d = d.with_row(dashboard.Row("Traffic"))
    d = d.with_panel(series("Requests by client", pos(0, 23, 8, 8), "reqps",
                            query(f"sum by (pmc_client) (rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "{{pmc_client}}")))
    d = d.with_panel(series("Requests by route", pos(8, 23, 8, 8), "reqps",
                            query(f"sum by (http_route) (rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "{{http_route}}")))
    d = d.with_panel(series("Requests by status", pos(16, 23, 8, 8), "reqps",
                            query(f"sum by (http_response_status_code) (rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "{{http_response_status_code}}")))
    d = d.with_row(dashboard.Row("Reliability"))
    d = d.with_panel(series(
        "Retries by reason, and retries the budget refused", pos(0, 32, 8, 8), "ops",
        query(f"sum by (reason) (rate({M.RETRIES.exposition}[$__rate_interval]))", "{{reason}}", "A"),
        query(f"sum(rate({M.RETRY_BUDGET_EXHAUSTED.exposition}[$__rate_interval]))", "refused by retry budget", "B"),
    ))
    d = d.with_panel(series(
        "Breaker state (0 closed, 1 half-open, 2 open)", pos(8, 32, 8, 8), "none",
        query(f"max by (pmc_environment, http_route) ({M.BREAKER_STATE.exposition})", "{{pmc_environment}} {{http_route}}"),
        steps=((None, "green"), (1, "orange"), (2, "red")),
    ))
    d = d.with_panel(series(
        "Rate budget: waits, refusals, upstream 429s", pos(16, 32, 8, 8), "ops",
        query(f"sum by (pmc_client) (rate({M.BUDGET_REJECTED.exposition}[$__rate_interval]))", "429 by gateway: {{pmc_client}}", "A"),
        query(f"sum by (pmc_environment) (rate({M.UPSTREAM_THROTTLED.exposition}[$__rate_interval]))", "429 by upstream: {{pmc_environment}}", "B"),
        query(f"sum(rate({M.IDEMPOTENT_REPLAYS.exposition}[$__rate_interval]))", "idempotent replays", "C"),
    ))
    d = d.with_panel(series(
        "Rate-budget wait p95", pos(0, 40, 8, 8), "s",
        query(quantile_where_seen(0.95, BUDGET_WAIT, "pmc_environment"), "{{pmc_environment}}"),
    ))
    d = d.with_panel(series(
        "Webhook rejections by reason", pos(8, 40, 8, 8), "ops",
        query(f"sum by (reason) (rate({M.WEBHOOK_REJECTED.exposition}[$__rate_interval]))", "rejected/s: {{reason}}", "A"),
    ))
    d = d.with_panel(series(
        "Webhook delivery backlog", pos(16, 40, 4, 8), "none",
        query(f"max({M.WEBHOOK_BACKLOG.exposition})", "backlog", "A"),
    ))
    d = d.with_panel(series(
        "Store reachable (1) or not (0)", pos(20, 40, 4, 4), "none",
        query(f"min({M.STORE_UP.exposition})", "store up", "A"),
    ))
    d = d.with_panel(series(
        "API key age", pos(20, 44, 4, 4), "d",
        query(f"max by (pmc_environment) ({M.API_KEY_AGE.exposition})", "{{pmc_environment}}", "A"),
    ))
    d = d.with_row(dashboard.Row("Async jobs"))
    d = d.with_panel(series(
        "Followed jobs by outcome (Prefer: wait)", pos(0, 58, 8, 8), "ops",
        query(f"sum by (outcome) (rate({M.JOBS.exposition}[$__rate_interval]))", "{{outcome}}"),
    ))
    d = d.with_panel(series(
        "Job polls: upstream, and saved (shared, cache)", pos(8, 58, 8, 8), "ops",
        query(f"sum by (source) (rate({M.JOB_POLLS.exposition}[$__rate_interval]))", "{{source}}"),
        description="Every upstream poll spends a rate-budget slot; shared and cache answers spend none.",
    ))
    followed = f"sum(rate({M.JOB_DURATION.exposition}_count[$__rate_interval]))"
    d = d.with_panel(series(
        "Followed job duration p50 / p95", pos(16, 58, 8, 8), "s",
        # with no job followed in the window the quantile is NaN: read 0 (no job waited) instead
        query(f"(histogram_quantile(0.5, sum by (le) (rate({M.JOB_DURATION.exposition}_bucket[$__rate_interval]))) and on() ({followed} > 0)) or vector(0)", "p50", "A"),
        query(f"(histogram_quantile(0.95, sum by (le) (rate({M.JOB_DURATION.exposition}_bucket[$__rate_interval]))) and on() ({followed} > 0)) or vector(0)", "p95", "B"),
    ))
    d = d.with_row(dashboard.Row("Shared reads"))
    saved = 'result=~"hit|stale|collapsed"'
    d = d.with_panel(series(
        "Shared-read hit ratio (hit, stale, joined) by route", pos(0, 66, 6, 8), "percentunit",
        query(f"sum by (http_route) (rate({READS}{{{saved}}}[$__rate_interval])) / clamp_min(sum by (http_route) (rate({READS}[$__rate_interval])), 1e-9)", "{{http_route}}"),
        description="Answers that took no upstream call and no rate-budget slot, over all answers on shared-read routes.",
    ))
    d = d.with_panel(series(
        "Upstream calls saved per minute, beside those made", pos(6, 66, 6, 8), "none",
        query(f"sum(rate({READS}{{{saved}}}[$__rate_interval])) * 60", "saved per minute", "A"),
        query(f"sum(rate({CLIENT}_count[$__rate_interval])) * 60", "upstream attempts per minute", "B"),
        description="Compare with the key's rate_limit_per_minute (120 by default): saved calls are reads served beyond it.",
    ))
    d = d.with_panel(series(
        "Stale answers served (instead of a failure, or while refreshing)", pos(12, 66, 6, 8), "ops",
        query(f'sum by (http_route) (rate({READS}{{result="stale"}}[$__rate_interval]))', "{{http_route}}"),
    ))
    d = d.with_panel(series(
        "Invalidations by source", pos(18, 66, 6, 8), "ops",
        query(f"sum by (source) (rate({READ_INVALIDATIONS}[$__rate_interval]))", "{{source}}"),
        description="write: a booking through the gateway; webhook: a booking.* event; job: a job learnt completed; purge: by hand.",
    ))
    d = d.with_panel(series(
        "Hedged reads by outcome (won: the hedge answered first)", pos(0, 74, 12, 8), "ops",
        query(f"sum by (http_route, outcome) (rate({M.HEDGES.exposition}[$__rate_interval]))", "{{http_route}} {{outcome}}"),
        description="skipped: a hedge was due but the key's budget share, the retry budget or the breaker had no room.",
    ))
    d = d.with_row(dashboard.Row("Rate budget"))
    d = d.with_panel(series(
        "Key usage against its limit (admissions in the last 60 s)", pos(0, 49, 8, 8), "percentunit",
        query(f"max by (pmc_environment) ({M.BUDGET_USED.exposition})", "{{pmc_environment}}"),
        description="1.0 is the key's whole per-minute limit. Every replica reports the key's shared figure, so max() is the key.",
        steps=((None, "green"), (0.9, "orange"), (1, "red")),
    ))
    d = d.with_panel(series(
        "Per client: admitted, waited for a slot, refused", pos(8, 49, 8, 8), "ops",
        query(f"sum by (pmc_client) (rate({BUDGET_WAIT}_count[$__rate_interval]))", "admitted: {{pmc_client}}", "A"),
        query(f"sum by (pmc_client) (rate({BUDGET_WAIT}_count[$__rate_interval])) - "
              f'sum by (pmc_client) (rate({BUDGET_WAIT}_bucket{{le="0.0"}}[$__rate_interval]))', "waited: {{pmc_client}}", "B"),
        query(f"sum by (pmc_client, limit) (rate({M.BUDGET_REJECTED.exposition}[$__rate_interval]))", "refused ({{limit}}): {{pmc_client}}", "C"),
    ))
    d = d.with_panel(series(
        "Budget wait p95 by client (waits only show above zero)", pos(16, 49, 8, 8), "s",
        query(quantile_where_seen(0.95, BUDGET_WAIT, "pmc_client"), "{{pmc_client}}"),
    ))
    return d


def incident_triage() -> dashboard.Dashboard:
    d = (
        base("Incident triage", "pmc-gateway-triage", "triage", "From a requestId in a complaint to what happened to it.", "now-1h")
        .with_variable(dashboard.TextBoxVariable("requestId").label("requestId"))
        .with_variable(dashboard.TextBoxVariable("traceId").label("traceId"))
        .with_variable(dashboard.TextBoxVariable("gateway").label("gateway base URL").default_value("http://pmc-gateway:8080"))
        .with_variable(
            dashboard.QueryVariable("client").label("client").datasource(DATASOURCE)
            .query(f"label_values({SERVER}_count, pmc_client)").include_all(True).multi(True)
        )
        .link(dashboard.DashboardLink("SLO overview").type(DashboardLinkType.DASHBOARDS).tags(["pmc-gateway"]).keep_time(True))
        .link(dashboard.DashboardLink("Trace ${traceId}").type(DashboardLinkType.LINK).url("/explore?left=%7B%22queries%22:%5B%7B%22query%22:%22${traceId}%22%7D%5D%7D").target_blank(True))
        .link(dashboard.DashboardLink("Triage record ${requestId}").type(DashboardLinkType.LINK).url("${gateway}/_gateway/requests/${requestId}").target_blank(True))
    )
    d = d.with_panel(
        text.Panel().title("The request's path through the gateway").grid_pos(pos(0, 0, 24, 7)).content(
            "**requestId `${requestId}`** · traceId `${traceId}`\n\n"
            "Each request passes: request id → access log + SERVER span → error envelope → path safety → "
            "caller auth → idempotency → retry → breaker → rate budget → credentials → upstream (one CLIENT span per attempt).\n\n"
            "1. Its triage record — attempts with status, latency and the wait before each, budget wait, breaker state, "
            "upstream requestId and jobId: `pmc-gateway triage ${requestId} --url ${gateway}` or the *Triage record* link above "
            "(admin token required).\n"
            "2. Its trace: the *Trace* link above opens `${traceId}` in Explore (spans carry `pmc.request_id`).\n"
            "3. The access log line: search your logs for `\"requestId\":\"${requestId}\"`.\n"
            "4. The upstream's own requestId (in the record) is what PinmyCal support asks for."
        )
    )
    by_client = f'{PROXIED},pmc_client=~"${{client:regex}}"'
    d = d.with_panel(
        table.Panel().title("Recent errors by client and route (15 m)").datasource(DATASOURCE).grid_pos(pos(0, 7, 12, 9))
        .with_target(query(
            f'sort_desc(sum by (pmc_client, pmc_environment, http_route, http_response_status_code) '
            f'(increase({SERVER}_count{{{by_client},http_response_status_code=~"4..|5.."}}[15m])) > 0)',
            instant=True,
        ))
    )
    d = d.with_panel(series(
        "Error rate by route", pos(12, 7, 12, 9), "percentunit",
        query(f'(sum by (http_route) (rate({SERVER}_count{{{by_client},http_response_status_code=~"5.."}}[$__rate_interval])) '
              f"or 0 * sum by (http_route) (rate({SERVER}_count{{{by_client}}}[$__rate_interval]))) "
              f"/ (sum by (http_route) (rate({SERVER}_count{{{by_client}}}[$__rate_interval])) > 0)", "{{http_route}}"),
        description="A route with traffic and no 5xx reads 0, not nothing.",
    ))
    d = d.with_panel(series(
        "Upstream attempts by status and error", pos(0, 16, 12, 8), "ops",
        query(f"sum by (http_response_status_code, error_type) (rate({CLIENT}_count[$__rate_interval]))", "{{http_response_status_code}} {{error_type}}"),
    ))
    d = d.with_panel(series(
        "Retries, and calls an open circuit refused", pos(12, 16, 6, 8), "ops",
        query(f"sum by (http_route, reason) (rate({M.RETRIES.exposition}[$__rate_interval]))", "{{http_route}} {{reason}}", "A"),
        query(f"sum by (http_route) (rate({M.BREAKER_REFUSED.exposition}[$__rate_interval]))", "circuit open: {{http_route}}", "B"),
    ))
    d = d.with_panel(series(
        "Breakers (0 closed, 1 half-open, 2 open)", pos(18, 16, 6, 8), "none",
        query(f"max by (pmc_environment, http_route) ({M.BREAKER_STATE.exposition})", "{{pmc_environment}} {{http_route}}", "A"),
    ))
    d = d.with_panel(series(
        "Gateway refusals by client (answers the gateway made, not passed through)", pos(0, 24, 16, 8), "ops",
        # or vector(0): healthy traffic has no refusal, and the panel reads 0, not "no data"
        query(f'sum by (pmc_client, http_response_status_code) (rate({SERVER}_count{{{by_client},pmc_source="gateway"}}[$__rate_interval])) or vector(0)',
              "{{pmc_client}} {{http_response_status_code}}", "A"),
        query(f'sum by (pmc_client, limit) (rate({M.BUDGET_REJECTED.exposition}{{pmc_client=~"${{client:regex}}"}}[$__rate_interval]))', "budget refused ({{limit}}): {{pmc_client}}", "B"),
    ))
    d = d.with_panel(series(
        "Callers locked out (401 unknown token, 403 by client)", pos(16, 24, 8, 8), "ops",
        query(f'sum by (pmc_client, http_response_status_code) (rate({SERVER}_count{{http_response_status_code=~"401|403",pmc_source="gateway",http_route=~"/v1/.*"}}[$__rate_interval])) or vector(0)',
              "{{pmc_client}} {{http_response_status_code}}", "A"),
    ))
    return d


DASHBOARDS = {"slo-overview.json": slo_overview, "incident-triage.json": incident_triage}


def render() -> dict[str, str]:
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {name: encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


RULES = HERE.parent / "config" / "prometheus" / "rules.yml"


def main(argv: list[str] | None = None) -> int:
    """Dashboards and the default rules; ``--config PATH`` writes rules for that config's figures
    to stdout (the dashboards read the recorded series, so they serve any figures)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--config"] and len(args) == 2:
        from gateway.settings import load

        print(slo.rules_yaml(slo.Slos.of(load(args[1]).telemetry)), end="")
        return 0
    for name, content in render().items():
        (HERE / name).write_text(content)
        print(f"wrote dashboards/{name}")
    RULES.write_text(slo.rules_yaml(SLOS))
    print(f"wrote {RULES.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
