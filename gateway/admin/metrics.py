"""``/_gateway/metrics``: Prometheus text for the whole process group.

The OpenTelemetry Prometheus reader has no multiprocess mode, so each process publishes
its own exposition with its status snapshot (every 2 s) and the endpoint merges every
live member's: counters and histograms add up, gauges take the maximum (breaker state,
backlog and key age are the same fact seen by each member; the worst one is the truth
to alert on). With one process it is simply that process's registry.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from gateway.admin.status import StatusBoard

_ADDITIVE = frozenset({"counter", "histogram", "summary"})


def merge_expositions(texts: list[str]) -> bytes:
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if family.type in _ADDITIVE:
                    samples[key] = samples.get(key, 0.0) + sample.value
                else:
                    samples[key] = max(samples.get(key, -math.inf), sample.value)
    lines = []
    for name, (kind, documentation, samples) in families.items():
        lines.append(f"# HELP {name} {documentation}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample_name, labels), value in samples.items():
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample_name}{{{rendered}}} {_number(value)}" if rendered else f"{sample_name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else f"{int(value)}.0"


class MetricsView:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def local(self) -> bytes:
        return generate_latest(self._registry)

    def group_text(self, status: StatusBoard) -> Callable[[], Awaitable[bytes]]:
        async def text() -> bytes:
            others = [s["exposition"] for s in await status.other_members() if "exposition" in s]
            if not others:
                return self.local()
            return merge_expositions([self.local().decode(), *others])

        return text
