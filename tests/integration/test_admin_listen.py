"""SPEC §3/§6: ``server.admin_listen`` keeps /_gateway/* off the traffic address, and
``telemetry.metrics_token_env`` lets a scraper read the metrics and nothing else."""

from __future__ import annotations

import json

import aiohttp

from tests.support.servers import (
    ADMIN_TOKEN,
    WEB_TOKEN,
    ScriptedUpstream,
    call,
    free_port,
    gateway,
    gateway_document,
)

SCRAPE_TOKEN = "scrape-only-token-0123456789"


async def test_admin_endpoints_are_served_on_their_own_address_only(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    admin_port = free_port()
    document = gateway_document(upstream.url, server={"listen": "127.0.0.1:0", "admin_listen": f"127.0.0.1:{admin_port}", "shutdown_grace_s": 5})
    async with gateway(document) as gw:
        admin = f"http://127.0.0.1:{admin_port}"
        for path in ("/_gateway/health", "/_gateway/ready", "/_gateway/status", "/_gateway/webhooks/dead-letters"):
            status, _, body = await call(session, "GET", f"{gw.url}{path}", token=ADMIN_TOKEN)
            assert (status, json.loads(body)["code"]) == (404, "NOT_FOUND"), path  # not on the traffic address
            status, _, _ = await call(session, "GET", f"{admin}{path}", token=ADMIN_TOKEN)
            assert status == 200, path
        assert (await call(session, "GET", f"{gw.url}/v1/users/me"))[0] == 200  # traffic as before
        assert (await call(session, "GET", f"{admin}/v1/users/me"))[0] == 404  # and never on the admin address
        assert gw.components.admin_port == admin_port


async def test_a_scrape_only_token_reads_metrics_and_nothing_else(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    document = gateway_document(upstream.url, telemetry={"metrics_token_env": "PMC_SCRAPE_TOKEN"})
    async with gateway(document, env={"PMC_SCRAPE_TOKEN": SCRAPE_TOKEN}) as gw:
        status, _, body = await call(session, "GET", f"{gw.url}/_gateway/metrics", token=SCRAPE_TOKEN)
        assert status == 200 and b"pmc_gateway_jobs_total" in body
        assert (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=ADMIN_TOKEN))[0] == 200
        for path in ("/_gateway/status", "/_gateway/requests/req_x", "/_gateway/webhooks/dead-letters"):
            status, _, body = await call(session, "GET", f"{gw.url}{path}", token=SCRAPE_TOKEN)
            assert (status, json.loads(body)["code"]) == (401, "UNAUTHORIZED"), path
        assert (await call(session, "GET", f"{gw.url}/_gateway/metrics", token=WEB_TOKEN))[0] == 401
