"""Reading and checking a config file: TOML, the schema, the rules across sections, and every
problem as ``field.path: message`` (``check-config`` prints them all at once)."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from gateway.errors import ConfigError
from gateway.settings.schema import Settings
from gateway.settings.secrets import resolve_secrets

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _cross_checks(settings: Settings) -> list[str]:
    """Rules spanning sections, reported with the path of the offending field."""
    problems: list[str] = []
    for name in settings.environments:
        if not _NAME.match(name):
            problems.append(f"environments.{name}: name must match [A-Za-z0-9._-]{{1,64}}")
    seen_tokens: dict[str, str] = {}
    for name, client in settings.clients.items():
        if not _NAME.match(name):
            problems.append(f"clients.{name}: name must match [A-Za-z0-9._-]{{1,64}}")
        for env in client.environments:
            if env not in settings.environments:
                problems.append(
                    f"clients.{name}.environments: unknown environment {env!r}; "
                    f"defined: {sorted(settings.environments)}"
                )
        if client.token_sha256 in seen_tokens:
            problems.append(
                f"clients.{name}.token_sha256: same token as clients.{seen_tokens[client.token_sha256]}"
            )
        seen_tokens[client.token_sha256] = name
    for env_name, environment in settings.environments.items():
        if settings.budget.burst > environment.rate_limit_per_minute:
            problems.append(
                f"budget.burst: {settings.budget.burst} is above environments.{env_name}.rate_limit_per_minute "
                f"({environment.rate_limit_per_minute}); it must be in [0, the limit] (0: the whole limit)"
            )
    if settings.server.workers > 1 and settings.store.is_memory:
        problems.append(
            "server.workers: workers > 1 requires a shared store (store.url = \"redis://...\"); "
            "memory:// is private to one process"
        )
    for i, sub in enumerate(settings.webhooks.subscribers):
        if sub.url.startswith("http://") and not settings.webhooks.allow_insecure_http:
            problems.append(
                f"webhooks.subscribers.{i}.url: must be https:// unless "
                "webhooks.allow_insecure_http = true"
            )
    return problems


def warnings(settings: Settings) -> list[str]:
    """What is allowed but probably not meant, as ``field.path: message``."""
    found = []
    for name, client in settings.clients.items():
        for env in client.environments:
            limit = settings.environments[env].rate_limit_per_minute if env in settings.environments else None
            if client.requests_per_minute is not None and limit is not None and client.requests_per_minute > limit:
                found.append(
                    f"clients.{name}.requests_per_minute: {client.requests_per_minute} is above "
                    f"environments.{env}.rate_limit_per_minute ({limit}); the key's limit holds first"
                )
    return found


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The settings model a location's keys belong to (``("store",)`` → StoreSettings)."""
    model: Any = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            continue  # a table's own name: environments.live, clients.web, reads.routes."/v1/…"
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The model inside ``X | None``, ``dict[str, X]`` or ``tuple[X, ...]``."""
    for arg in (*get_args(annotation), annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        for inner in get_args(arg):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _format_validation_error(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
            model = _model_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields) if model else [], n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] not in ("value_error", "assertion_error") and "input" in error and not isinstance(error["input"], dict | list):
            message += f", got {error['input']!r}"
        model = _model_at(loc)
        first = message.split(" ", 1)
        if error["type"] == "value_error" and model is not None and len(first) == 2 and first[0] in model.model_fields:
            loc, message = (*loc, first[0]), first[1]  # "store: cluster needs …" → "store.cluster: needs …"
        path = ".".join(str(part) for part in loc) or "(file)"
        problems.append(f"{path}: {message}")
    return problems


def parse(document: Mapping[str, object]) -> Settings:
    """Validate an already-parsed TOML document; raise :class:`ConfigError` listing every problem."""
    try:
        settings = Settings.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    problems = _cross_checks(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def read_document(path: str | Path) -> dict[str, object]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror or exc}"]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"(file): not valid TOML: {exc}"]) from None


def load(path: str | Path) -> Settings:
    """Read and validate a TOML config file."""
    return parse(read_document(path))


def check(path: str | Path, environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of a config file and the secrets it names: every problem at once
    (SPEC §2), so an unknown key does not hide an unset variable. When only unknown keys stop
    the schema, the rest is still checked as if they were not there."""
    document = read_document(path)
    try:
        loaded = parse(document)
    except ConfigError as exc:
        problems = exc.problems
        try:
            Settings.model_validate(document)
        except ValidationError as invalid:
            errors = invalid.errors()
            if any(e["type"] != "extra_forbidden" for e in errors):
                return problems, []
            for error in errors:
                _drop(document, error["loc"])
        try:
            loaded = parse(document)
        except ConfigError:
            return problems, []
        try:
            resolve_secrets(loaded, environ)
        except ConfigError as secret_problems:
            problems = problems + secret_problems.problems
        return problems, []
    try:
        resolve_secrets(loaded, environ)
    except ConfigError as exc:
        return exc.problems, warnings(loaded)
    return [], warnings(loaded)


def _drop(document: dict[str, object], loc: tuple[int | str, ...]) -> None:
    node: object = document
    for part in loc[:-1]:
        node = node[part] if isinstance(node, dict) else node[int(part)] if isinstance(node, list) else None
    if isinstance(node, dict):
        node.pop(str(loc[-1]), None)
