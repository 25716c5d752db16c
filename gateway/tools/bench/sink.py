"""An OTLP/HTTP sink for the benchmark: accepts traces and metrics and drops them, so the
gateway pays the full export cost without a collector."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pmc-gateway-otlp-sink")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    received = {"bytes": 0}

    async def accept(request: web.Request) -> web.Response:
        received["bytes"] += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def health(_: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.post("/v1/traces", accept), web.post("/v1/metrics", accept), web.get("/health", health)])
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
