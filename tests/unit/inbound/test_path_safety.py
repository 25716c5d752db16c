"""Path safety (SPEC §4): what a target may not do, and that a 400 names what it refused."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.inbound.path_safety import check_target


@pytest.mark.parametrize(
    "target",
    ["/v1/users/me", "/v1/availability?date=2026-03-10&timezone=Asia/Kolkata", "/v1/bookings/bk_1/cancel", "/v1/bookings/bk%5F1"],
)
def test_ordinary_targets_pass(target: str) -> None:
    check_target(target)


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("http://evil.example/v1/x", "'http://evil.example/v1/x'"),
        ("//evil.example/v1", "origin-form"),
        ("/v1/users//me", "'/v1/users//me'"),
        ("/v1/../admin", "'..'"),
        ("/v1/%2e%2e/admin", "'%2e%2e'"),
        ("/v1/%252e%252e/admin", "'%252e%252e'"),
        ("/v1/a%2Fb", "'a%2Fb'"),
        ("/v1/a%5cb", "'a%5cb'"),
        ("/v1/a%zz", "'a%zz'"),
        ("/v1/caf\u00e9", "'\u00e9'"),
        ("/v1/a#frag", "fragment"),
        ("/v1/" + "a" * 9000, "9004 characters"),
    ],
)
def test_a_refused_target_names_what_was_refused(target: str, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_target(target)
    assert named in caught.value.message
