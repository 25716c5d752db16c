"""Builds the Grafana dashboards from code: ``python -m dashboards.generate`` (or ``make dashboards``).

Uses grafana-foundation-sdk (pinned to 0.0.21: an unpinned install resolves to an
epoch-prefixed build for Grafana 10.1). Metric names come from ``gateway.telemetry``;
tests/test_dashboards.py checks every query against a real scrape of a running gateway.
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

HERE = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PROXIED = 'pmc_client!=""'
BUDGET = 0.0005  # 1 - 0.9995
TARGET_S = 0.18

SERVER = "http_server_request_duration_seconds"
CLIENT = "http_client_request_duration_seconds"


BUDGET_WAIT = "pmc_gateway_budget_wait_seconds"


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


def error_ratio(window: str) -> str:
    return (
        f'sum(rate({SERVER}_count{{{PROXIED},http_response_status_code=~"5.."}}[{window}]))'
        f" / sum(rate({SERVER}_count{{{PROXIED}}}[{window}]))"
    )


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
    d = d.with_panel(stat_panel(
        "Availability (30 d)", f"1 - ({error_ratio('30d')})", "percentunit", pos(0, 1, 4, 4),
        ((None, "red"), (0.9995, "green")), decimals=4,
    ))
    d = d.with_panel(stat_panel(
        "Error budget left (30 d)", f"1 - ({error_ratio('30d')}) / {BUDGET}", "percentunit", pos(4, 1, 4, 4),
        ((None, "red"), (0.25, "orange"), (0.5, "green")), decimals=1,
    ))
    d = d.with_panel(stat_panel(
        "Average latency (5 m)", "pmc_gateway:latency_avg_seconds:rate5m", "s", pos(8, 1, 4, 4),
        ((None, "green"), (TARGET_S, "red")),
    ))
    d = d.with_panel(stat_panel(
        "Requests under 180 ms (5 m)",
        f'sum(rate({SERVER}_bucket{{{PROXIED},le="0.18"}}[5m])) / sum(rate({SERVER}_count{{{PROXIED}}}[5m]))',
        "percentunit", pos(12, 1, 4, 4), ((None, "red"), (0.9995, "green")), decimals=2,
    ))
    d = d.with_panel(stat_panel(
        "Request rate", f"sum(rate({SERVER}_count{{{PROXIED}}}[5m]))", "reqps", pos(16, 1, 4, 4), ((None, "blue"),), decimals=2,
    ))
    d = d.with_panel(stat_panel(
        "Open breakers", "count(max by (pmc_environment, http_route) (pmc_gateway_breaker_state) == 2) or vector(0)",
        "none", pos(20, 1, 4, 4), ((None, "green"), (1, "red")), decimals=0,
    ))
    d = d.with_panel(series(
        "Availability burn rate (× budget)", pos(0, 5, 12, 8), "none",
        *(query(f"pmc_gateway:availability_errors:ratio_rate{w} / {BUDGET}", f"{w}", ref) for ref, w in zip("ABCDE", ("5m", "30m", "1h", "6h", "3d"), strict=True)),
        description="Pages at 14.4 (1 h and 5 m), 6 (6 h and 30 m); a ticket at 1 (3 d and 6 h).",
        steps=((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red")),
    ))
    d = d.with_panel(series(
        "Latency burn rate (× budget; slower than 180 ms)", pos(12, 5, 12, 8), "none",
        *(query(f"pmc_gateway:latency_slow:ratio_rate{w} / {BUDGET}", f"{w}", ref) for ref, w in zip("ABCDE", ("5m", "30m", "1h", "6h", "3d"), strict=True)),
        steps=((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red")),
    ))
    d = d.with_row(dashboard.Row("Latency"))
    d = d.with_panel(series(
        "Latency avg / p50 / p95 / p99 against 180 ms", pos(0, 14, 12, 8), "s",
        query(f"sum(rate({SERVER}_sum{{{PROXIED}}}[$__rate_interval])) / sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "avg", "A"),
        query(quantile(0.5), "p50", "B"), query(quantile(0.95), "p95", "C"), query(quantile(0.99), "p99", "D"),
        steps=((None, "green"), (TARGET_S, "red")),
    ))
    d = d.with_panel(series(
        "Upstream vs gateway-added latency (avg per request)", pos(12, 14, 12, 8), "s",
        query(f"sum(rate({CLIENT}_sum[$__rate_interval])) / sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "upstream (all attempts)", "A"),
        query("sum(rate(pmc_gateway_budget_wait_seconds_sum[$__rate_interval])) / "
              f"sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "rate-budget wait", "B"),
        query(f"(sum(rate({SERVER}_sum{{{PROXIED}}}[$__rate_interval])) - sum(rate({CLIENT}_sum[$__rate_interval])) "
              "- sum(rate(pmc_gateway_budget_wait_seconds_sum[$__rate_interval]))) "
              f"/ sum(rate({SERVER}_count{{{PROXIED}}}[$__rate_interval]))", "gateway + backoff", "C"),
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
        query("sum by (reason) (rate(pmc_gateway_retries_total[$__rate_interval]))", "{{reason}}", "A"),
        query("sum(rate(pmc_gateway_retry_budget_exhausted_total[$__rate_interval]))", "refused by retry budget", "B"),
    ))
    d = d.with_panel(series(
        "Breaker state (0 closed, 1 half-open, 2 open)", pos(8, 32, 8, 8), "none",
        query("max by (pmc_environment, http_route) (pmc_gateway_breaker_state)", "{{pmc_environment}} {{http_route}}"),
        steps=((None, "green"), (1, "orange"), (2, "red")),
    ))
    d = d.with_panel(series(
        "Rate budget: waits, refusals, upstream 429s", pos(16, 32, 8, 8), "ops",
        query("sum by (pmc_client) (rate(pmc_gateway_budget_rejected_total[$__rate_interval]))", "429 by gateway: {{pmc_client}}", "A"),
        query("sum by (pmc_environment) (rate(pmc_gateway_upstream_throttled_total[$__rate_interval]))", "429 by upstream: {{pmc_environment}}", "B"),
        query("sum(rate(pmc_gateway_idempotent_replays_total[$__rate_interval]))", "idempotent replays", "C"),
    ))
    d = d.with_panel(series(
        "Rate-budget wait p95", pos(0, 40, 8, 8), "s",
        query("histogram_quantile(0.95, sum by (le, pmc_environment) (rate(pmc_gateway_budget_wait_seconds_bucket[$__rate_interval])))", "{{pmc_environment}}"),
    ))
    d = d.with_panel(series(
        "Webhooks: rejections by reason and delivery backlog", pos(8, 40, 8, 8), "none",
        query("sum by (reason) (increase(pmc_gateway_webhook_rejected_total[$__rate_interval]))", "rejected: {{reason}}", "A"),
        query("max(pmc_gateway_webhook_delivery_backlog)", "backlog", "B"),
    ))
    d = d.with_panel(series(
        "Store reachable and API key age", pos(16, 40, 8, 8), "none",
        query("min(pmc_gateway_store_up)", "store up (1)", "A"),
        query("max by (pmc_environment) (pmc_gateway_api_key_age_days)", "key age, days: {{pmc_environment}}", "B"),
    ))
    d = d.with_row(dashboard.Row("Rate budget"))
    d = d.with_panel(series(
        "Key usage against its limit (admissions in the last 60 s)", pos(0, 49, 8, 8), "percentunit",
        query("max by (pmc_environment) (pmc_gateway_budget_used_ratio)", "{{pmc_environment}}"),
        description="1.0 is the key's whole per-minute limit. Every replica reports the key's shared figure, so max() is the key.",
        steps=((None, "green"), (0.9, "orange"), (1, "red")),
    ))
    d = d.with_panel(series(
        "Per client: admitted, waited for a slot, refused", pos(8, 49, 8, 8), "ops",
        query(f"sum by (pmc_client) (rate({BUDGET_WAIT}_count[$__rate_interval]))", "admitted: {{pmc_client}}", "A"),
        query(f"sum by (pmc_client) (rate({BUDGET_WAIT}_count[$__rate_interval])) - "
              f'sum by (pmc_client) (rate({BUDGET_WAIT}_bucket{{le="0.0"}}[$__rate_interval]))', "waited: {{pmc_client}}", "B"),
        query("sum by (pmc_client, limit) (rate(pmc_gateway_budget_rejected_total[$__rate_interval]))", "refused ({{limit}}): {{pmc_client}}", "C"),
    ))
    d = d.with_panel(series(
        "Budget wait p95 by client (waits only show above zero)", pos(16, 49, 8, 8), "s",
        query(f"histogram_quantile(0.95, sum by (le, pmc_client) (rate({BUDGET_WAIT}_bucket[$__rate_interval])))", "{{pmc_client}}"),
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
        query(f'sum by (http_route) (rate({SERVER}_count{{{by_client},http_response_status_code=~"5.."}}[$__rate_interval])) '
              f"/ sum by (http_route) (rate({SERVER}_count{{{by_client}}}[$__rate_interval]))", "{{http_route}}"),
    ))
    d = d.with_panel(series(
        "Upstream attempts by status and error", pos(0, 16, 12, 8), "ops",
        query(f"sum by (http_response_status_code, error_type) (rate({CLIENT}_count[$__rate_interval]))", "{{http_response_status_code}} {{error_type}}"),
    ))
    d = d.with_panel(series(
        "Retries and breakers", pos(12, 16, 12, 8), "none",
        query("sum by (http_route, reason) (rate(pmc_gateway_retries_total[$__rate_interval]))", "retry {{http_route}} {{reason}}", "A"),
        query("max by (pmc_environment, http_route) (pmc_gateway_breaker_state)", "breaker {{pmc_environment}} {{http_route}}", "B"),
    ))
    d = d.with_panel(series(
        "Gateway refusals by client", pos(0, 24, 24, 8), "ops",
        query(f'sum by (pmc_client, http_response_status_code) (rate({SERVER}_count{{{by_client},http_response_status_code=~"429|503"}}[$__rate_interval]))',
              "{{pmc_client}} {{http_response_status_code}}", "A"),
        query('sum by (pmc_client) (rate(pmc_gateway_budget_rejected_total{pmc_client=~"${client:regex}"}[$__rate_interval]))', "budget refused: {{pmc_client}}", "B"),
    ))
    return d


DASHBOARDS = {"slo-overview.json": slo_overview, "incident-triage.json": incident_triage}


def render() -> dict[str, str]:
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {name: encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    for name, content in render().items():
        (HERE / name).write_text(content)
        print(f"wrote dashboards/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
