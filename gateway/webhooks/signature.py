"""PinmyCal webhook signatures (SPEC §7): ``X-PMC-Signature: sha256=<hex>`` where hex is
HMAC-SHA256(secret, ``<timestamp>.<raw body>``), over any configured secret (rotation),
with several comma-separated signatures allowed, and ``X-PMC-Timestamp`` within
``tolerance_s`` of now either way. Comparisons are constant-time."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from gateway.errors import InvalidSignature, StaleTimestamp

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
MAX_SIGNATURES = 8
MAX_HEADER = 1024


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def parse_signatures(header: str | None) -> list[bytes]:
    """The digests a header carries; raises ``InvalidSignature`` when missing or malformed."""
    if not header:
        raise InvalidSignature("missing X-PMC-Signature")
    if len(header) > MAX_HEADER:
        raise InvalidSignature("X-PMC-Signature is too long")
    parts = [part.strip() for part in header.split(",") if part.strip()]
    if not parts or len(parts) > MAX_SIGNATURES:
        raise InvalidSignature("X-PMC-Signature must hold 1-8 sha256=<hex> values")
    digests = []
    for part in parts:
        match = _SIGNATURE.fullmatch(part)
        if match is None:
            raise InvalidSignature("X-PMC-Signature must be sha256=<64 hex digits>")
        digests.append(bytes.fromhex(match.group(1)))
    return digests


def parse_timestamp(header: str | None) -> int:
    if not header:
        raise InvalidSignature("missing X-PMC-Timestamp")
    if not header.isascii() or not header.isdigit() or len(header) > 12:
        raise InvalidSignature("X-PMC-Timestamp must be unix seconds")
    return int(header)


def verify(
    *,
    secrets: Sequence[bytes],
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float,
    tolerance_s: int,
) -> None:
    """Return when some configured secret signed this body at an acceptable time; raise otherwise."""
    timestamp = parse_timestamp(timestamp_header)
    digests = parse_signatures(signature_header)
    signed = str(timestamp).encode() + b"." + body
    expected = [hmac.new(secret, signed, hashlib.sha256).digest() for secret in secrets]
    matched = False
    for digest in digests:
        for candidate in expected:
            matched |= hmac.compare_digest(digest, candidate)  # no early exit
    if not matched:
        raise InvalidSignature("no signature matches a configured secret")
    if abs(now - timestamp) > tolerance_s:
        raise StaleTimestamp(f"X-PMC-Timestamp is more than {tolerance_s} s from now")
