"""``/_gateway/*`` (SPEC §6). Health, readiness and the dashboard page are open; every
other endpoint needs ``Authorization: Bearer <admin token>``, compared in constant time."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.admin.readiness import ReadinessAnswer
from gateway.admin.status import StatusBoard
from gateway.admin.triage import RecordWriter
from gateway.errors import BadRequest, NotFound
from gateway.inbound.admin_guard import admin_guard
from gateway.request.envelope import json_response


def admin_routes(
    *,
    readiness: Callable[[], ReadinessAnswer],
    status: StatusBoard,
    records: RecordWriter,
    metrics_text: Callable[[], Awaitable[bytes]] | None,
    admin_token: Callable[[], str | None],
    reload: Callable[[], tuple[int, dict[str, object]]] | None = None,
    purge_reads: Callable[[str | None, str | None], Awaitable[int]] | None = None,
    metrics_token: Callable[[], str | None] = lambda: None,
) -> list[web.RouteDef]:
    guard = admin_guard(admin_token)
    scrape_guard = admin_guard(admin_token, metrics_token)

    async def health(_: web.Request) -> web.StreamResponse:
        return json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.StreamResponse:
        answer = readiness()
        return json_response(answer.to_json(), status=answer.http_status)

    async def metrics(_: web.Request) -> web.StreamResponse:
        assert metrics_text is not None
        return web.Response(body=await metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status_document(_: web.Request) -> web.StreamResponse:
        return json_response(await status.document(), headers={"Cache-Control": "no-store"})

    async def request_record(request: web.Request) -> web.StreamResponse:
        request_id = request.match_info["request_id"]
        record = await records.get(request_id)
        if record is None:
            raise NotFound(f"no record for request {request_id[:128]}")
        return json_response(record)

    page = resources.files("gateway.admin").joinpath("dashboard/index.html").read_bytes()  # once, at build

    async def dashboard(_: web.Request) -> web.StreamResponse:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            },
        )

    async def reload_config(_: web.Request) -> web.StreamResponse:
        assert reload is not None
        status, body = reload()
        return json_response(body, status=status)

    async def purge(request: web.Request) -> web.StreamResponse:
        assert purge_reads is not None
        raw = await request.read()
        try:
            asked = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the purge body must be JSON: {\"environment\"?: …, \"route\"?: …}") from None
        if not isinstance(asked, dict) or set(asked) - {"environment", "route"}:
            raise BadRequest("the purge body takes only \"environment\" and \"route\"")
        environment, route = asked.get("environment"), asked.get("route")
        if not isinstance(environment, str | None) or not isinstance(route, str | None):
            raise BadRequest("\"environment\" and \"route\" must be strings")
        return json_response({"purged": await purge_reads(environment, route)})

    routes = [
        web.get("/_gateway/health", health, name="health", allow_head=True),
        web.get("/_gateway/ready", ready, name="ready", allow_head=True),
        web.get("/_gateway/status", guard(status_document), name="status"),
        web.get("/_gateway/requests/{request_id}", guard(request_record), name="request_record"),
        web.get("/_gateway/dashboard", dashboard, name="dashboard"),
    ]
    if purge_reads is not None:
        routes.append(web.post("/_gateway/reads/purge", guard(purge), name="reads_purge"))
    if reload is not None:
        routes.append(web.post("/_gateway/reload", guard(reload_config), name="reload"))
    if metrics_text is not None:
        routes.append(web.get("/_gateway/metrics", scrape_guard(metrics), name="metrics"))
    return routes
