"""Dashboards and alert rules name only what the gateway really exports (SPEC §10)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dashboards.generate import render
from tests.support.promql import problems, references
from tests.support.servers import (
    ADMIN_TOKEN,
    OPS_TOKEN,
    ScriptedUpstream,
    Step,
    call,
    gateway,
    gateway_document,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "rules.yml"


def dashboard_queries() -> list[str]:
    exprs = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
        for variable in board["templating"]["list"]:
            query = variable.get("query")
            if isinstance(query, str) and query.startswith("label_values("):
                metric, label = (p.strip() for p in query[len("label_values(") : -1].split(","))
                exprs.append(f"sum by ({label}) ({metric})")
    return exprs


def rules() -> tuple[list[str], set[str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    return exprs, recorded


def test_committed_dashboards_are_what_the_code_generates() -> None:
    from dashboards import slo

    for name, content in render().items():
        assert (ROOT / "dashboards" / name).read_text() == content, f"run `make dashboards`: {name} is stale"
    assert RULES.read_text() == slo.rules_yaml(slo.Slos()), "run `make dashboards`: rules.yml is stale"


def test_rules_for_another_configs_figures(tmp_path: Path) -> None:
    from dashboards import slo
    from gateway.settings import TelemetrySettings

    slos = slo.Slos.of(TelemetrySettings(latency_tail_ms=2500, latency_tail_objective=0.995, added_latency_target_ms=25))
    text = slo.rules_yaml(slos)
    assert 'le="2.5"' in text and 'le="0.025"' in text and "(14.4 * 0.005)" in text
    config = tmp_path / "c.toml"
    config.write_text((ROOT / "config" / "gateway.example.toml").read_text().replace("latency_tail_ms = 1000", "latency_tail_ms = 2500"))
    out = subprocess.run([sys.executable, "-m", "dashboards.generate", "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and 'le="2.5"' in out.stdout, out.stderr


async def scrape_after_traffic(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> dict[str, set[str]]:
    document = gateway_document(
        upstream.url,
        retry={"budget_percent": 0, "min_retries_per_second": 0.1, "budget_window_s": 10, "base_delay_ms": 1, "max_delay_ms": 2},
        budget={"max_wait_ms": 100},
        reads={"routes": {"/v1/availability": {"fresh_s": 10}}},  # the shared-read panels' series
        hedging={"routes": ["/v1/availability"]},  # and the hedging panel's
    )
    document["environments"]["live"]["api_key_rotated_at"] = "2026-01-01"
    document["clients"]["ops-tools"]["requests_per_minute"] = 1
    async with gateway(document) as gw:
        upstream.then(Step(status=503), Step(status=200), Step(status=503), Step(status=429, headers={"Retry-After": "0"}))
        for path in ("/v1/users/me", "/v1/availability", "/v1/bookings/bk_1"):  # a retry, a refused retry, an upstream 429
            await call(session, "GET", f"{gw.url}{path}")
        upstream.then(Step(drop=True))
        await call(session, "POST", f"{gw.url}/v1/bookings", json={})  # a failed attempt (error.type)
        for _ in range(2):
            await call(session, "POST", f"{gw.url}/v1/bookings", json={"a": 1}, headers={"Idempotency-Key": "k"})
            await call(session, "GET", f"{gw.url}/v1/users/me", token=OPS_TOKEN)  # the second is refused by the cap
        await call(session, "POST", f"{gw.url}/webhooks/pinmycal", data=b"{}", token=None)
        _, _, body = await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN)
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    return exported


async def test_every_query_names_an_exported_metric_and_label(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    exported = await scrape_after_traffic(upstream, session)
    rule_exprs, recorded = rules()
    queries = dashboard_queries()
    assert len(queries) > 30
    found = problems(queries + rule_exprs, exported, recorded)
    assert found == [], "\n".join(found)
    used = set().union(*(references(q)[0] for q in queries + rule_exprs))
    for family in ("http_server_request_duration_seconds_bucket", "pmc_gateway_breaker_state", "pmc_gateway_webhook_delivery_backlog", "pmc_gateway_retries_total"):
        assert family in used  # the dashboards really cover the SLO and the reliability machinery

    # …and the check fails when a dashboard names something that does not exist
    broken = ['sum(rate(pmc_gateway_bookings_made_total[5m]))', 'sum by (pmc_tenant) (rate(http_server_request_duration_seconds_count[5m]))']
    found = problems(broken, exported, recorded)
    assert any("pmc_gateway_bookings_made_total" in p for p in found)
    assert any("pmc_tenant" in p for p in found)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is needed: apt-get install -y prometheus (.ci/run installs it)")
    return path


def test_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_every_alert() -> None:
    files = [RULES.with_name("rules.test.yml"), RULES.with_name("rules.long.test.yml")]
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    cases: list[dict[str, Any]] = [case for f in files for case in yaml.safe_load(f.read_text())["tests"]]
    tested = {t["alertname"] for case in cases for t in case.get("alert_rule_test", [])}
    firing = {t["alertname"] for case in cases for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts == tested and alerts == firing, "every alert needs a firing test"
    result = subprocess.run([promtool(), "test", "rules", *map(str, files)], capture_output=True, text=True, timeout=300, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_every_family_a_dashboard_or_rule_names_exists_at_start_up(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    """SPEC §8: before any traffic, a scrape has a sample of every family the shipped dashboards and
    rules name (derived from their expressions, not listed by hand), so no panel is empty and no
    alert is blind on a fresh gateway."""
    document = gateway_document(upstream.url, reads={"routes": {"/v1/availability": {"fresh_s": 10}}}, hedging={"routes": ["/v1/availability"]})
    async with gateway(document) as gw:
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN)
    assert status == 200
    sampled = {sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    rule_exprs, recorded = rules()
    named = set().union(*(references(q)[0] for q in dashboard_queries() + rule_exprs)) - recorded
    assert len(named) > 15
    assert sorted(named - sampled) == []
