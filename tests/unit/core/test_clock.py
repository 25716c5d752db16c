"""Time formatting every log line and triage record uses."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.clock import iso_utc_ms


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(10**9, 2 * 10**9).map(lambda s: s + 0.9999996))
def test_iso_utc_ms_agrees_with_datetime(seconds: float) -> None:
    expected = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso_utc_ms(seconds) == expected
