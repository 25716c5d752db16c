"""The admin token check: ``Authorization: Bearer <admin token>``, compared in constant time.
Shared by ``/_gateway/*`` and the webhook dead-letter endpoints."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.errors import AdminUnauthorized
from gateway.inbound.caller_auth import bearer_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_guard(admin_token: Callable[[], str | None], *also: Callable[[], str | None]) -> Callable[[Handler], Handler]:
    """Admits the admin token, or any token ``also`` names (the scrape-only metrics token)."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            given = (bearer_token(request.headers.get("Authorization")) or "").encode()
            accepted = [token for token in (admin_token(), *(other() for other in also)) if token]
            # every candidate is compared, so the time taken does not say which one was close
            matches = [hmac.compare_digest(given, token.encode()) for token in accepted]
            if not any(matches):
                raise AdminUnauthorized("admin endpoints need Authorization: Bearer <admin token>")
            return await handler(request)

        return guarded

    return wrap
