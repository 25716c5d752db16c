"""The benchmark's floor: aiohttp's server plus the gateway's own upstream transport
(``gateway/upstream/http1.py``), with none of the gateway's features.

The bare aiohttp proxy shows what the gateway must match; this shows what the gateway starts
from. Between the two lies everything the features may cost if the gateway is to be no
slower than the bare proxy. The bench's cost ladder measures what they do cost.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

from aiohttp import web
from yarl import URL

from gateway.tools.bench.bare_proxy import HOP, run_reference
from gateway.upstream.http1 import Http1Origin


def build(upstream: str) -> web.Application:
    app = web.Application()
    origin_url = URL(upstream)

    async def origin_ctx(app: web.Application) -> AsyncIterator[None]:
        app["origin"] = Http1Origin(origin_url.host or "127.0.0.1", origin_url.port or 80, ssl_context=None)
        yield
        await app["origin"].close()

    async def proxy(request: web.Request) -> web.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        answer = await request.app["origin"].request(
            request.method, request.raw_path, headers, await request.read(), timeout_s=10, connect_timeout_s=5
        )
        out = {k: v for k, v in answer.headers if k.lower() not in HOP}
        return web.Response(status=answer.status, body=answer.body, headers=out)

    app.cleanup_ctx.append(origin_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main(argv: list[str] | None = None) -> int:
    return run_reference(build, "pmc-gateway-floor-proxy", argv)


if __name__ == "__main__":
    sys.exit(main())
