"""Fuzzing the webhook verifier and its header parsers: no crash, no unsigned body accepted."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest, InvalidSignature, StaleTimestamp
from gateway.webhooks.event import parse_event
from gateway.webhooks.signature import parse_signatures, sign, verify

SECRETS = [b"whsec_current_0001", b"whsec_previous_0002"]
NOW = 1_773_135_000
header_text = st.text(alphabet=st.characters(codec="latin-1"), max_size=300)


@settings(max_examples=2000, deadline=None)
@given(timestamp=st.one_of(st.none(), header_text), signature=st.one_of(st.none(), header_text), body=st.binary(max_size=512))
def test_arbitrary_headers_never_crash_and_never_pass(timestamp: str | None, signature: str | None, body: bytes) -> None:
    try:
        verify(secrets=SECRETS, timestamp_header=timestamp, signature_header=signature, body=body, now=NOW, tolerance_s=300)
    except (InvalidSignature, StaleTimestamp):
        return
    # accepted: only possible if the header really carries a signature by one of our secrets
    assert timestamp is not None and signature is not None
    assert any(sign(secret, timestamp, body) in signature.replace(" ", "") for secret in SECRETS)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=2048), skew=st.integers(min_value=-300, max_value=300), which=st.sampled_from(SECRETS))
def test_signed_bodies_pass_and_any_change_fails(body: bytes, skew: int, which: bytes) -> None:
    timestamp = str(NOW + skew)
    header = sign(which, timestamp, body)
    verify(secrets=SECRETS, timestamp_header=timestamp, signature_header=header, body=body, now=NOW, tolerance_s=300)
    tampered = body + b" " if body else b"x"
    try:
        verify(secrets=SECRETS, timestamp_header=timestamp, signature_header=header, body=tampered, now=NOW, tolerance_s=300)
    except InvalidSignature:
        pass
    else:
        raise AssertionError("a changed body passed")
    try:
        verify(secrets=SECRETS, timestamp_header=str(NOW + skew + 1), signature_header=header, body=body, now=NOW, tolerance_s=300)
    except (InvalidSignature, StaleTimestamp):
        pass
    else:
        raise AssertionError("a changed timestamp passed")


@settings(max_examples=1000, deadline=None)
@given(header=header_text)
def test_signature_header_parser_is_total(header: str) -> None:
    try:
        digests = parse_signatures(header)
    except InvalidSignature:
        return
    assert 1 <= len(digests) <= 8 and all(len(d) == 32 for d in digests)


@settings(max_examples=1000, deadline=None)
@given(body=st.one_of(st.binary(max_size=256), st.builds(lambda d: __import__("json").dumps(d).encode(), st.dictionaries(st.text(max_size=10), st.one_of(st.none(), st.integers(), st.text(max_size=140)), max_size=4))))
def test_event_parser_is_total(body: bytes) -> None:
    try:
        event_id, event_type = parse_event(body)
    except BadRequest:
        return
    assert 1 <= len(event_id) <= 128 and 1 <= len(event_type) <= 64
