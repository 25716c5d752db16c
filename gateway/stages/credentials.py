"""Injects the environment's PinmyCal key, innermost, so no outer stage can log it.

Keys come from their configured source (variable or file). On an upstream 401
``INVALID_TOKEN`` the key is re-read; if it changed, the response is marked so the
retry stage retries once with the new key (SPEC §5).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping

import structlog

from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.settings import EnvironmentSettings, read_api_key

log = structlog.get_logger("gateway.credentials")


class CredentialSource:
    """The current API key of each environment, re-readable from its source."""

    def __init__(self, environments: Mapping[str, EnvironmentSettings], keys: Mapping[str, str]) -> None:
        self._environments = dict(environments)
        self._authorization = {env: f"Bearer {key}" for env, key in keys.items()}

    def authorization(self, environment: str) -> str:
        return self._authorization[environment]

    def fingerprint(self, environment: str) -> str | None:
        """A name for the current key that reveals nothing of it (sha256, 16 hex digits)."""
        value = self._authorization.get(environment)
        return None if value is None else hashlib.sha256(value.encode()).hexdigest()[:16]

    def has_key(self, environment: str) -> bool:
        return environment in self._authorization

    def replace_all(self, keys: Mapping[str, str]) -> None:
        self._authorization = {env: f"Bearer {key}" for env, key in keys.items()}

    async def reread(self, environment: str) -> bool:
        """Read the key again from its source; True when it changed (and is now in use)."""
        settings = self._environments[environment]
        key, problem = await asyncio.to_thread(read_api_key, settings, dict(os.environ))
        if key is None:
            log.warning("api_key_reread_failed", environment=environment, reason=problem)
            return False
        new = f"Bearer {key}"
        if new == self._authorization.get(environment):
            return False
        self._authorization[environment] = new
        log.info("api_key_rotated", environment=environment)
        return True


def is_invalid_token(response: UpstreamResponse) -> bool:
    if response.status != 401:
        return False
    try:
        return bool(json.loads(response.body).get("code") == "INVALID_TOKEN")
    except (ValueError, AttributeError):
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class CredentialsStage:
    source: CredentialSource
    name: str = "credentials"

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        authorization = self.source.authorization(request.environment)
        response = await next(request.with_headers((*request.headers, ("Authorization", authorization))))
        if is_invalid_token(response) and await self.source.reread(request.environment):
            return dataclasses.replace(response, credentials_rotated=True)
        return response
