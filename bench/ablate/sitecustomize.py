"""Switches parts of the gateway off for ``bench/profile.py --ablate``: never used in serving.

Python imports ``sitecustomize`` at start-up from the path, so with this folder on the
gateway's ``PYTHONPATH`` and ``PMC_BENCH_ABLATE`` set (comma-separated), the gateway starts
without the named parts, and the CPU they cost is the difference to a run with them:

- ``constant-handler``: ``/v1/**`` answers a constant JSON body from the handler: no
  ``UpstreamRequest``, no outbound chain, no cache lookup. What is left is aiohttp plus the
  inbound middleware (request id, record, SERVER span start, auth) and the bookkeeping.
- ``no-bookkeeping``: what each request owes after its answer (span end and export, duration
  histograms, the access line, the triage record, the status board, the SLO tally) is dropped.
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
    from gateway.tools.bench.static_answer import BODY

    def _constant(**_: object) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(status=200, body=BODY, headers={"Content-Type": "application/json"})

        return handle

    proxy_handler.proxy_handler = _constant
