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

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from gateway import settings as settings_module
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.app import Components

log = structlog.get_logger("gateway.reload")

RELOADABLE = ("clients",)  # sections taken whole; secrets are re-read for every section


@dataclass
class ReloadResult:
    applied: bool
    problems: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"status": "ok" if self.applied else "refused", "problems": self.problems, "needsRestart": self.needs_restart}


def validate(path: Path) -> tuple[settings_module.Settings, settings_module.Secrets]:
    """Load and resolve; raises ``ConfigError`` with every problem."""
    loaded = settings_module.load(path)
    return loaded, settings_module.resolve_secrets(loaded)


def _learn_in_background(components: Components) -> None:
    """New keys get their first-seen date from the store (a round trip: not in this call)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(components.learn_key_ages())
    _LEARNING.add(task)
    task.add_done_callback(_LEARNING.discard)


_LEARNING: set[asyncio.Task[None]] = set()


def reload(components: Components, path: Path | None = None) -> ReloadResult:
    path = path or components.config_path
    if path is None:
        return ReloadResult(False, ["this gateway was not started from a config file"])
    try:
        new, secrets = validate(path)
    except ConfigError as exc:
        log.error("reload_refused", problems=exc.problems)
        return ReloadResult(False, exc.problems)

    old = components.settings
    needs_restart = [
        name
        for name in type(old).model_fields
        if name not in RELOADABLE and getattr(old, name) != getattr(new, name)
    ]
    live = old.model_copy(update={"clients": new.clients})
    components.settings = live
    components.secrets = secrets
    components.credentials.replace_all(secrets.api_keys)
    components.clients.replace(new.clients)
    components.budget_table.replace(live)
    components.relay.replace_secrets(secrets.subscriber_secrets)
    log.info("config_reloaded", clients=sorted(new.clients), needsRestart=needs_restart)
    _learn_in_background(components)
    for name, days in components.api_key_ages():
        components.warn_key_age(name, days)
    return ReloadResult(True, [], needs_restart)
