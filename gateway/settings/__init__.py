"""Typed, frozen configuration (SPEC §3), validated once at start-up: ``schema.py`` (every
section and its bounds), ``loading.py`` (TOML, the rules across sections, ``check-config``'s
problems as ``field.path: message``), ``secrets.py`` (what ``*_env`` and ``*_file`` name, read
from the environment the entry point hands in). ``from gateway.settings import X`` reaches all.

May import: ``core``, ``errors``.
"""

from __future__ import annotations

from gateway.settings.loading import check, load, parse, read_document, warnings
from gateway.settings.schema import (
    EVENT_TYPES,
    INVALIDATION_SOURCES,
    ROUTE_TEMPLATE,
    BreakerSettings,
    BudgetSettings,
    ClientSettings,
    EnvironmentSettings,
    HedgingSettings,
    IdempotencySettings,
    JobsSettings,
    NonNegativeInt,
    PositiveInt,
    ReadRouteSettings,
    ReadsSettings,
    RetrySettings,
    ServerSettings,
    Settings,
    StoreSettings,
    StrTuple,
    SubscriberSettings,
    TelemetrySettings,
    TlsSettings,
    UpstreamSettings,
    WebhookSettings,
)
from gateway.settings.secrets import API_KEY, Secrets, read_api_key, resolve_secrets, token_digest

__all__ = [
    "API_KEY",
    "EVENT_TYPES",
    "INVALIDATION_SOURCES",
    "ROUTE_TEMPLATE",
    "BreakerSettings",
    "BudgetSettings",
    "ClientSettings",
    "EnvironmentSettings",
    "HedgingSettings",
    "IdempotencySettings",
    "JobsSettings",
    "NonNegativeInt",
    "PositiveInt",
    "ReadRouteSettings",
    "ReadsSettings",
    "RetrySettings",
    "Secrets",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "StrTuple",
    "SubscriberSettings",
    "TelemetrySettings",
    "TlsSettings",
    "UpstreamSettings",
    "WebhookSettings",
    "check",
    "load",
    "parse",
    "read_api_key",
    "read_document",
    "resolve_secrets",
    "token_digest",
    "warnings",
]
