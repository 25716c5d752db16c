"""The one stored form of an upstream answer: idempotency replays, final job answers and shared-read
entries all keep answers in the store this way.

JSON ``{"status", "headers": [[name, value], …], "body": base64, …extra}``: the idempotency and job
records written by earlier versions have exactly this shape, so a rolling upgrade reads them.
``extra`` carries what one user keeps beside the answer (a read entry's freshness and ``Vary``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from gateway.request.types import Headers, UpstreamResponse


def encode_answer(response: UpstreamResponse, extra: Mapping[str, Any] | None = None) -> bytes:
    return orjson.dumps(
        {
            "status": response.status,
            "headers": list(response.headers),
            "body": base64.b64encode(response.body).decode(),
            **(extra or {}),
        }
    )


def decode_answer(blob: bytes | str, *, added: Headers = (), replayed: bool = True) -> tuple[UpstreamResponse, dict[str, Any]]:
    """The answer and its extra fields; ``added`` headers are appended to the stored ones."""
    stored = orjson.loads(blob)
    headers = tuple((str(k), str(v)) for k, v in stored.pop("headers"))
    response = UpstreamResponse(
        int(stored.pop("status")), (*headers, *added), base64.b64decode(stored.pop("body")), replayed=replayed
    )
    return response, stored
