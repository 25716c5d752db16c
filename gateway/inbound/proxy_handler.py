"""The ``/v1/**`` handler: turns an authenticated caller's request into an
``UpstreamRequest``, runs the outbound chain, and passes the answer through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from gateway.core.clock import Clock
from gateway.errors import BadRequest
from gateway.request import headers as header_rules
from gateway.request.body import check_json, read_body
from gateway.request.chain import Chain
from gateway.request.keys import CALLER, RECORD
from gateway.request.record import RequestRecord
from gateway.request.routes import route_template
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.stages.jobs.domain import booking_of

MAX_IDEMPOTENCY_KEY = 255
_SNIFF_LIMIT = 256 * 1024


def capture_upstream_ids(record: RequestRecord, response: UpstreamResponse) -> None:
    """Note the upstream's ``requestId`` and the booking an answer names, for the triage record.

    A request that made a job keeps the 202's requestId (the jobs stage noted it with the job id):
    the job's final answer is not the request the upstream received from this caller."""
    body = response.body
    if len(body) > _SNIFF_LIMIT or (b'"requestId"' not in body and b'"bookingId"' not in body):
        return
    payload = response.payload()  # parsed once: the jobs stage may have read this very answer
    if payload is not None:
        if record.job_id is None and isinstance(payload.get("requestId"), str):
            record.upstream_request_id = payload["requestId"][:128]
        booking = booking_of(payload)
        if booking:
            record.booking_id = booking


def proxy_handler(*, chain: Chain, clock: Clock, deadline_s: float, max_body_bytes: int, body_timeout_s: float) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        caller = request[CALLER]
        record = request[RECORD]
        target = request.raw_path
        record.route = route_template(target)
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise BadRequest(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters")
        record.idempotency_key = idempotency_key
        body = await read_body(request, max_body_bytes, body_timeout_s)
        check_json(body, request.headers.get("Content-Type"))
        upstream_request = UpstreamRequest(
            method=request.method,
            target=target,
            route=record.route,
            headers=header_rules.request_headers(request.headers.items()),
            body=body,
            client=caller.client,
            environment=caller.environment,
            request_id=record.request_id,
            deadline=clock.monotonic() + deadline_s,
            record=record,
            idempotency_key=idempotency_key,
        )
        response = await chain(upstream_request)
        capture_upstream_ids(record, response)
        return web.Response(status=response.status, body=response.body, headers=CIMultiDict(response.headers))

    return handle
