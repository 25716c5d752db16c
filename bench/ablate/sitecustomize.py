"""Switches parts of the gateway off for ``bench/profile.py --ablate``: never used in serving.

Python imports ``sitecustomize`` at start-up from the path, so with this folder on the
gateway's ``PYTHONPATH`` and ``PMC_BENCH_ABLATE`` set (comma-separated), the gateway starts
without the named parts, and the CPU they cost is the difference to a run with them:

- ``constant-handler``: ``/v1/**`` answers a constant JSON body from the handler: no
  ``UpstreamRequest``, no outbound chain, no cache lookup. What is left is aiohttp plus the
  inbound middleware (request id, record, SERVER span start, auth) and the bookkeeping.
- ``no-bookkeeping``: what each request owes after its answer (span end and export, duration
  histograms, the access line, the triage record, the status board, the SLO tally) is dropped.
- ``lean-hit``: the whole application replaced by one flat handler that answers a shared-read
  hit doing only what SPEC §4 and §8 ask of every request, inline: a request id, the caller's
  token checked, a SERVER span (attributes, event, exported), the read's counter and duration
  histogram, the access line, the triage record, the status board. No middleware, no stages, no
  path check, no caller cache directives, no ``Vary``, no error handling: a lower bound for
  any hit path that does the SPEC's per-request work, not a way to serve. It reads the entry
  another gateway stored (``profile.py --ablate lean-hit`` warms it first) and answers 503 on
  a miss.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

_ABLATE = {name for name in os.environ.get("PMC_BENCH_ABLATE", "").split(",") if name}

if "no-bookkeeping" in _ABLATE:
    from gateway.inbound import access_log

    access_log.RequestObserver._account = lambda *args, **kwargs: None  # type: ignore[method-assign]

if "constant-handler" in _ABLATE:
    from aiohttp import web

    from gateway.inbound import proxy_handler
    from gateway.tools.bench.static_answer import answer

    def _constant(**_: object) -> Callable[[web.Request], Awaitable[web.Response]]:
        return answer

    proxy_handler.proxy_handler = _constant

if "lean-hit" in _ABLATE:
    import time

    from aiohttp import web
    from multidict import CIMultiDict
    from opentelemetry import context as otel_context
    from opentelemetry.trace import SpanKind

    from gateway import app as gateway_app
    from gateway.observability import names
    from gateway.observability.instruments import READS
    from gateway.observability.log import access_line
    from gateway.request.record import CacheRecord, RequestRecord
    from gateway.request.stored import decode_answer
    from gateway.stages.reads.rules import cache_status, entry_key_of, scope_of

    _ROUTE = "/v1/availability"
    _ROOT = otel_context.Context()

    def _lean_app(components: gateway_app.Components) -> web.Application:
        app = web.Application()
        app.cleanup_ctx.extend(gateway_app.lifecycle(components))
        telemetry, store, ids, clients = components.telemetry, components.store, components.ids, components.clients

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def hit(request: web.Request) -> web.Response:
            started = time.monotonic()
            request_id = "req_" + ids()
            found = clients.find((request.headers.get("Authorization") or "")[7:])
            if found is None:
                return web.Response(status=401)
            client, environment = found[0], found[1][0]
            span = telemetry.tracer.start("GET", SpanKind.SERVER, None, _ROOT)
            target = request.raw_path
            key = entry_key_of(environment, target, request.headers.get("Accept") or "")
            lookup = await store.read_lookup(scope_of(environment, _ROUTE), key)
            if lookup.entry is None:
                return web.Response(status=503)
            answer, extra = decode_answer(lookup.entry)
            headers = CIMultiDict(answer.headers)
            headers["Age"] = str(int(lookup.age_s))
            name, value = cache_status("hit", ttl_s=float(extra.get("freshS", 0)) - lookup.age_s)
            headers[name] = value
            headers["X-Request-Id"] = request_id
            headers["X-Gateway-Attempts"] = "0"
            headers["Server"] = "pmc-gateway"
            response = web.Response(status=answer.status, body=answer.body, headers=headers)

            elapsed = time.monotonic() - started
            record = RequestRecord(
                request_id=request_id,
                started_at=components.clock.wall(),
                method="GET",
                path=target.split("?", 1)[0],
            )
            record.client, record.environment, record.route = client, environment, _ROUTE
            record.status, record.latency_ms = answer.status, elapsed * 1000
            record.trace_id = f"{span.get_span_context().trace_id:032x}"
            record.cache = CacheRecord("hit", lookup.age_s, None)
            telemetry.count(READS, {names.HTTP_ROUTE: _ROUTE, names.RESULT: "hit"})
            span.add_event("pmc.read", {names.RESULT: "hit"})
            span.update_name("GET " + _ROUTE)
            span.set_attributes(
                {
                    names.HTTP_METHOD: "GET", names.HTTP_ROUTE: _ROUTE, names.HTTP_STATUS: answer.status,
                    names.URL_PATH: record.path, names.URL_SCHEME: "http", names.PMC_REQUEST_ID: request_id,
                    names.PMC_ATTEMPTS: 0, names.PMC_CLIENT: client, names.PMC_ENVIRONMENT: environment,
                }
            )  # fmt: skip
            span.end()
            telemetry.server_finished(
                method="GET",
                route=_ROUTE,
                status=answer.status,
                client=client,
                environment=environment,
                seconds=elapsed,
            )
            access_line(
                {
                    "requestId": request_id, "traceId": record.trace_id, "client": client, "environment": environment,
                    "method": "GET", "route": _ROUTE, "status": answer.status, "latencyMs": round(elapsed * 1000, 3),
                    "attempts": 0, "upstreamRequestId": None, "errorCode": None,
                }
            )  # fmt: skip
            components.status.observe(record)
            components.records.submit(record)
            return response

        app.router.add_get("/_gateway/health", health)
        app.router.add_route("GET", "/{tail:.*}", hit)
        return app

    gateway_app.build_app = _lean_app
