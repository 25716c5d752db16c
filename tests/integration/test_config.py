"""Config validation and check-config, as an operator meets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import settings
from gateway.errors import ConfigError
from tests.support.servers import BASE_ENV

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "gateway.example.toml"


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
        timeout=60,
    )


def example_env() -> dict[str, str]:
    return {**BASE_ENV, "BOOKING_SVC_WEBHOOK_SECRET": "whsec_subscriber_0001"}


def test_example_config_passes_check_config() -> None:
    result = check_config(EXAMPLE, example_env())
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_example_config_documents_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    for section_name, section in settings.Settings.model_fields.items():
        model = section.annotation
        optional = [a for a in getattr(model, "__args__", ()) if a is not type(None)]  # [reads], [hedging]: X | None
        fields = getattr(optional[0] if optional else model, "model_fields", None)
        if section_name in ("environments", "clients"):
            continue
        assert f"[{section_name}]" in text, section_name
        for key in fields or {}:
            if key == "routes" and section_name == "reads":  # a table per route, documented with its keys
                assert '[reads.routes."/v1/availability"]' in text
                for inner in settings.ReadRouteSettings.model_fields:
                    assert f"{inner} =" in text, f"reads.routes.*.{inner} is not documented"
                continue
            if key in ("tls", "subscribers"):  # nested tables, documented with their own keys
                assert f"[{section_name}.{key}]" in text or f"[[{section_name}.{key}]]" in text
                nested = settings.TlsSettings if key == "tls" else settings.SubscriberSettings
                for inner in nested.model_fields:
                    assert f"{inner} =" in text, f"{section_name}.{key}.{inner} is not documented"
                continue
            assert f"{key} =" in text, f"{section_name}.{key} is not documented"
    for key in settings.EnvironmentSettings.model_fields:
        assert key in text, f"environments.*.{key} is not documented"
    for key in settings.ClientSettings.model_fields:
        assert key in text, f"clients.*.{key} is not documented"


def test_missing_secret_variable_is_named(tmp_path: Path) -> None:
    env = example_env()
    env.pop("PMC_LIVE_API_KEY")
    result = check_config(EXAMPLE, {**env, "PMC_LIVE_API_KEY": None})  # type: ignore[dict-item]
    assert result.returncode == 2
    assert "environments.live.api_key_env: environment variable PMC_LIVE_API_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


BAD = """
[server]
listen = "127.0.0.1:8080"
workers = 2
colour = "blue"

[store]
url = "memory://"

[upstream]
base_url = "ftp://example.com"
attempt_timeout_ms = "fast"

[environments.live]
api_key_file = "/nonexistent/pmc_live"
rate_limit_per_minute = 0

[clients.booking-web]
token_sha256 = "abc"
environments = ["staging"]

[webhooks]
secret_envs = ["PMC_WEBHOOK_SECRET"]

[[webhooks.subscribers]]
name = "booking-svc"
url = "http://booking-svc.internal/hooks"
"""


def test_bad_config_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    result = check_config(path, BASE_ENV)
    assert result.returncode == 2
    problems = result.stderr.strip().splitlines()
    expected = [
        "server.colour: unknown key",
        "upstream.base_url: Value error, base_url must be an http:// or https:// URL".replace("Value error, ", ""),
        "upstream.attempt_timeout_ms: Input should be a valid integer",
        "environments.live.rate_limit_per_minute: Input should be greater than 0",
        "clients.booking-web.token_sha256: must be the 64 hex digits of a sha256",
    ]
    for needle in expected:
        assert any(line.startswith(needle) for line in problems), (needle, problems)
    assert "Traceback" not in result.stderr


def test_cross_section_rules(tmp_path: Path) -> None:
    """Schema-valid but inconsistent: workers with memory, unknown environment, http subscriber."""
    document = {
        "server": {"workers": 2},
        "environments": {"live": {"api_key_env": "PMC_LIVE_API_KEY"}},
        "clients": {"web": {"token_sha256": "a" * 64, "environments": ["staging"]}},
        "webhooks": {"subscribers": [{"name": "svc", "url": "http://svc.internal/hook"}]},
    }
    with pytest.raises(ConfigError) as caught:
        settings.parse(document)
    problems = caught.value.problems
    assert any(p.startswith("server.workers: workers > 1 requires a shared store") for p in problems)
    assert any(p.startswith("clients.web.environments: unknown environment 'staging'") for p in problems)
    assert any(p.startswith("webhooks.subscribers.0.url: must be https://") for p in problems)


def test_key_file_problems_are_reported(tmp_path: Path) -> None:
    key_file = tmp_path / "pmc_live"
    key_file.write_text("short\n")
    config = settings.parse(
        {
            "environments": {"live": {"api_key_file": str(key_file)}, "test": {"api_key_file": str(tmp_path / "missing")}},
            "clients": {"web": {"token_sha256": "a" * 64, "environments": ["live"]}},
            "webhooks": {"secret_envs": []},
        }
    )
    with pytest.raises(ConfigError) as caught:
        settings.resolve_secrets(config, {"PMC_GATEWAY_ADMIN_TOKEN": "x" * 20})
    problems = caught.value.problems
    assert any(p.startswith("environments.live.api_key_file:") and "usable API key" in p for p in problems)
    assert any(p.startswith("environments.test.api_key_file: cannot read") for p in problems)
    key_file.write_text("pmc_live_from_a_file_0001\n")
    secrets = settings.resolve_secrets(
        settings.parse(
            {
                "environments": {"live": {"api_key_file": str(key_file)}},
                "clients": {"web": {"token_sha256": "a" * 64, "environments": ["live"]}},
                "webhooks": {"secret_envs": []},
            }
        ),
        {"PMC_GATEWAY_ADMIN_TOKEN": "x" * 20},
    )
    assert secrets.api_keys == {"live": "pmc_live_from_a_file_0001"}
    assert "pmc_live_from_a_file_0001" not in repr(secrets)


def test_not_toml_and_unreadable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nlisten = ")
    result = check_config(broken)
    assert result.returncode == 2 and result.stderr.startswith("(file): not valid TOML")
    result = check_config(tmp_path / "absent.toml")
    assert result.returncode == 2 and "(file): cannot read" in result.stderr


def test_bad_flags_exit_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sim", "--error-rate", "2"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "must be a fraction in [0, 1]" in result.stderr


@pytest.mark.parametrize("command", ["serve", "demo", "sim", "check-config", "triage"])
def test_every_command_has_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.cli", command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: pmc-gateway" in result.stdout


BUDGET = """
[budget]
burst = {burst}
[environments.live]
api_key_env = "PMC_LIVE_API_KEY"
rate_limit_per_minute = 120
[clients.web]
token_sha256 = "{digest}"
environments = ["live"]
share = {share}
requests_per_minute = {cap}
[webhooks]
secret_envs = []
"""


def _budget_config(tmp_path: Path, *, burst: int = 0, share: float = 1, cap: int = 60) -> Path:
    path = tmp_path / "budget.toml"
    path.write_text(BUDGET.format(burst=burst, share=share, cap=cap, digest="a" * 64))
    return path


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"burst": -1}, "budget.burst: Input should be greater than or equal to 0"),
        ({"burst": 121}, "budget.burst: 121 is above environments.live.rate_limit_per_minute (120)"),
        ({"share": 0}, "clients.web.share: Input should be greater than 0"),
        ({"share": -2}, "clients.web.share: Input should be greater than 0"),
    ],
)
def test_bad_budget_settings_are_named(tmp_path: Path, values: dict[str, float], problem: str) -> None:
    result = check_config(_budget_config(tmp_path, **values))  # type: ignore[arg-type]
    assert result.returncode == 2 and problem in result.stderr, result.stderr


def test_a_client_cap_above_its_environments_limit_is_a_warning(tmp_path: Path) -> None:
    result = check_config(_budget_config(tmp_path, burst=10, share=2.5, cap=500), example_env())
    assert result.returncode == 0, result.stderr
    assert "warning: clients.web.requests_per_minute: 500 is above environments.live.rate_limit_per_minute (120)" in result.stderr
    assert "warning" not in check_config(_budget_config(tmp_path, cap=120), example_env()).stderr


def test_an_unknown_key_does_not_hide_an_unset_variable(tmp_path: Path) -> None:
    """Regression (issue 21): only the unknown key was printed; SPEC §2 says every problem."""
    path = tmp_path / "both.toml"
    path.write_text(EXAMPLE.read_text().replace("[budget]\n", '[budget]\ncolour = "blue"\n', 1))
    env = example_env()
    env.pop("PMC_LIVE_API_KEY")
    result = check_config(path, {**env, "PMC_LIVE_API_KEY": None})  # type: ignore[dict-item]
    assert result.returncode == 2
    assert "budget.colour: unknown key" in result.stderr
    assert "environments.live.api_key_env: environment variable PMC_LIVE_API_KEY is not set" in result.stderr


@pytest.mark.parametrize(
    ("proxy_url", "problem"),
    [
        ("ftp://proxy:21", "upstream.proxy_url: must be an http://host:port proxy URL"),
        ("http://proxy:notaport", "upstream.proxy_url: has a bad port"),
        ("http://user:secret@proxy:3128", "upstream.proxy_url: must not carry credentials"),
    ],
)
def test_a_malformed_proxy_url_is_named(tmp_path: Path, proxy_url: str, problem: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(EXAMPLE.read_text().replace('proxy_url = ""', f'proxy_url = "{proxy_url}"', 1))
    result = check_config(path, example_env())
    assert result.returncode == 2 and problem in result.stderr, result.stderr
    assert "user:secret" not in result.stderr  # the credentials are never echoed


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ('url = "redis://r:6379"\ncluster = true\nsentinel_master = "m"', "store: two deployments at once, cluster = true and sentinel_master"),
        ('url = "memory://"\ncluster = true', "store.cluster: needs a redis:// or rediss:// url"),
        ('url = "memory://"\nsentinel_master = "m"', "store.sentinel_master: needs a redis:// or rediss:// url"),
        ('url = "redis://r:6379"\nsentinels = ["nope"]', "each must be host:port"),
        ('url = "redis://user:pw@r:6379"', "store.url: must not carry a password"),
        ('url = "redis://r:6379"\npassword_env = "PMC_REDIS_PASSWORD_UNSET"', "store.password_env: environment variable PMC_REDIS_PASSWORD_UNSET is not set"),
    ],
)
def test_bad_store_combinations_are_named(tmp_path: Path, store: str, problem: str) -> None:
    path = tmp_path / "store.toml"
    path.write_text(_with_store(store))
    result = check_config(path, example_env())
    assert result.returncode == 2 and problem in result.stderr, result.stderr


def _with_store(store: str) -> str:
    text = EXAMPLE.read_text()
    start = text.index("[store]")
    end = text.index("\n[", start + 1)
    return text[:start] + "[store]\n" + store + "\n" + text[end:]


def test_check_config_echoes_a_wrong_value_and_suggests_a_misspelt_key(tmp_path: Path) -> None:
    path = tmp_path / "typos.toml"
    path.write_text(
        EXAMPLE.read_text()
        .replace("deadline_ms = 8000", 'deadline_ms = "8s"')
        .replace("fresh_s = 10", "fresh = 10")
        .replace("base_url = \"https://api.pinmycal.com\"", "base_urll = \"https://api.pinmycal.com\"")
    )
    result = check_config(path, example_env())
    assert result.returncode == 2
    assert "upstream.deadline_ms: Input should be a valid integer, got '8s'" in result.stderr
    assert "upstream.base_urll: unknown key; did you mean 'base_url'?" in result.stderr
    assert "reads.routes./v1/availability.fresh: unknown key; did you mean 'fresh_s'?" in result.stderr
