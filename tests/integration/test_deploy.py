"""Deployment artefacts (no Docker engine runs here, so: parse, validate, and build the wheel
the Dockerfile installs)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from gateway import settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "config" / "k8s"


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
            current = ""
    return lines


def test_dockerfile_is_small_non_root_and_checks_health() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert len(froms) == 2 and all("slim" in f for f in froms)  # multi-stage, slim base
    final = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM"):]
    users = [rest for kw, rest in final if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert json.loads(next(rest for kw, rest in final if kw == "ENTRYPOINT")) == ["pmc-gateway", "serve"]
    healthcheck = next(rest for kw, rest in final if kw == "HEALTHCHECK")
    assert "/_gateway/health" in healthcheck
    copies = [rest for kw, rest in instructions if kw == "COPY"]
    assert not any("config" in c or "secret" in c.lower() or ".env" in c for c in copies)  # mounted, not baked
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "config"} <= set(ignored)


def test_the_wheel_the_image_installs_carries_everything_the_gateway_reads(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("pmc_gateway-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in (ROOT / "gateway" / "store" / "redis_scripts").glob("*.lua"):
        assert f"gateway/store/redis_scripts/{script.name}" in names
    assert "gateway/admin/dashboard/index.html" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pmc-gateway = gateway.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    version = kubernetes_validate.latest_version()
    for manifest in manifests():
        kubernetes_validate.validate(manifest, version, strict=True)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file()


def test_deployment_runs_replicas_with_probes_budget_and_secrets() -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for m in manifests():
        by_kind.setdefault(str(m["kind"]), []).append(m)
    deployment = by_kind["Deployment"][0]
    spec = deployment["spec"]
    assert spec["replicas"] >= 3 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]
    # a stock annotation scrape sends no token and would get 401: none is shipped
    assert not any(k.startswith("prometheus.io/") for k in pod["metadata"].get("annotations", {}))
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/_gateway/ready", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/_gateway/health", "port": "admin"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "admin": 9901}
    traffic = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "pmc-gateway")
    assert [p["targetPort"] for p in traffic["spec"]["ports"]] == ["http"]  # admin never on the traffic Service
    monitor = yaml.safe_load((K8S / "optional" / "servicemonitor.yaml").read_text())
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("admin", "/_gateway/metrics")
    assert endpoint["authorization"]["credentials"] == {"name": "pmc-gateway-secrets", "key": "metrics-token"}
    assert any(e["name"] == "PMC_GATEWAY_METRICS_TOKEN" for e in container["env"])
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert all("valueFrom" in e and "secretKeyRef" in e["valueFrom"] for e in container["env"])  # no literal secrets
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    pdb = by_kind["PodDisruptionBudget"][0]
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < spec["replicas"]

    config = tomllib.loads((K8S / "gateway.toml").read_text())
    parsed = settings.parse(config)  # the mounted config is valid (secrets come from the cluster)
    assert parsed.server.listen.startswith("0.0.0.0:") and parsed.store.url.startswith("redis://")
    assert parsed.server.admin_port == 9901 and parsed.telemetry.metrics_token_env == "PMC_GATEWAY_METRICS_TOKEN"
    assert parsed.server.shutdown_grace_s < pod["spec"]["terminationGracePeriodSeconds"]
    assert "--appendonly" in by_kind["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_docker_example_config_needs_exactly_the_variables_its_docker_run_passes() -> None:
    """No Docker daemon here: what can be checked is that the mounted config and the documented
    `docker run -e …` fit — check-config passes with those variables and no others."""
    import re
    import subprocess
    import sys

    dockerfile = (ROOT / "Dockerfile").read_text()
    run = dockerfile[dockerfile.index("#   docker run"):].split("\n# (", 1)[0]
    passed = re.findall(r"-e (\w+)", run)
    assert "config/docker/gateway.toml" in run and "pmc-gateway:0.1.0" in run
    env = {"PATH": "/usr/bin:/bin", **{name: f"{name.lower()}_value_0123456789" for name in passed}}
    env["PMC_LIVE_API_KEY"], env["PMC_TEST_API_KEY"] = "pmc_live_docker_0001", "pmc_test_docker_0001"
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(ROOT / "config" / "docker" / "gateway.toml")],
                            env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    deployment = next(m for m in manifests() if m["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "pmc-gateway:0.1.0"
