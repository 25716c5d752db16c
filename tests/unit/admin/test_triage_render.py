"""``pmc-gateway triage`` as an on-call engineer reads an async booking: the answer stamped when
it left, in time order with the job and its webhook; the job's polls apart from the request's own
attempts; where the time went adding up to no more than the total."""

from __future__ import annotations

import re

from gateway.admin.triage import render

ASYNC_BOOKING = {
    "requestId": "req_1", "traceId": "t", "startedAt": "2026-12-04T10:00:10.000Z", "client": "web", "environment": "live",
    "method": "POST", "path": "/v1/bookings", "route": "/v1/bookings", "status": 200, "latencyMs": 5512.0,
    "budgetWaitMs": 0.0, "jobWaitMs": 5317.0, "upstreamRequestId": None, "jobId": "job_1", "bookingId": "bk_1",
    "attempts": [
        {"attempt": 1, "status": 202, "error": None, "latencyMs": 190.0, "delayMs": 0.0, "hedge": False},
        {"attempt": 1, "status": 200, "error": None, "latencyMs": 180.0, "delayMs": 0.0, "hedge": False, "jobPoll": True},
        {"attempt": 1, "status": 200, "error": None, "latencyMs": 190.0, "delayMs": 0.0, "hedge": False, "jobPoll": True},
        {"attempt": 1, "status": 200, "error": None, "latencyMs": 197.0, "delayMs": 0.0, "hedge": False, "jobPoll": True},
    ],
    "job": {"jobId": "job_1", "state": "completed", "polls": 3, "finishedAt": "2026-12-04T10:00:15.400Z"},
    "events": [{"eventId": "evt_1", "type": "booking.created", "receivedAt": "2026-12-04T10:00:15.450Z", "deliveries": []}],
}


def test_an_async_booking_reads_in_time_order_and_adds_up() -> None:
    text = render(ASYNC_BOOKING)
    timeline = text.split("what happened next", 1)[1]
    order = [m for m in ("request received", "job job_1 completed", "webhook booking.created", "request answered 200") if m in timeline]
    assert order == sorted(order, key=timeline.index) == ["request received", "job job_1 completed", "webhook booking.created", "request answered 200"]
    assert "2026-12-04T10:00:15.512Z  request answered 200" in timeline  # started + 5,512 ms
    assert "attempts  1 (and 3 poll(s) while following its job)" in text
    assert len(re.findall(r"^  poll ", text, re.M)) == 3 and len(re.findall(r"^  #1 ", text, re.M)) == 1
    spent = [float(v) for v in re.findall(r"^  (?:rate-budget wait|the job's time|retry backoff|upstream|gateway)\s+([\d.]+) ms", text, re.M)]
    assert sum(spent) <= ASYNC_BOOKING["latencyMs"] + 0.1  # type: ignore[operator]
    assert "gateway" in text and spent[-1] > 0  # the gateway's own time is no longer clamped to 0
