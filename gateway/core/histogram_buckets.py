"""Histogram bucket bounds, in seconds, shared by the instruments (telemetry.py) and the config
checks that SLO thresholds fall on a bound (settings.py): an SLI counts "under X" from the
bucket ``le="X"``, so X must be one. The SDK's defaults suit milliseconds and the semconv
advisory list has no 0.18."""

from __future__ import annotations

SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.18, 0.2, 0.25,
    0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# What the gateway adds to a request is a few milliseconds when healthy.
ADDED_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# A zero wait is counted as zero, not spread over the first bucket by histogram_quantile.
BUDGET_WAIT_BUCKETS = (0.0, 0.001, *SECONDS_BUCKETS)
# An async job takes seconds to minutes (its eta is ~15 s).
JOB_DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)
