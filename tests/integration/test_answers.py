"""What every /v1 answer says about itself (SPEC §4): X-Request-Id and X-Gateway-Attempts on the
gateway's own refusals too, Server: pmc-gateway, malformed JSON refused before any upstream call,
a base_url path kept as a prefix."""

from __future__ import annotations

import json

import aiohttp
import pytest
from yarl import URL

from tests.support.servers import ADMIN_TOKEN, ScriptedUpstream, call, gateway, gateway_document


@pytest.mark.parametrize(
    ("path", "token", "status", "code"),
    [
        ("/v1/users/me", None, 401, "GATEWAY_UNAUTHENTICATED"),
        ("/v1/users//me", "client", 400, "BAD_REQUEST"),
        ("/v1/%2e%2e/admin", "client", 400, "BAD_REQUEST"),
    ],
)
async def test_the_gateways_own_refusals_say_zero_attempts_and_who_made_them(
    upstream: ScriptedUpstream, session: aiohttp.ClientSession, path: str, token: str | None, status: int, code: str
) -> None:
    from tests.support.servers import WEB_TOKEN

    async with gateway(gateway_document(upstream.url)) as gw:
        target = URL(f"{gw.url}{path}", encoded=True)  # sent as written, not normalised by the client
        got, headers, body = await call(session, "GET", target, token=WEB_TOKEN if token else None)  # type: ignore[arg-type]
        assert (got, json.loads(body)["code"]) == (status, code)
        assert headers["X-Gateway-Attempts"] == "0" and headers["X-Request-Id"]
        assert headers["Server"] == "pmc-gateway"
        assert upstream.received == []


async def test_every_answer_says_server_pmc_gateway(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        for method, path, token in (("GET", "/v1/users/me", "client"), ("GET", "/_gateway/health", None), ("GET", "/nowhere", None), ("GET", "/_gateway/status", ADMIN_TOKEN)):
            kwargs = {} if token == "client" else {"token": token}
            _, headers, _ = await call(session, method, f"{gw.url}{path}", **kwargs)
            assert headers["Server"] == "pmc-gateway", path


async def test_a_malformed_json_body_is_refused_naming_where_without_an_upstream_call(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(upstream.url)) as gw:
        truncated = b'{"eventTypeId":"evt_demo",\n "invitee":{"name":"J"'
        status, headers, body = await call(session, "POST", f"{gw.url}/v1/bookings", data=truncated, headers={"Content-Type": "application/json"})
        error = json.loads(body)
        assert (status, error["code"]) == (400, "BAD_REQUEST") and "line 2, column" in error["message"]
        assert headers["X-Gateway-Attempts"] == "0" and upstream.received == []
        # valid JSON passes, even a number past 64 bits; another content type is not inspected
        assert (await call(session, "POST", f"{gw.url}/v1/bookings", data=b'{"n":123456789012345678901234567890}', headers={"Content-Type": "application/json"}))[0] == 200
        assert (await call(session, "POST", f"{gw.url}/v1/bookings", data=b"not json", headers={"Content-Type": "text/plain"}))[0] == 200


async def test_a_path_in_base_url_is_kept_as_a_prefix(upstream: ScriptedUpstream, session: aiohttp.ClientSession) -> None:
    async with gateway(gateway_document(f"{upstream.url}/pinmycal")) as gw:
        assert (await call(session, "GET", f"{gw.url}/v1/availability?date=2026-03-10"))[0] == 200
        assert upstream.received[-1]["raw_path"] == "/pinmycal/v1/availability?date=2026-03-10"
