"""The benchmark's reference: a minimal aiohttp reverse proxy (one shared ClientSession,
uvloop), with none of the gateway's features. What the gateway must at least match."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "date", "server"}


def build(upstream: str) -> web.Application:
    app = web.Application()

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), auto_decompress=False)
        yield
        await app["session"].close()

    async def proxy(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with request.app["session"].request(request.method, upstream + request.raw_path, headers=headers, data=await request.read() or None) as response:
            body = await response.read()
            out = {k: v for k, v in response.headers.items() if k.lower() not in HOP}
            return web.Response(status=response.status, body=body, headers=out)

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def run_reference(build: Callable[[str], web.Application], prog: str, argv: list[str] | None) -> int:
    """``--upstream URL --port N``: serve ``build(URL)`` on uvloop when installed, no access log."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import asyncio

    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(build(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None, loop=loop)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_reference(build, "pmc-gateway-bare-proxy", argv)


if __name__ == "__main__":
    sys.exit(main())
