"""How old each environment's API key is (SPEC §3): a warning past 60 days, a loud one past 90,
in the log at start-up and after a reload, in ``/_gateway/status`` and as a gauge.

A key's age comes from ``api_key_rotated_at``, else its file's mtime, else — a key from
``api_key_env`` has no date of its own — from when any replica first saw its fingerprint (kept
in the store, so every replica and every restart agrees).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path

import structlog

from gateway.core.clock import Clock
from gateway.errors import StoreError
from gateway.settings import EnvironmentSettings
from gateway.stages.credentials import CredentialSource
from gateway.store.protocols import MembershipStore

log = structlog.get_logger("gateway.app")

KEY_AGE_WARN_DAYS = 60
KEY_AGE_ALARM_DAYS = 90


class KeyAges:
    def __init__(
        self,
        *,
        environments: Mapping[str, EnvironmentSettings],  # fixed until a restart; their keys reload
        credentials: CredentialSource,
        store: MembershipStore,
        clock: Clock,
    ) -> None:
        self._environments = environments
        self._credentials = credentials
        self._store = store
        self._clock = clock
        self.first_seen: dict[str, float] = {}  # environment → wall seconds
        self._learning: set[asyncio.Task[None]] = set()

    def ages(self) -> list[tuple[str, float]]:
        ages = []
        today = datetime.fromtimestamp(self._clock.wall(), UTC).date()
        for name, env in self._environments.items():
            rotated: date | None = env.api_key_rotated_at
            if rotated is None and env.api_key_file:
                try:
                    rotated = datetime.fromtimestamp(Path(env.api_key_file).stat().st_mtime, UTC).date()
                except OSError:
                    rotated = None
            if rotated is None and name in self.first_seen:
                rotated = datetime.fromtimestamp(self.first_seen[name], UTC).date()
            if rotated is not None:
                ages.append((name, float((today - rotated).days)))
        return ages

    async def learn(self) -> None:
        """Ask the store when a key without a date of its own was first seen."""
        for name, env in self._environments.items():
            fingerprint = self._credentials.fingerprint(name)
            if env.api_key_env and env.api_key_rotated_at is None and fingerprint:
                with contextlib.suppress(StoreError):
                    self.first_seen[name] = await self._store.first_seen(f"apikey:{fingerprint}", self._clock.wall())

    def learn_in_background(self) -> None:
        """After a reload: new keys get their first-seen date (a round trip: not in that call)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.learn())
        self._learning.add(task)
        task.add_done_callback(self._learning.discard)

    def warn(self) -> None:
        for environment, days in self.ages():
            if days > KEY_AGE_ALARM_DAYS:
                log.error("api_key_old", environment=environment, ageDays=days, rotateBy="now: older than 90 days")
            elif days > KEY_AGE_WARN_DAYS:
                log.warning("api_key_old", environment=environment, ageDays=days)

    def status_section(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for environment, days in self.ages():
            level = "alarm" if days > KEY_AGE_ALARM_DAYS else "warn" if days > KEY_AGE_WARN_DAYS else "ok"
            out.append({"environment": environment, "ageDays": days, "level": level})
        return out
