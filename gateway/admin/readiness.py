"""``GET /_gateway/ready`` (SPEC §6): why this process should not take traffic, if it should not.
Not ready while draining, while an environment has no API key, or while the store is
unreachable (budgets then run on the local share: a load balancer should prefer a healthy peer).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.stages.credentials import CredentialSource
from gateway.store.protocols import StoreLifecycle


class Readiness:
    def __init__(self, *, environments: Iterable[str], credentials: CredentialSource, store: StoreLifecycle) -> None:
        self._environments = tuple(environments)  # fixed until a restart
        self._credentials = credentials
        self._store = store
        self.draining = False  # set once, by serve.py, when SIGTERM starts the drain

    def reasons(self) -> list[str]:
        reasons = []
        if self.draining:
            reasons.append("shutting down")
        for environment in self._environments:
            if not self._credentials.has_key(environment):
                reasons.append(f"no API key for environment {environment}")
        health = self._store.health()
        if not health.healthy:
            reasons.append(f"store unreachable ({health.error}); budgets use the local share")
        return reasons
