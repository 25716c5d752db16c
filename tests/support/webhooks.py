"""A real webhook subscriber on 127.0.0.1 that records deliveries and can be down or failing."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from gateway.webhooks.signature import sign


class Subscriber:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.deliveries: list[dict[str, Any]] = []
        self.fail_next = 0  # answer 503 to this many deliveries first
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        self.deliveries.append({"body": body, "headers": request.headers.copy(), "t": time.monotonic()})
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = next(a[1] for a in self.runner.addresses if isinstance(a, tuple))

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def event_ids(self) -> list[str]:
        return [d["headers"]["X-PMC-Event-Id"] for d in self.deliveries]


def signed(event: dict[str, Any], secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event, separators=(",", ":")).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return body, {"X-PMC-Timestamp": ts, "X-PMC-Signature": sign(secret.encode(), ts, body), "Content-Type": "application/json"}
