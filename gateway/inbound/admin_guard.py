"""The admin token check: ``Authorization: Bearer <admin token>``, compared in constant time.
Shared by ``/_gateway/*`` and the webhook dead-letter endpoints."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import AdminUnauthorized
from gateway.inbound.caller_auth import bearer_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_guard(admin_token: Callable[[], str | None]) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            expected = admin_token()
            given = bearer_token(request.headers.get("Authorization")) or ""
            if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
                raise AdminUnauthorized("admin endpoints need Authorization: Bearer <admin token>")
            return await handler(request)

        return guarded

    return wrap
