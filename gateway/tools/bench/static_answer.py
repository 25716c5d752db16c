"""aiohttp alone: a server answering every request with the same small JSON body, no
upstream and no features. The bench's profile compares a shared-read hit with it: what a hit
costs beyond this is the gateway's own per-request work."""

from __future__ import annotations

import sys

from aiohttp import web

from gateway.tools.bench.bare_proxy import run_reference

BODY = b'{"slots":[' + b",".join(b'"2026-12-0%dT09:00:00Z"' % day for day in range(1, 10)) + b"]}"


async def answer(request: web.Request) -> web.Response:
    return web.Response(status=200, body=BODY, headers={"Content-Type": "application/json"})


def build(upstream: str) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def main(argv: list[str] | None = None) -> int:
    return run_reference(build, "pmc-gateway-static-answer", argv)


if __name__ == "__main__":
    sys.exit(main())
