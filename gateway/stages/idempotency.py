"""Replays idempotent POST/PATCH answers instead of double-booking (SPEC §5).

For a POST or PATCH with ``Idempotency-Key``, scoped per (client, environment, key):
the first final answer (2xx, or 4xx other than 409 and 429) is stored for ``ttl_s``
with a fingerprint of method, target and body. A repeat with the same fingerprint is
answered from the store with ``Idempotent-Replayed: true`` and no upstream call; one
with another fingerprint is 422; one arriving while the first is in flight is 409 —
on any replica sharing the store. Anything else (5xx, 409, 429, gateway refusals,
failures) releases the key so the caller may try again. The key is forwarded upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from gateway.request.stored import decode_answer, encode_answer
from gateway.request.types import Upstream, UpstreamRequest, UpstreamResponse
from gateway.store.protocols import IdempotencyState, IdempotencyStore

REPLAYED_HEADER = ("Idempotent-Replayed", "true")


class IdempotencyObserver(Protocol):
    def replayed(self, request: UpstreamRequest) -> None: ...


def fingerprint(request: UpstreamRequest) -> str:
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.target.encode(), request.body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def scope(request: UpstreamRequest) -> str:
    # The caller's key is hashed: any byte string stays a safe, bounded store key.
    key_hash = hashlib.sha256((request.idempotency_key or "").encode()).hexdigest()[:40]
    return f"{request.client}:{request.environment}:{key_hash}"


def is_final(status: int) -> bool:
    return 200 <= status < 300 or (400 <= status < 500 and status not in (409, 429))


def encode(response: UpstreamResponse) -> bytes:
    return encode_answer(response)


def decode(blob: bytes) -> UpstreamResponse:
    return decode_answer(blob, added=(REPLAYED_HEADER,))[0]


@dataclass(frozen=True, slots=True)
class IdempotencyStage:
    store: IdempotencyStore
    ttl_s: float
    lock_ttl_s: float  # an in-flight claim outlives the deadline, then lapses if its holder died
    observer: IdempotencyObserver
    name: str = field(default="idempotency")

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse:
        if request.idempotency_key is None or request.method not in ("POST", "PATCH"):
            return await next(request)
        key_scope, print_ = scope(request), fingerprint(request)
        entry = await self.store.idempotency_begin(key_scope, print_, self.lock_ttl_s)
        if entry.state is not IdempotencyState.NEW:
            if entry.fingerprint != print_:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different method, path or body"
                )
            if entry.state is IdempotencyState.IN_FLIGHT or entry.response is None:
                raise IdempotencyKeyInUse("a request with this Idempotency-Key is still in flight", retry_after_s=1)
            self.observer.replayed(request)
            return decode(entry.response)

        try:
            response = await next(request)
        except BaseException:
            await asyncio.shield(self.store.idempotency_release(key_scope, print_))
            raise
        if is_final(response.status):
            await self.store.idempotency_complete(key_scope, print_, encode(response), self.ttl_s)
        else:
            await self.store.idempotency_release(key_scope, print_)
        return response
