"""The request path's duration histograms, aggregated here and handed to the metric reader.

Why: the SDK's ``Histogram.record`` validates and hashes the attribute dict of every
measurement, three records a request: a seventh of the gateway's CPU per request
(bench/README.md, "Why the hand-written parts"). Here a record is a dict lookup on a tuple of attribute values, a bisect and three updates.

At collection the series become the SDK's own data model — cumulative explicit-bucket
``HistogramDataPoint``s, as the SDK's aggregation builds them — and the reader adds them
to what the SDK collected, so the Prometheus exposition and the OTLP push cannot tell the
difference. That holds only for cumulative temporality, explicit buckets and no exemplars
(an exemplar needs each measurement with its trace context: the SDK's reservoir's job), so
telemetry.py records through SDK instruments, with the same names, buckets and attribute
order, whenever the configuration asks for anything else.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from opentelemetry.metrics import Histogram as SdkInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
)

from gateway.observability.otlp.counters import LocalCounter

# Attribute values in a fixed order; ``None`` leaves the attribute out.
AttributeValues = tuple[str | int | None, ...]


class DurationHistogram(Protocol):
    def declare(self, values: AttributeValues) -> None: ...
    def record(self, value: float, values: AttributeValues) -> None: ...


def attributes_of(names: Sequence[str], values: AttributeValues) -> dict[str, Any]:
    return {name: value for name, value in zip(names, values, strict=True) if value is not None}


class SdkDurationHistogram:
    """The same call, through an SDK instrument: when exemplars or delta/exponential output are asked for."""

    def __init__(self, instrument: SdkInstrument, attribute_names: Sequence[str]) -> None:
        self._instrument = instrument
        self._names = tuple(attribute_names)

    def declare(self, values: AttributeValues) -> None:
        return None  # the SDK's instruments have no zero series to make

    def record(self, value: float, values: AttributeValues) -> None:
        self._instrument.record(value, attributes_of(self._names, values))


class _Series:
    __slots__ = ("attributes", "bucket_counts", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: dict[str, Any], start_ns: int, buckets: int) -> None:
        self.attributes = attributes
        self.start_ns = start_ns
        self.bucket_counts = [0] * buckets
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf


class LocalDurationHistogram:
    """One histogram's series, recorded on the event loop and collected from a reader's thread."""

    def __init__(
        self,
        name: str,
        *,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        attribute_names: Sequence[str],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.name, self.unit, self.description = name, unit, description
        self._boundaries = tuple(boundaries)
        self._names = tuple(attribute_names)
        self._clock_ns = clock_ns
        self._series: dict[AttributeValues, _Series] = {}
        # Uncontended almost always; it keeps a collection from seeing a record half applied
        # (a count without its sum), which Prometheus would show as _count ≠ the +Inf bucket.
        self._lock = threading.Lock()

    def declare(self, values: AttributeValues) -> None:
        """A zero series for a label set known before its first record (SPEC §8: no blind panel)."""
        with self._lock:
            if values not in self._series:
                self._series[values] = _Series(attributes_of(self._names, values), self._clock_ns(), len(self._boundaries) + 1)

    def record(self, value: float, values: AttributeValues) -> None:
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = _Series(attributes_of(self._names, values), self._clock_ns(), len(self._boundaries) + 1)
                self._series[values] = series
            series.bucket_counts[bisect_left(self._boundaries, value)] += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value

    def collect(self, now_ns: int) -> Metric | None:
        with self._lock:
            points = [
                HistogramDataPoint(
                    attributes=series.attributes,
                    start_time_unix_nano=series.start_ns,
                    time_unix_nano=now_ns,
                    count=sum(series.bucket_counts),
                    sum=series.sum,
                    bucket_counts=tuple(series.bucket_counts),
                    explicit_bounds=self._boundaries,
                    min=series.min,
                    max=series.max,
                )
                for series in self._series.values()
            ]
        if not points:
            return None
        data = Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)
        return Metric(name=self.name, description=self.description, unit=self.unit, data=data)


class Collectable(Protocol):
    def collect(self, now_ns: int) -> Metric | None: ...


class LocalHistograms:
    """Every locally aggregated instrument of one application (these histograms, and the
    counters of counters.py); the reader calls ``collect``."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._histograms: list[Collectable] = []

    def create(self, name: str, *, unit: str, description: str, boundaries: Sequence[float], attribute_names: Sequence[str]) -> LocalDurationHistogram:
        histogram = LocalDurationHistogram(
            name, unit=unit, description=description, boundaries=boundaries, attribute_names=attribute_names, clock_ns=self._clock_ns
        )
        self._histograms.append(histogram)
        return histogram

    def create_counter(self, name: str, *, unit: str, description: str, attribute_names: Sequence[str]) -> LocalCounter:
        counter = LocalCounter(name, unit=unit, description=description, attribute_names=attribute_names, clock_ns=self._clock_ns)
        self._histograms.append(counter)
        return counter

    def collect(self) -> list[Metric]:
        now_ns = self._clock_ns()
        return [metric for h in self._histograms if (metric := h.collect(now_ns)) is not None]
