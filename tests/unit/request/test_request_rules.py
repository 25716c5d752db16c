"""The request's pure rules, no socket: route templates, which headers cross, the stored-answer
codec shared by idempotency, jobs and the read cache, and a JSON body's check."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.request.body import check_json
from gateway.request.headers import request_headers, response_headers
from gateway.request.routes import route_template
from gateway.request.stored import decode_answer, encode_answer
from gateway.request.types import UpstreamResponse


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/users/me", "/v1/users/me"),
        ("/v1/availability?eventTypeId=evt_demo", "/v1/availability"),
        ("/v1/bookings/bk_1027", "/v1/bookings/{id}"),
        ("/v1/bookings/bk_1027/cancel", "/v1/bookings/{id}/cancel"),
        ("/v1/jobs/job_4421", "/v1/jobs/{id}"),
        ("/v1/secret-admin-thing/1", "/v1/{other}"),  # unknown resources fold: no label explosion
        ("/v2/users", "/v1/{other}"),
    ],
)
def test_route_templates_name_a_path_without_its_ids(path: str, template: str) -> None:
    assert route_template(path) == template


def test_hop_by_hop_and_the_callers_credentials_never_cross() -> None:
    forwarded = request_headers(
        [("Authorization", "Bearer client"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"), ("Host", "gw"),
         ("X-PMC-Environment", "test"), ("Accept", "application/json"), ("Idempotency-Key", "k")]
    )
    assert forwarded == (("Accept", "application/json"), ("Idempotency-Key", "k"))
    back = response_headers([("Content-Length", "5"), ("Server", "nginx"), ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
    assert back == (("Content-Type", "application/json"),)
    assert ("Content-Length", "5") in response_headers([("Content-Length", "5")], head=True)  # a HEAD keeps its length


def test_a_stored_answer_comes_back_as_it_went_in_plus_the_headers_asked_for() -> None:
    answer = UpstreamResponse(201, (("Content-Type", "application/json"), ("X-A", "1")), b'{"bookingId":"bk_1"}\x00\xff')
    blob = encode_answer(answer, {"freshS": 10})
    back, extra = decode_answer(blob, added=(("Idempotent-Replayed", "true"),))
    assert (back.status, back.body, back.replayed) == (201, answer.body, True)
    assert back.headers == (*answer.headers, ("Idempotent-Replayed", "true")) and extra == {"freshS": 10}


def test_records_written_before_the_shared_codec_still_read() -> None:
    """A rolling upgrade: json.dumps' spacing from the old idempotency and job codecs."""
    old = b'{"status": 200, "headers": [["Content-Type", "application/json"]], "body": "e30="}'
    back, extra = decode_answer(old)
    assert (back.status, back.body, extra) == (200, b"{}", {})


@pytest.mark.parametrize(
    ("body", "content_type", "refused"),
    [
        (b'{"a": 1}', "application/json", False),
        (b'{"a": 1', "application/json; charset=utf-8", True),
        (b"[1, 2,]", "application/vnd.api+json", True),
        (b"not json", "text/plain", False),
        (b"", "application/json", False),
        (b'{"n": 123456789012345678901234567890}', "application/json", False),
        (b"\xff\xfe", "application/json", True),
    ],
)
def test_a_json_body_must_parse_and_a_refusal_says_where(body: bytes, content_type: str, refused: bool) -> None:
    if not refused:
        check_json(body, content_type)
        return
    with pytest.raises(BadRequest) as caught:
        check_json(body, content_type)
    assert "line" in caught.value.message or "UTF-8" in caught.value.message
