"""Re-reads the config file and its secrets without dropping a request (SIGHUP, or
``POST /_gateway/reload``).

What a reload changes in place: client tokens, environments allowed per client and
client caps, every environment's API key, webhook secrets, subscriber signing secrets
and the admin token. Requests in flight keep what they started with. A file or secret
that fails validation is refused and the running config stays. Changes that need a
restart (listen address, workers, store, upstream, environments, retry/breaker/budget
settings, subscribers) are not applied; they are reported so the operator knows.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from gateway import settings as settings_module
from gateway.errors import ConfigError
from gateway.settings import Secrets, Settings

log = structlog.get_logger("gateway.reload")

RELOADABLE = ("clients",)  # sections taken whole; secrets are re-read for every section


class Reloadable(Protocol):
    """What a reload reads and swaps: the composition root's components are one."""

    settings: Settings
    config_path: Path | None
    environ: Mapping[str, str]

    def swap(self, settings: Settings, secrets: Secrets) -> None: ...


@dataclass
class ReloadResult:
    applied: bool
    problems: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"status": "ok" if self.applied else "refused", "problems": self.problems, "needsRestart": self.needs_restart}


def validate(path: Path, environ: Mapping[str, str]) -> tuple[settings_module.Settings, settings_module.Secrets]:
    """Load and resolve; raises ``ConfigError`` with every problem."""
    loaded = settings_module.load(path)
    return loaded, settings_module.resolve_secrets(loaded, environ)


def reload(target: Reloadable, path: Path | None = None) -> ReloadResult:
    path = path or target.config_path
    if path is None:
        return ReloadResult(False, ["this gateway was not started from a config file"])
    try:
        new, secrets = validate(path, target.environ)
    except ConfigError as exc:
        log.error("reload_refused", problems=exc.problems)
        return ReloadResult(False, exc.problems)

    old = target.settings
    needs_restart = [
        name
        for name in type(old).model_fields
        if name not in RELOADABLE and getattr(old, name) != getattr(new, name)
    ]
    target.swap(old.model_copy(update={"clients": new.clients}), secrets)
    log.info("config_reloaded", clients=sorted(new.clients), needsRestart=needs_restart)
    return ReloadResult(True, [], needs_restart)


def reload_or_signal(
    target: Reloadable,
    *,
    signal_supervisor: Callable[[], None] = lambda: os.kill(os.getppid(), signal.SIGHUP),
) -> tuple[int, dict[str, object]]:
    """``POST /_gateway/reload``: one worker reloads itself; with several, validate here, then
    the supervisor signals them all (each re-reads on its own SIGHUP)."""
    workers = target.settings.server.workers
    if workers == 1 or target.config_path is None:
        result = reload(target)
        return (200 if result.applied else 422), result.to_json()
    try:
        validate(target.config_path, target.environ)
    except ConfigError as exc:
        return 422, {"status": "refused", "problems": exc.problems, "needsRestart": []}
    signal_supervisor()
    return 202, {"status": "accepted", "problems": [], "needsRestart": [], "workers": workers}
