"""Caller auth and the error envelope on aiohttp's mocked requests: no socket, no server."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway import errors
from gateway.inbound.caller_auth import ClientDirectory, authenticate, bearer_token
from gateway.inbound.error_envelope import count_attempts, envelope_for
from gateway.request.keys import CALLER
from gateway.request.record import RequestRecord
from gateway.settings import ClientSettings, token_digest

CLIENTS = {
    "web": ClientSettings(token_sha256=token_digest("web-token-0001"), environments=("live", "test")),
    "ops": ClientSettings(token_sha256=token_digest("ops-token-0001"), environments=("test",)),
}


def request(path: str = "/v1/users/me", **headers: str) -> tuple[web.Request, RequestRecord]:
    return make_mocked_request("GET", path, headers=headers), RequestRecord("req_1", 0.0, method="GET", path=path)


@pytest.mark.parametrize(("header", "token"), [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None), (None, None)])
def test_only_a_bearer_token_is_read(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_a_known_token_picks_its_first_environment_or_the_one_asked_for() -> None:
    directory = ClientDirectory(CLIENTS)
    web_request, record = request(Authorization="Bearer web-token-0001")
    authenticate(web_request, record, directory)
    assert (record.client, record.environment, web_request[CALLER].environment) == ("web", "live", "live")
    asked, record = request(Authorization="Bearer web-token-0001", **{"X-PMC-Environment": "test"})
    authenticate(asked, record, directory)
    assert record.environment == "test"


def test_an_unknown_token_is_401_and_an_unallowed_environment_403_naming_the_client() -> None:
    directory = ClientDirectory(CLIENTS)
    with pytest.raises(errors.Unauthenticated):
        authenticate(*request(Authorization="Bearer nobody"), directory)
    forbidden, record = request(Authorization="Bearer ops-token-0001", **{"X-PMC-Environment": "live"})
    with pytest.raises(errors.EnvironmentForbidden):
        authenticate(forbidden, record, directory)
    assert record.client == "ops"  # a 403 is this client's, in logs and metrics


def test_paths_outside_v1_need_no_client_token() -> None:
    health, record = request("/_gateway/health")
    authenticate(health, record, ClientDirectory(CLIENTS))
    assert record.client is None


def test_every_refusal_is_the_envelope_with_its_headers_and_no_traceback() -> None:
    web_request, record = request("/v1/users/me")
    refusal = errors.RateBudgetExhausted("no slot", retry_after_s=3, details={"limit": "key"})
    answer = envelope_for(refusal, web_request, record)
    count_attempts(answer, record)
    assert isinstance(answer, web.Response) and answer.body is not None
    body = json.loads(answer.body)  # type: ignore[arg-type]
    assert (answer.status, body["code"], body["limit"], body["source"], body["requestId"]) == (429, "RATE_BUDGET_EXHAUSTED", "key", "gateway", "req_1")
    assert answer.headers["Retry-After"] == "3" and answer.headers["X-Gateway-Attempts"] == "0"
    crash = envelope_for(ZeroDivisionError("boom"), web_request, record)
    assert isinstance(crash, web.Response) and isinstance(crash.body, bytes)
    assert crash.status == 500 and b"boom" not in crash.body and json.loads(crash.body)["code"] == "INTERNAL"


def test_a_followers_copy_of_a_refusal_is_the_same_refusal() -> None:
    original = errors.CircuitOpen("open", retry_after_s=5)
    again = original.again()
    assert again is not original and type(again) is errors.CircuitOpen and again.headers == original.headers
    lost = errors.UpstreamTimeout("slow", sent=True).again()
    assert type(lost) is errors.UpstreamTimeout and lost.status == 504
