"""The request path's own histograms (gateway/observability/otlp/histograms.py) must collect to exactly
what the SDK's histogram aggregation collects for the same measurements."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.histogram_buckets import SECONDS_BUCKETS
from gateway.observability.instruments import BUDGET_WAIT, READS, SERVER_DURATION
from gateway.observability.otlp.histograms import LocalHistograms, attributes_of
from gateway.observability.telemetry import Telemetry
from gateway.request.record import RequestRecord
from gateway.request.types import UpstreamRequest
from gateway.settings import TelemetrySettings
from tests.support.otlp import HttpReceiver

NAMES = ("http.request.method", "http.route", "http.response.status_code", "pmc.client")
values_strategy = st.one_of(
    st.sampled_from(SECONDS_BUCKETS),  # on a boundary: which bucket it falls in is the classic off-by-one
    st.floats(min_value=0, max_value=30, allow_nan=False),
)
attributes_strategy = st.tuples(
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["/v1/users/me", "/v1/bookings"]),
    st.sampled_from([200, 503, None]),
    st.sampled_from(["booking-web", None]),
)


def _sdk_points(measurements: list[tuple[float, tuple[str | int | None, ...]]]) -> Metric:
    reader = InMemoryMetricReader()
    view = View(instrument_name="d", aggregation=ExplicitBucketHistogramAggregation(SECONDS_BUCKETS))
    histogram = MeterProvider(metric_readers=[reader], views=[view]).get_meter("m").create_histogram("d", unit="s", description="x")
    for value, values in measurements:
        histogram.record(value, attributes_of(NAMES, values))
    data = reader.get_metrics_data()
    assert data is not None
    return data.resource_metrics[0].scope_metrics[0].metrics[0]


def _histogram(metric: Metric) -> Histogram:
    assert isinstance(metric.data, Histogram)
    return metric.data


def _points(metric: Metric) -> list[HistogramDataPoint]:
    return list(_histogram(metric).data_points)


def _attributes(point: HistogramDataPoint) -> tuple[tuple[str, object], ...]:
    return tuple(sorted((point.attributes or {}).items()))


def _comparable(point: HistogramDataPoint) -> tuple[object, ...]:
    return (
        tuple(sorted(point.attributes.items())) if point.attributes else (),
        point.count,
        tuple(point.bucket_counts),
        tuple(point.explicit_bounds),
        point.min,
        point.max,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(values_strategy, attributes_strategy), min_size=1, max_size=60))
def test_local_histogram_collects_what_the_sdk_collects(measurements: list[tuple[float, tuple[str | int | None, ...]]]) -> None:
    local = LocalHistograms()
    histogram = local.create("d", unit="s", description="x", boundaries=SECONDS_BUCKETS, attribute_names=NAMES)
    for value, values in measurements:
        histogram.record(value, values)
    [ours] = local.collect()
    theirs = _sdk_points(measurements)
    assert (ours.name, ours.unit, ours.description) == (theirs.name, theirs.unit, theirs.description)
    assert _histogram(ours).aggregation_temporality == _histogram(theirs).aggregation_temporality
    assert sorted(map(_comparable, _points(ours))) == sorted(map(_comparable, _points(theirs)))
    sums = {_attributes(p): p.sum for p in _points(theirs)}
    for point in _points(ours):
        assert math.isclose(point.sum, sums[_attributes(point)], rel_tol=1e-9, abs_tol=1e-12)


def test_a_series_starts_when_first_recorded_and_is_cumulative() -> None:
    clock = itertools.count(1_000, 1_000)
    local = LocalHistograms(clock_ns=lambda: next(clock))
    histogram = local.create("d", unit="s", description="x", boundaries=(0.1, 1.0), attribute_names=("a",))
    assert local.collect() == []  # no series before the first record, as the SDK
    histogram.record(0.05, ("x",))
    first = _points(local.collect()[0])[0]
    histogram.record(2.0, ("x",))
    second = _points(local.collect()[0])[0]
    assert first.start_time_unix_nano == second.start_time_unix_nano < first.time_unix_nano < second.time_unix_nano
    assert (first.count, second.count, tuple(second.bucket_counts)) == (1, 2, (1, 0, 1))


def _record_traffic(telemetry: Telemetry) -> None:
    record = RequestRecord("r-1", 0.0)
    request = UpstreamRequest("GET", "/v1/users/me", "/v1/users/me", (), b"", "booking-web", "live", "r-1", 0.0, record)
    for seconds in (0.004, 0.18, 0.25, 3.0):
        telemetry.server_finished(method="GET", route="/v1/users/me", status=200, client="booking-web", environment="live", seconds=seconds)
        telemetry.attempt_finished(request, 200, None, seconds / 2)
        telemetry.measure(BUDGET_WAIT, 0.0, (request.environment, request.client))
        telemetry.count(READS, {"http.route": "/v1/availability", "result": "hit"})
    telemetry.server_finished(method="GET", route="/_gateway/health", status=200, client=None, environment=None, seconds=0.001)
    telemetry.attempt_finished(request, None, "timeout", 2.0)


@pytest.mark.parametrize("sdk_path_env", ["OTEL_METRICS_EXEMPLAR_FILTER", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"])
def test_prometheus_exposition_is_the_same_either_way(sdk_path_env: str) -> None:
    """Local histograms and counters, or SDK instruments when exemplars or delta output are
    asked for: a scrape cannot tell which recorded the traffic."""
    local = Telemetry(TelemetrySettings(), member_id="t", environ={})
    asked = {sdk_path_env: "always_off" if "EXEMPLAR" in sdk_path_env else "delta"}
    through_sdk = Telemetry(TelemetrySettings(), member_id="t", environ=asked)
    try:
        assert type(local.histogram(SERVER_DURATION)) is not type(through_sdk.histogram(SERVER_DURATION))
        for telemetry in (local, through_sdk):
            _record_traffic(telemetry)
        ours, theirs = generate_latest(local.registry).decode(), generate_latest(through_sdk.registry).decode()
    finally:
        local.shutdown()
        through_sdk.shutdown()
    assert 'http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200"' in ours
    assert 'error_type="timeout"' in ours
    # every family, its help, type and samples, order aside; the job-duration histogram's zero
    # series (declared at start-up, SPEC §8) only the local path can make: no traffic in it
    declared = "pmc_gateway_job_duration_seconds"
    assert [f for f in _families(ours) if f[0] != declared] == [f for f in _families(theirs) if f[0] != declared]


def _families(text: str) -> list[tuple[object, ...]]:
    return sorted(
        (f.name, f.type, f.documentation, sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples))
        for f in text_string_to_metric_families(text)
    )


async def test_otlp_without_prometheus_pushes_the_histograms_and_exposes_nothing() -> None:
    """``prometheus = false`` with an OTLP endpoint: the local histograms reach the collector,
    and the registry behind /_gateway/metrics and the status snapshots stays empty."""
    receiver = HttpReceiver()
    await receiver.start()
    telemetry = Telemetry(
        TelemetrySettings(prometheus=False, otlp_endpoint=receiver.endpoint, otlp_protocol="http/protobuf"), member_id="t"
    )
    try:
        _record_traffic(telemetry)
        await asyncio.to_thread(telemetry.meter_provider.force_flush)
        exposition = generate_latest(telemetry.registry).decode()
    finally:
        await asyncio.to_thread(telemetry.shutdown)
        await receiver.stop()
    assert receiver.received.histogram_counts.get("http.server.request.duration") == 5
    assert exposition == ""


def test_a_budget_wait_of_zero_is_counted_as_zero() -> None:
    """histogram_quantile over the first bucket interpolated a zero wait to 4.75 ms: a 0 bucket keeps it 0."""
    telemetry = Telemetry(TelemetrySettings(), member_id="t")
    try:
        _record_traffic(telemetry)
        telemetry.declare_series([("booking-web", "live")])
        exposition = generate_latest(telemetry.registry).decode()
    finally:
        telemetry.shutdown()
    zero = [line for line in exposition.splitlines() if line.startswith("pmc_gateway_budget_wait_seconds_bucket") and 'le="0.0"' in line]
    assert zero and zero[0].endswith(" 4.0")  # all four waits were zero
    refused = {line.split(" ")[0] for line in exposition.splitlines() if line.startswith("pmc_gateway_budget_rejected_total")}
    assert {f'limit="{limit}"' in " ".join(refused) for limit in ("key", "client", "share")} == {True}
    assert 'pmc_gateway_budget_used_ratio{pmc_environment="live"} 0.0' in exposition
