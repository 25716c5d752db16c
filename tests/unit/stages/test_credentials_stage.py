"""Credential injection and rotation through the retry and credentials stages, against a fake
terminal that accepts only the key currently in the file: the key is injected innermost, a
rotated key is re-read after a 401 INVALID_TOKEN and the call goes once more, and a 401 with the
same key is the caller's answer."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from gateway.core.clock import ManualClock
from gateway.request.chain import compose
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.settings import EnvironmentSettings
from gateway.stages.credentials import CredentialSource, CredentialsStage
from gateway.stages.retry.backoff import Backoff
from gateway.stages.retry.retry_budget import RetryBudget
from gateway.stages.retry.stage import RetryStage
from tests.support.fakes import make_request
from tests.unit.stages.test_retry_stage import Notes

OLD, NEW = "pmc_live_old_key_1", "pmc_live_new_key_2"


def authorization_of(request: UpstreamRequest) -> str | None:
    return next((value for name, value in request.headers if name.lower() == "authorization"), None)


class KeyChecker:
    """The upstream: 200 for the key in ``accepts``, else 401 INVALID_TOKEN; notes what it saw."""

    def __init__(self, accepts: str) -> None:
        self.accepts = accepts
        self.seen: list[str | None] = []

    async def __call__(self, attempt: UpstreamRequest) -> UpstreamResponse:
        authorization = authorization_of(attempt)
        self.seen.append(authorization)
        if authorization == f"Bearer {self.accepts}":
            return UpstreamResponse(200, (), b"{}")
        return UpstreamResponse(401, (), json.dumps({"code": "INVALID_TOKEN"}).encode())


def pipeline(tmp_path: Path, clock: ManualClock, notes: Notes, upstream: KeyChecker) -> tuple[object, CredentialSource, Path]:
    key_file = tmp_path / "live.key"
    key_file.write_text(OLD)
    source = CredentialSource({"live": EnvironmentSettings(api_key_file=str(key_file))}, {"live": OLD})
    budget = RetryBudget(percent=0, min_per_second=0, window_s=10, clock=clock)  # no retry budget at all
    retry = RetryStage(3, Backoff(0.1, 1.0, random.Random(1)), budget, clock, notes, keys=source)
    return compose([retry, CredentialsStage(source)], upstream, "fake"), source, key_file


async def test_the_key_is_injected_innermost(tmp_path: Path) -> None:
    clock, notes, upstream = ManualClock(), Notes(), KeyChecker(accepts=OLD)
    chain, _, _ = pipeline(tmp_path, clock, notes, upstream)
    assert (await chain(make_request(clock))).status == 200  # type: ignore[operator]
    assert upstream.seen == [f"Bearer {OLD}"] and authorization_of(make_request(clock)) is None


async def test_a_rotated_key_is_reread_and_the_call_goes_once_more(tmp_path: Path) -> None:
    clock, notes, upstream = ManualClock(), Notes(), KeyChecker(accepts=NEW)
    chain, source, key_file = pipeline(tmp_path, clock, notes, upstream)
    key_file.write_text(NEW)  # rotated at the source; this process still holds the old key
    assert (await chain(make_request(clock))).status == 200  # type: ignore[operator]
    assert upstream.seen == [f"Bearer {OLD}", f"Bearer {NEW}"]
    assert notes.retries == ["credentials_rotated"] and clock.slept == [0.0]  # outside the (empty) retry budget
    assert source.authorization("live") == f"Bearer {NEW}"


async def test_concurrent_callers_that_met_the_old_key_all_go_once_more(tmp_path: Path) -> None:
    clock, notes, upstream = ManualClock(), Notes(), KeyChecker(accepts=NEW)
    chain, _, key_file = pipeline(tmp_path, clock, notes, upstream)
    key_file.write_text(NEW)
    answers = await asyncio.gather(*(chain(make_request(clock)) for _ in range(3)))  # type: ignore[operator]
    assert [a.status for a in answers] == [200, 200, 200]
    assert notes.retries == ["credentials_rotated"] * 3


async def test_a_401_with_an_unchanged_key_is_the_callers_answer(tmp_path: Path) -> None:
    clock, notes, upstream = ManualClock(), Notes(), KeyChecker(accepts="pmc_live_other_key")
    chain, _, _ = pipeline(tmp_path, clock, notes, upstream)
    assert (await chain(make_request(clock))).status == 401  # type: ignore[operator]
    assert upstream.seen == [f"Bearer {OLD}"] and notes.retries == []


async def test_only_one_extra_try_even_if_the_key_keeps_changing(tmp_path: Path) -> None:
    clock, notes, upstream = ManualClock(), Notes(), KeyChecker(accepts="pmc_live_never_matches")
    chain, source, key_file = pipeline(tmp_path, clock, notes, upstream)
    key_file.write_text(NEW)
    assert (await chain(make_request(clock))).status == 401  # type: ignore[operator]
    assert len(upstream.seen) == 2 and notes.retries == ["credentials_rotated"]
    assert source.generation("live") == 1
