"""Settings validation without a process: every problem as ``field.path: message``, naming the
bound, echoing a wrong value, suggesting the key a typo meant."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.settings import parse, resolve_secrets, token_digest

MINIMAL: dict[str, Any] = {
    "environments": {"live": {"api_key_env": "PMC_LIVE_API_KEY"}},
    "clients": {"web": {"token_sha256": token_digest("t"), "environments": ["live"]}},
}


def problems(**sections: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse({**MINIMAL, **sections})
    return caught.value.problems


def test_the_minimal_config_parses_and_sections_are_optional() -> None:
    settings = parse(MINIMAL)
    assert settings.reads is None and settings.hedging is None and settings.server.admin_listen == ""


def test_bounds_are_named_and_wrong_values_echoed() -> None:
    assert problems(retry={"max_attempts": 0}) == ["retry.max_attempts: Input should be greater than or equal to 1, got 0"]
    assert problems(upstream={"deadline_ms": "8s"}) == ["upstream.deadline_ms: Input should be a valid integer, got '8s'"]
    assert problems(hedging={"min_delay_ms": 500, "max_delay_ms": 100}) == [
        "hedging.max_delay_ms: (100) must be at least min_delay_ms (500)"
    ]


def test_an_unknown_key_suggests_the_one_meant_at_any_depth() -> None:
    assert problems(upstream={"base_urll": "https://x"}) == ["upstream.base_urll: unknown key; did you mean 'base_url'?"]
    assert problems(reads={"routes": {"/v1/availability": {"fresh": 3}}}) == [
        "reads.routes./v1/availability.fresh: unknown key; did you mean 'fresh_s'?"
    ]
    assert problems(nonsense={"a": 1}) == ["nonsense: unknown key"]


def test_a_cross_field_rule_names_its_field() -> None:
    assert problems(store={"url": "memory://", "cluster": True}) == ["store.cluster: needs a redis:// or rediss:// url; memory:// has no cluster"]
    assert problems(reads={"routes": {"/v1/availability": {"invalidated_by": ["moon"]}}}) == [
        "reads.routes./v1/availability.invalidated_by: unknown invalidation sources ['moon']; known: ['booking']"
    ]


def test_secrets_come_from_the_environment_handed_in_and_every_missing_one_is_named() -> None:
    settings = parse({**MINIMAL, "telemetry": {"metrics_token_env": "SCRAPE"}})
    with pytest.raises(ConfigError) as caught:
        resolve_secrets(settings, {"PMC_GATEWAY_ADMIN_TOKEN": "short", "SCRAPE": "tiny"})
    assert caught.value.problems == [
        "environments.live.api_key_env: environment variable PMC_LIVE_API_KEY is not set",
        "server.admin_token_env: the admin token must be at least 16 characters",
        "webhooks.secret_envs: none of PMC_WEBHOOK_SECRET, PMC_WEBHOOK_SECRET_PREVIOUS is set (set one, or secret_envs = [] to turn webhook ingress off)",
        "telemetry.metrics_token_env: the metrics token must be at least 16 characters",
    ]
