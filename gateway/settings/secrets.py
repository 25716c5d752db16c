"""The secrets a config names (``*_env``, ``*_file``), read from the environment the entry point
hands in and from files; never logged."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.settings.schema import EnvironmentSettings, Settings


@dataclass(frozen=True, slots=True)
class Secrets:
    """Every secret the gateway holds, read from the environment or files. Never logged."""

    api_keys: Mapping[str, str]
    admin_token: str | None
    webhook_secrets: tuple[bytes, ...]
    subscriber_secrets: Mapping[str, bytes]
    redis_password: str | None = None
    metrics_token: str | None = None

    def __repr__(self) -> str:  # keeps secrets out of tracebacks and debug output
        return f"Secrets(environments={sorted(self.api_keys)}, admin_token={'set' if self.admin_token else 'unset'})"


API_KEY = re.compile(r"^[\x21-\x7e]{8,512}$")


def read_api_key(
    env: EnvironmentSettings, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """Return ``(key, problem)``: the environment's current key from its source."""
    if env.api_key_env is not None:
        value = environ.get(env.api_key_env)
        if value is None:
            return None, f"environment variable {env.api_key_env} is not set"
        source = f"environment variable {env.api_key_env}"
    else:
        assert env.api_key_file is not None  # guaranteed by _one_key_source
        try:
            value = Path(env.api_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"cannot read {env.api_key_file}: {getattr(exc, 'strerror', None) or exc}"
        source = f"file {env.api_key_file}"
    value = value.strip()
    if not API_KEY.match(value):
        return None, f"{source} does not hold a usable API key (8-512 printable characters)"
    return value, None


def resolve_secrets(settings: Settings, environ: Mapping[str, str]) -> Secrets:
    """Read every secret the config names from ``environ`` (the process environment, handed in by the
    entry point) and the files it names; raise :class:`ConfigError` listing all that are missing."""
    problems: list[str] = []
    api_keys: dict[str, str] = {}
    for name, env in settings.environments.items():
        key, problem = read_api_key(env, environ)
        field = "api_key_env" if env.api_key_env is not None else "api_key_file"
        if problem:
            problems.append(f"environments.{name}.{field}: {problem}")
        else:
            assert key is not None
            api_keys[name] = key

    admin_token = None
    if settings.server.admin_token_env:
        admin_token = environ.get(settings.server.admin_token_env)
        if not admin_token:
            problems.append(
                f"server.admin_token_env: environment variable {settings.server.admin_token_env} is not set"
            )
        elif len(admin_token) < 16:
            problems.append("server.admin_token_env: the admin token must be at least 16 characters")

    webhook_secrets = tuple(
        environ[name].encode() for name in settings.webhooks.secret_envs if environ.get(name)
    )
    if settings.webhooks.secret_envs and not webhook_secrets:
        problems.append(
            "webhooks.secret_envs: none of "
            + ", ".join(settings.webhooks.secret_envs)
            + " is set (set one, or secret_envs = [] to turn webhook ingress off)"
        )

    subscriber_secrets: dict[str, bytes] = {}
    for i, sub in enumerate(settings.webhooks.subscribers):
        if sub.secret_env is None:
            continue
        value = environ.get(sub.secret_env)
        if not value:
            problems.append(
                f"webhooks.subscribers.{i}.secret_env: environment variable {sub.secret_env} is not set"
            )
        else:
            subscriber_secrets[sub.name] = value.encode()

    if settings.server.tls is not None:
        for field in ("cert_file", "key_file"):
            file = getattr(settings.server.tls, field)
            if not Path(file).is_file():
                problems.append(f"server.tls.{field}: no such file {file}")
    if settings.upstream.ca_file and not Path(settings.upstream.ca_file).is_file():
        problems.append(f"upstream.ca_file: no such file {settings.upstream.ca_file}")
    if settings.store.ca_file and not Path(settings.store.ca_file).is_file():
        problems.append(f"store.ca_file: no such file {settings.store.ca_file}")
    redis_password = None
    if settings.store.password_env:
        redis_password = environ.get(settings.store.password_env)
        if not redis_password:
            problems.append(f"store.password_env: environment variable {settings.store.password_env} is not set")

    metrics_token = None
    if settings.telemetry.metrics_token_env:
        metrics_token = environ.get(settings.telemetry.metrics_token_env)
        if not metrics_token:
            problems.append(f"telemetry.metrics_token_env: environment variable {settings.telemetry.metrics_token_env} is not set")
        elif len(metrics_token) < 16:
            problems.append("telemetry.metrics_token_env: the metrics token must be at least 16 characters")
        elif metrics_token == admin_token:
            problems.append("telemetry.metrics_token_env: the metrics token must differ from the admin token")

    if problems:
        raise ConfigError(problems)
    return Secrets(api_keys, admin_token, webhook_secrets, subscriber_secrets, redis_password, metrics_token)


def token_digest(token: str) -> str:
    """The hex sha256 a client's ``token_sha256`` holds."""
    return hashlib.sha256(token.encode()).hexdigest()
