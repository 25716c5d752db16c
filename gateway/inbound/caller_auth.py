"""Authenticates internal callers on ``/v1/`` by the sha256 of their token (SPEC §4) and
picks the environment: ``X-PMC-Environment`` if given and allowed, else the client's first."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from aiohttp import web

from gateway.errors import EnvironmentForbidden, Unauthenticated
from gateway.request.keys import CALLER, Caller
from gateway.request.record import RequestRecord
from gateway.settings import ClientSettings


class ClientDirectory:
    """Finds a client by token in constant time over all clients (no early exit)."""

    def __init__(self, clients: Mapping[str, ClientSettings]) -> None:
        self.replace(clients)

    def replace(self, clients: Mapping[str, ClientSettings]) -> None:
        """Swap the whole table at once (reload): a lookup sees the old or the new, never a mix."""
        self._clients = [(name, bytes.fromhex(c.token_sha256), c.environments) for name, c in clients.items()]

    def find(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, expected, environments in self._clients:
            if hmac.compare_digest(digest, expected):
                found = (name, environments)
        return found


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate(request: web.Request, record: RequestRecord, directory: ClientDirectory, prefix: str = "/v1/") -> None:
    """On ``/v1/``: the caller and environment, or ``Unauthenticated``/``EnvironmentForbidden``."""
    if not request.raw_path.startswith(prefix):
        return
    token = bearer_token(request.headers.get("Authorization"))
    found = directory.find(token) if token else None
    if found is None:
        raise Unauthenticated("missing or unknown client token")
    client, environments = found
    record.client = client  # known from here: a 403 below is this client's, in logs and metrics
    requested = request.headers.get("X-PMC-Environment")
    environment = environments[0] if requested is None else requested
    if environment not in environments:
        raise EnvironmentForbidden(f"client {client!r} may not use environment {environment[:64]!r}")
    record.client, record.environment = client, environment
    request[CALLER] = Caller(client, environment)
