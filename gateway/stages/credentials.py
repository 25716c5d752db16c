"""Injects the environment's PinmyCal key, innermost, so no outer stage can log it.

Keys come from their configured source (variable or file). On an upstream 401
``INVALID_TOKEN`` the retry stage asks ``CredentialSource.changed_since`` whether the key the
attempt used is still current (re-reading its source); if not, it retries once with the new key
(SPEC §5). Each key has a generation, so every request that met the old key retries, not only
the first to notice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Mapping

import structlog

from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.settings import EnvironmentSettings, read_api_key

log = structlog.get_logger("gateway.credentials")


class CredentialSource:
    """The current API key of each environment, re-readable from its source."""

    def __init__(self, environments: Mapping[str, EnvironmentSettings], keys: Mapping[str, str], environ: Mapping[str, str] | None = None) -> None:
        self._environments = dict(environments)
        self._environ = environ if environ is not None else {}  # where *_env keys are re-read (the process environment)
        self._authorization = {env: f"Bearer {key}" for env, key in keys.items()}
        self._generation = dict.fromkeys(self._authorization, 0)
        self._rereading: dict[str, asyncio.Lock] = {}

    def authorization(self, environment: str) -> str:
        return self._authorization[environment]

    def fingerprint(self, environment: str) -> str | None:
        """A name for the current key that reveals nothing of it (sha256, 16 hex digits)."""
        value = self._authorization.get(environment)
        return None if value is None else hashlib.sha256(value.encode()).hexdigest()[:16]

    def has_key(self, environment: str) -> bool:
        return environment in self._authorization

    def generation(self, environment: str) -> int:
        """Changes whenever the environment's key does."""
        return self._generation.get(environment, 0)

    def replace_all(self, keys: Mapping[str, str]) -> None:
        new = {env: f"Bearer {key}" for env, key in keys.items()}
        for env, value in new.items():
            if value != self._authorization.get(env):
                self._generation[env] = self.generation(env) + 1
        self._authorization = new

    async def changed_since(self, environment: str, generation: int, response: UpstreamResponse) -> bool:
        """Whether ``response`` refused a key that is no longer the current one."""
        if not is_invalid_token(response):
            return False
        lock = self._rereading.setdefault(environment, asyncio.Lock())
        async with lock:  # one re-read at a time; those that waited see its outcome
            if self.generation(environment) != generation:
                return True
            return await self.reread(environment)

    async def reread(self, environment: str) -> bool:
        """Read the key again from its source; True when it changed (and is now in use)."""
        settings = self._environments[environment]
        key, problem = await asyncio.to_thread(read_api_key, settings, dict(self._environ))
        if key is None:
            log.warning("api_key_reread_failed", environment=environment, reason=problem)
            return False
        new = f"Bearer {key}"
        if new == self._authorization.get(environment):
            return False
        self._authorization[environment] = new
        self._generation[environment] = self.generation(environment) + 1
        log.info("api_key_rotated", environment=environment)
        return True


def is_invalid_token(response: UpstreamResponse) -> bool:
    if response.status != 401:
        return False
    payload = response.payload()
    return payload is not None and payload.get("code") == "INVALID_TOKEN"


@dataclasses.dataclass(frozen=True, slots=True)
class CredentialsStage:
    source: CredentialSource
    name: str = "credentials"

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        authorization = self.source.authorization(request.environment)
        return await next(request.with_headers((*request.headers, ("Authorization", authorization))))
