"""``GET /_gateway/ready`` (SPEC §6): whether this replica should receive traffic.

- ``ready``: everything it needs answers.
- ``degraded`` (still 200): it serves on a fallback — the shared store is unreachable and budgets
  run on the local share. A shared dependency's outage must never take every replica out of a
  load balancer: that would turn a Redis blip into a full outage.
- ``not_ready`` (503): it cannot serve callers — draining after SIGTERM, or an environment
  without a usable API key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.stages.credentials import CredentialSource
from gateway.store.protocols import StoreLifecycle


@dataclass(frozen=True, slots=True)
class ReadinessAnswer:
    status: str  # ready | degraded | not_ready
    problems: tuple[str, ...] = ()

    @property
    def http_status(self) -> int:
        return 503 if self.status == "not_ready" else 200

    def to_json(self) -> dict[str, object]:
        return {"status": self.status, **({"problems": list(self.problems)} if self.problems else {})}


class Readiness:
    def __init__(self, *, environments: Iterable[str], credentials: CredentialSource, store: StoreLifecycle) -> None:
        self._environments = tuple(environments)  # fixed until a restart
        self._credentials = credentials
        self._store = store
        self.draining = False  # set once, by serve.py, when SIGTERM starts the drain

    def answer(self) -> ReadinessAnswer:
        blocking = ["shutting down"] if self.draining else []
        blocking += [f"no API key for environment {e}" for e in self._environments if not self._credentials.has_key(e)]
        if blocking:
            return ReadinessAnswer("not_ready", tuple(blocking))
        health = self._store.health()
        if not health.healthy:
            return ReadinessAnswer("degraded", (f"store unreachable ({health.error}); budgets use the local share",))
        return ReadinessAnswer("ready")
