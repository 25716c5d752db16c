"""The values that flow through the outbound chain. Frozen: a stage changes a request
with ``dataclasses.replace``, so what one stage saw cannot change under another."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.json_bytes import json_object
from gateway.request.record import RequestRecord

Headers = tuple[tuple[str, str], ...]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    method: str
    target: str  # raw path and query, already checked by path safety
    route: str  # template, e.g. /v1/bookings/{id}
    headers: Headers  # end-to-end headers to forward; never the caller's Authorization
    body: bytes
    client: str
    environment: str
    request_id: str
    deadline: float  # monotonic seconds
    record: RequestRecord
    idempotency_key: str | None = None
    attempt: int = 1
    delay_before_s: float = 0.0
    hedge: bool = False  # a second, concurrent try of the same attempt (stages/hedging)
    follow: bool = False  # a poll the gateway makes while following a job (not an attempt of this request's own)

    # Explicit copies for the per-attempt changes: dataclasses.replace introspects the
    # fields on every call, which showed up in the request path's profile.
    def for_attempt(self, attempt: int, delay_before_s: float) -> UpstreamRequest:
        return UpstreamRequest(
            method=self.method, target=self.target, route=self.route, headers=self.headers, body=self.body,
            client=self.client, environment=self.environment, request_id=self.request_id, deadline=self.deadline,
            record=self.record, idempotency_key=self.idempotency_key, attempt=attempt, delay_before_s=delay_before_s,
            follow=self.follow,
        )

    def with_headers(self, headers: Headers) -> UpstreamRequest:
        return UpstreamRequest(
            method=self.method, target=self.target, route=self.route, headers=headers, body=self.body,
            client=self.client, environment=self.environment, request_id=self.request_id, deadline=self.deadline,
            record=self.record, idempotency_key=self.idempotency_key, attempt=self.attempt,
            delay_before_s=self.delay_before_s, hedge=self.hedge, follow=self.follow,
        )

    def as_hedge(self, delay_before_s: float) -> UpstreamRequest:
        return UpstreamRequest(
            method=self.method, target=self.target, route=self.route, headers=self.headers, body=self.body,
            client=self.client, environment=self.environment, request_id=self.request_id, deadline=self.deadline,
            record=self.record, idempotency_key=self.idempotency_key, attempt=self.attempt,
            delay_before_s=delay_before_s, hedge=True, follow=self.follow,
        )

    @property
    def idempotent(self) -> bool:
        """Safe to send twice: by method, or by an Idempotency-Key the upstream honours."""
        return self.method in IDEMPOTENT_METHODS or (
            self.idempotency_key is not None and self.method in ("POST", "PATCH")
        )


_UNPARSED: Any = object()


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    headers: Headers  # end-to-end headers from the upstream
    body: bytes
    replayed: bool = False
    _payload: Any = field(default=_UNPARSED, init=False, compare=False, repr=False)

    def payload(self) -> dict[str, Any] | None:
        """The body as a JSON object (None when it is not one), parsed once whoever asks:
        the jobs stage, the credentials check and the triage record all read this."""
        if self._payload is _UNPARSED:
            object.__setattr__(self, "_payload", json_object(self.body))
        return self._payload  # type: ignore[no-any-return]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


Upstream = Callable[[UpstreamRequest], Awaitable[UpstreamResponse]]


class Stage(Protocol):
    """One outbound concern: takes the request and the rest of the chain."""

    @property
    def name(self) -> str: ...

    async def __call__(self, request: UpstreamRequest, next: Upstream) -> UpstreamResponse: ...
