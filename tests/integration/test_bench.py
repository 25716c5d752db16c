"""`pmc-gateway bench --quick` runs end to end on this machine and reports every figure.

Speed targets are not asserted here (a shared 2-core machine is too noisy for that; the
figures live in bench/README.md): this checks the benchmark itself works and is honest
about what it measured.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.tools.bench.runner import (
    COST_LADDER_FLOOR,
    HIT_TARGET,
    LOCAL_STORE_TARGET,
    SAMPLED_TARGET,
    render,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def test_quick_bench_measures_every_target_and_renders_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "--quick", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["machine"]["store"] == "redis"  # every feature on: the shared store too
    assert set(result["throughput"]) == {"direct", "bare aiohttp proxy", "pmc-gateway", HIT_TARGET, SAMPLED_TARGET}
    for name, runs in result["throughput"].items():
        for run in runs:
            assert run["count"] == result["settings"]["requests"] and run["errors"] == 0, name
            assert run["rps"] > 0 and run["p50"] <= run["p99"]
            assert run["cpu_us"] > 0 and run["peak_rss_mb"] > 0
    steps = result["cost"]  # the floor proxy, three gateways adding features, then the full gateway
    assert steps[0]["step"] == COST_LADDER_FLOOR and len(steps) == 5
    assert steps[-1]["runs"] == result["throughput"]["pmc-gateway"]
    for step in steps:
        assert [run["count"] for run in step["runs"]] == [result["settings"]["requests"]], step["step"]
        assert step["runs"][0]["errors"] == 0 and step["runs"][0]["cpu_us"] > 0, step["step"]
    assert set(result["latency"]) == {"direct", "gateway", LOCAL_STORE_TARGET}
    assert set(result["varying"]) == {"direct", "gateway"}
    for section in (result["latency"], result["varying"]):
        assert all(run["errors"] == 0 and run["count"] > 0 for runs in section.values() for run in runs)
    # 20 ms on average: what the simulator was told, seen by the load generator
    assert 20 <= result["latency"]["direct"][0]["p50"] <= 30 and 19 <= result["varying"]["direct"][0]["p50"] <= 30
    assert len(result["memory"]) == 8 and all(point["rss_mb"] > 0 for point in result["memory"])
    table = render(result)
    assert "pmc-gateway" in table and "CPU µs/req" in table and "added" in table and "(memory store)" in table and "(varying 20 ms)" in table
    assert "where the CPU goes" in table and "the features cost" in table
    assert "[x] RSS ≤ 150 MB" in table or "[ ] RSS ≤ 150 MB" in table
    assert "shared-read hit/bare proxy" in table and "shared-read hit: CPU < bare aiohttp proxy's" in table


def test_quick_budget_scenarios_compare_direct_and_two_replicas() -> None:
    from gateway.tools.bench.scenarios import render as render_scenarios

    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "--scenarios", "--quick", "--json", "--latency-ms", "5"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert [s["name"] for s in result["scenarios"]] == ["bursts", "overload", "neighbours"]
    for scenario in result["scenarios"]:
        assert {row["target"] for row in scenario["rows"]} == {"direct", "gateway"}
        gateway = [row for row in scenario["rows"] if row["target"] == "gateway"]
        assert all(row["upstream429"] == 0 and row["otherErrors"] == 0 for row in gateway)
        assert scenario["mostSentIn60s"]["gateway"] <= result["limitPerMinute"]
    bursts = next(s for s in result["scenarios"] if s["name"] == "bursts")
    assert all(row["ok"] == row["asked"] for row in bursts["rows"])
    assert "most requests any rolling 60 s" in render_scenarios(result)
    storm, outage = result["readScenarios"]
    assert (storm["name"], outage["name"]) == ("storm", "outage")
    direct, gateway = (next(r for r in storm["rows"] if r["target"] == t) for t in ("direct", "gateway"))
    # five times the key's limit: direct is throttled, the gateway serves every read from far fewer calls
    assert direct["upstream429"] > 0 and gateway["upstream429"] == 0
    assert gateway["readsOk"] == gateway["reads"] and gateway["upstreamCalls"] < direct["upstreamCalls"] / 3
    assert gateway["staleAfterBooking"] == 0 and gateway["staleAfterWebhook"] == 0 and gateway["bookingsConflict"] == 0
    assert gateway["bookingsMade"] == gateway["bookingsTried"] > 0
    down = next(r for r in outage["rows"] if r["target"] == "gateway")
    assert down["readsDuringOutage"] > 0 and down["servedDuringOutage"] >= 0.99 * down["readsDuringOutage"]
    assert "stale after booking" in render_scenarios(result)
    flaky = {row["target"]: row for row in result["flaky"]["rows"]}
    assert flaky["gateway, no hedging"]["success"] == flaky["gateway, hedging"]["success"] == 1.0
    assert flaky["direct"]["success"] < 1.0  # the upstream's own 503s and hangs, unhidden
    assert flaky["gateway, hedging"]["p99Ms"] < flaky["gateway, no hedging"]["p99Ms"]  # the hung 1 % no longer sets the tail
    assert flaky["gateway, hedging"]["attemptsPerRequest"] <= 1.2
    assert "flaky upstream" in render_scenarios(result)
