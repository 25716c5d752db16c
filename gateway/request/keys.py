"""Typed keys for what the middlewares leave on each request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.request.record import RequestRecord


@dataclass(frozen=True, slots=True)
class Caller:
    client: str
    environment: str


RECORD = web.RequestKey("record", RequestRecord)
CALLER = web.RequestKey("caller", Caller)
