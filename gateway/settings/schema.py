"""The typed, frozen configuration (SPEC §3): every section, its bounds and the rules within it."""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.core.histogram_buckets import ADDED_LATENCY_BUCKETS, SECONDS_BUCKETS
from gateway.core.proxy_url import parse_proxy

PositiveInt = Annotated[int, Field(gt=0)]


# TOML arrays arrive as lists; frozen settings keep them as tuples (items stay strictly typed).
StrTuple = Annotated[tuple[str, ...], Field(strict=False)]


NonNegativeInt = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be host:port with a port in [0, 65535] (0: any free port), got {value!r}")
    return value


def _http_url(value: str, *, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


class TlsSettings(_Section):
    cert_file: str
    key_file: str


class ServerSettings(_Section):
    listen: str = "127.0.0.1:8080"
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    admin_token_env: str = "PMC_GATEWAY_ADMIN_TOKEN"
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1_048_576
    shutdown_grace_s: Annotated[float, Field(ge=0, le=600)] = 20
    # A caller must finish a request's header block, and then its body, within these (slowloris).
    header_timeout_ms: Annotated[int, Field(ge=100, le=300_000)] = 10_000
    body_timeout_ms: Annotated[int, Field(ge=100, le=300_000)] = 10_000
    trusted_proxies: StrTuple = ()
    admin_listen: str = ""  # set: /_gateway/* is served on this address only (404 on listen)
    tls: TlsSettings | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _listen_address(value)

    @field_validator("admin_listen")
    @classmethod
    def _admin_listen(cls, value: str) -> str:
        return value and _listen_address(value)

    @property
    def admin_host(self) -> str:
        return self.admin_listen.rpartition(":")[0].strip("[]")

    @property
    def admin_port(self) -> int:
        return int(self.admin_listen.rpartition(":")[2])

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR block") from exc
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreSettings(_Section):
    url: str = "memory://"
    password_env: str = ""  # the variable holding the Redis password (AUTH / ACL); never in the url
    ca_file: str = ""  # an extra CA bundle for rediss://
    cluster: bool = False
    sentinel_master: str = ""
    sentinels: StrTuple = ()
    webhook_ack_replicas: Annotated[int, Field(ge=0, le=16)] = 0

    @field_validator("sentinels")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"each must be host:port, got {address!r}")
        return value

    @model_validator(mode="after")
    def _one_deployment(self) -> StoreSettings:
        memory = self.url.startswith("memory:")
        if self.cluster and self.sentinel_master:
            raise ValueError("two deployments at once, cluster = true and sentinel_master: set one")
        for name, value in (("cluster", self.cluster), ("sentinel_master", self.sentinel_master), ("sentinels", self.sentinels),
                            ("webhook_ack_replicas", self.webhook_ack_replicas), ("password_env", self.password_env)):
            if memory and value:
                raise ValueError(f"{name} needs a redis:// or rediss:// url; memory:// has no {name}")
        if self.sentinels and not self.sentinel_master:
            raise ValueError("sentinels needs sentinel_master")
        if "@" in self.url.split("://", 1)[-1].split("/", 1)[0] and ":" in self.url.split("://", 1)[-1].split("@", 1)[0]:
            raise ValueError("url must not carry a password (secrets never live in the file): use password_env")
        return self

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("memory", "redis", "rediss"):
            raise ValueError(f"must start with memory://, redis:// or rediss://, got {value!r}")
        return value

    @property
    def is_memory(self) -> bool:
        return self.url.startswith("memory:")


class UpstreamSettings(_Section):
    base_url: str = "https://api.pinmycal.com"
    connect_timeout_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    attempt_timeout_ms: Annotated[int, Field(ge=1, le=300_000)] = 2000
    deadline_ms: Annotated[int, Field(ge=1, le=600_000)] = 8000
    ca_file: str = ""
    proxy_url: str = ""  # empty: HTTPS_PROXY / HTTP_PROXY / NO_PROXY apply
    max_response_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 64 * 1024 * 1024

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, field="base_url")

    @field_validator("proxy_url")
    @classmethod
    def _proxy(cls, value: str) -> str:
        if not value:
            return value
        if "@" in value.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("must not carry credentials (secrets never live in the file): put them in HTTPS_PROXY")
        parse_proxy(value)
        return value

    @model_validator(mode="after")
    def _deadline_covers_an_attempt(self) -> UpstreamSettings:
        if self.deadline_ms < self.attempt_timeout_ms:
            raise ValueError(
                f"deadline_ms ({self.deadline_ms}) must be at least attempt_timeout_ms "
                f"({self.attempt_timeout_ms})"
            )
        return self


class EnvironmentSettings(_Section):
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_rotated_at: date | None = None
    rate_limit_per_minute: PositiveInt = 120
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, field="base_url")

    @field_validator("api_key_rotated_at", mode="before")
    @classmethod
    def _date(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"must be a date like 2026-10-01, got {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> EnvironmentSettings:
        if (self.api_key_env is None) == (self.api_key_file is None):
            raise ValueError("set exactly one of api_key_env or api_key_file")
        return self


class ClientSettings(_Section):
    token_sha256: str
    environments: Annotated[tuple[str, ...], Field(min_length=1, strict=False)]
    requests_per_minute: PositiveInt | None = None
    share: Annotated[float, Field(gt=0, le=1_000_000)] = 1

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be the 64 hex digits of a sha256")
        return value.lower()


class RetrySettings(_Section):
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    base_delay_ms: Annotated[int, Field(ge=0, le=60_000)] = 100
    max_delay_ms: Annotated[int, Field(ge=0, le=600_000)] = 2000
    budget_percent: Annotated[float, Field(ge=0, le=100)] = 20
    min_retries_per_second: Annotated[float, Field(ge=0, le=10_000)] = 3
    budget_window_s: Annotated[int, Field(ge=1, le=600)] = 10

    @model_validator(mode="after")
    def _ordered_delays(self) -> RetrySettings:
        if self.max_delay_ms < self.base_delay_ms:
            raise ValueError(
                f"max_delay_ms ({self.max_delay_ms}) must be at least base_delay_ms "
                f"({self.base_delay_ms})"
            )
        return self


class BreakerSettings(_Section):
    fail_max: Annotated[int, Field(ge=1, le=10_000)] = 5
    reset_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30


class BudgetSettings(_Section):
    max_wait_ms: Annotated[int, Field(ge=0, le=60_000)] = 1000
    burst: NonNegativeInt = 0  # 0: the whole per-minute limit
    fair_share: bool = True


class JobsSettings(_Section):
    max_wait_s: Annotated[float, Field(ge=0, le=3600)] = 30
    poll_interval_ms: Annotated[int, Field(ge=10, le=600_000)] = 1000
    ttl_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400


class IdempotencySettings(_Section):
    ttl_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400


ROUTE_TEMPLATE = r"^/v1/[A-Za-z0-9._~{}/-]*$"


INVALIDATION_SOURCES = ("booking",)


class ReadRouteSettings(_Section):
    """One route's shared-read cache (SPEC §3 ``[reads.routes."…"]``, §5 shared reads)."""

    fresh_s: Annotated[float, Field(ge=0, le=86400)] = 10
    stale_while_revalidate_s: Annotated[float, Field(ge=0, le=86400)] = 0
    stale_if_error_s: Annotated[float, Field(ge=0, le=7 * 86400)] = 3600
    invalidated_by: StrTuple = ("booking",)
    max_entry_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 262_144

    @field_validator("invalidated_by")
    @classmethod
    def _known_sources(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [source for source in value if source not in INVALIDATION_SOURCES]
        if unknown:
            raise ValueError(f"unknown invalidation sources {unknown}; known: {list(INVALIDATION_SOURCES)}")
        return value


class ReadsSettings(_Section):
    coalesce: bool = True
    routes: dict[Annotated[str, Field(pattern=ROUTE_TEMPLATE)], ReadRouteSettings] = Field(default_factory=dict)


class HedgingSettings(_Section):
    routes: Annotated[tuple[Annotated[str, Field(pattern=ROUTE_TEMPLATE)], ...], Field(strict=False)] = ()
    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.95
    min_delay_ms: Annotated[int, Field(ge=1, le=60_000)] = 20
    max_delay_ms: Annotated[int, Field(ge=1, le=60_000)] = 1000
    max_budget_use: Annotated[float, Field(gt=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _ordered_delays(self) -> HedgingSettings:
        if self.max_delay_ms < self.min_delay_ms:
            raise ValueError(f"max_delay_ms ({self.max_delay_ms}) must be at least min_delay_ms ({self.min_delay_ms})")
        return self


def _on_a_bucket(value_ms: float, buckets: tuple[float, ...]) -> float:
    allowed = [round(b * 1000, 3) for b in buckets]
    if round(value_ms, 3) not in allowed:
        raise ValueError(f"must be one of the histogram's bounds {allowed} (ms), got {value_ms:g}")
    return value_ms


class TelemetrySettings(_Section):
    service_name: Annotated[str, Field(min_length=1)] = "pmc-gateway"
    otlp_endpoint: str = ""
    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    prometheus: bool = True
    metrics_token_env: str = ""  # a variable holding a scrape-only token, accepted for /_gateway/metrics alone
    latency_target_ms: Annotated[float, Field(gt=0, le=60_000)] = 180
    availability_target: Annotated[float, Field(gt=0, lt=1)] = 0.9995
    latency_tail_ms: float = 1000  # end-to-end tail threshold: a bound of SECONDS_BUCKETS
    latency_tail_objective: Annotated[float, Field(gt=0, lt=1)] = 0.99
    added_latency_target_ms: float = 50  # gateway-added latency threshold: a bound of ADDED_LATENCY_BUCKETS
    added_latency_objective: Annotated[float, Field(gt=0, lt=1)] = 0.999

    @field_validator("latency_tail_ms")
    @classmethod
    def _tail_on_a_bucket(cls, value: float) -> float:
        return _on_a_bucket(value, SECONDS_BUCKETS)

    @field_validator("added_latency_target_ms")
    @classmethod
    def _added_on_a_bucket(cls, value: float) -> float:
        return _on_a_bucket(value, ADDED_LATENCY_BUCKETS)

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        return value if value == "" else _http_url(value, field="otlp_endpoint")


EVENT_TYPES = ("booking.created", "booking.rescheduled", "booking.cancelled")


class SubscriberSettings(_Section):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    url: str
    events: Annotated[tuple[str, ...], Field(min_length=1, strict=False)] = EVENT_TYPES
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, field="url")

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [event for event in value if event not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
        return value


class WebhookSettings(_Section):
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$")] = "/webhooks/pinmycal"
    secret_envs: StrTuple = ("PMC_WEBHOOK_SECRET", "PMC_WEBHOOK_SECRET_PREVIOUS")
    tolerance_s: Annotated[int, Field(ge=1, le=86400)] = 300
    dedupe_ttl_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 259200
    allow_insecure_http: bool = False
    delivery_base_delay_ms: Annotated[int, Field(ge=1, le=3_600_000)] = 1000
    delivery_max_delay_s: Annotated[float, Field(gt=0, le=86400)] = 3600
    delivery_horizon_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 86400
    subscribers: Annotated[tuple[SubscriberSettings, ...], Field(strict=False)] = ()

    @field_validator("path")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith(("/v1/", "/_gateway/")) or value in ("/v1", "/_gateway"):
            raise ValueError("must not be under /v1/ or /_gateway/")
        return value

    @model_validator(mode="after")
    def _secure_subscribers(self) -> WebhookSettings:
        names = [s.name for s in self.subscribers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"subscriber names must be unique, repeated: {duplicates}")
        return self


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    environments: Annotated[dict[str, EnvironmentSettings], Field(min_length=1)]
    clients: Annotated[dict[str, ClientSettings], Field(min_length=1)]
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    budget: BudgetSettings = BudgetSettings()
    jobs: JobsSettings = JobsSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    reads: ReadsSettings | None = None  # no [reads]: nothing coalesced or cached
    hedging: HedgingSettings | None = None  # no [hedging]: no hedges
    telemetry: TelemetrySettings = TelemetrySettings()
    webhooks: WebhookSettings = WebhookSettings()

    def base_url_of(self, environment: str) -> str:
        return self.environments[environment].base_url or self.upstream.base_url
