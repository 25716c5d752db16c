"""The gateway's counters, aggregated here and handed to the metric reader, as the duration
histograms are (histograms.py, which says why and when the SDK's instruments are used instead).

The SDK's ``Counter.add`` validates, cleans and hashes the attribute dict of every measurement
before a lock and a dict update: on a shared-read hit, whose one counted fact is
``pmc_gateway_reads_total``, that was a tenth of the request's CPU. Here an add is a tuple key,
a dict lookup and an addition. At collection the series become the SDK's own data model, a
cumulative monotonic ``Sum`` of ``NumberDataPoint``s, so no output can tell the difference.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import AggregationTemporality, Metric, NumberDataPoint, Sum


class Counting(Protocol):
    """What telemetry.py adds to: this module's counter, or an SDK ``Counter``."""

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None) -> None: ...


class _Series:
    __slots__ = ("attributes", "start_ns", "value")

    def __init__(self, attributes: dict[str, Any], start_ns: int) -> None:
        self.attributes = attributes
        self.start_ns = start_ns
        self.value: int | float = 0


class LocalCounter:
    """One counter's series, added to on the event loop and collected from a reader's thread."""

    def __init__(
        self, name: str, *, unit: str, description: str, attribute_names: Sequence[str], clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.name, self.unit, self.description = name, unit, description
        self._names = tuple(attribute_names)
        self._clock_ns = clock_ns
        self._series: dict[tuple[Any, ...], _Series] = {}
        self._lock = threading.Lock()

    def add(self, amount: int | float, attributes: Mapping[str, Any] | None = None) -> None:
        given = attributes or {}
        key = tuple(given.get(name) for name in self._names)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                kept = {name: value for name, value in zip(self._names, key, strict=True) if value is not None}
                series = self._series[key] = _Series(kept, self._clock_ns())
            series.value += amount

    def collect(self, now_ns: int) -> Metric | None:
        with self._lock:
            points = [
                NumberDataPoint(attributes=s.attributes, start_time_unix_nano=s.start_ns, time_unix_nano=now_ns, value=s.value)
                for s in self._series.values()
            ]
        if not points:
            return None
        data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE, is_monotonic=True)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)
