"""The composition root: builds every shared thing once and composes the pipeline.

Inbound (one aiohttp middleware, gateway/inbound/middleware.py, steps in order):
    request_id → access_log (+ SERVER span) → error_envelope → path_safety → caller_auth

Outbound (stages, outermost first), for ``/v1/**``:
    idempotency → retry → breaker → rate_budget → credentials → upstream (one CLIENT span per attempt)

Credentials sit innermost so no outer stage can see a key; the retry and breaker stages
treat the gateway's own refusals (rate budget, open circuit) as final.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import structlog
from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.admin.metrics import MetricsView
from gateway.admin.routes import admin_routes
from gateway.admin.status import StatusBoard
from gateway.admin.triage import RecordWriter
from gateway.core.clock import Clock, SystemClock
from gateway.core.ids import ulid
from gateway.errors import ConfigError, StoreError
from gateway.inbound.access_log import RequestObserver
from gateway.inbound.caller_auth import ClientDirectory
from gateway.inbound.middleware import inbound_middleware
from gateway.inbound.proxy_handler import proxy_handler
from gateway.inbound.source_ip import trusted_networks
from gateway.observability.after_answer import AfterAnswer
from gateway.observability.telemetry import StageObservers, Telemetry
from gateway.request.chain import Chain, compose
from gateway.settings import Secrets, Settings
from gateway.stages.breaker.stage import BreakerBoard, BreakerStage
from gateway.stages.credentials import CredentialSource, CredentialsStage
from gateway.stages.idempotency import IdempotencyStage
from gateway.stages.jobs import JobsStage
from gateway.stages.rate_budget import BudgetTable, RateBudgetStage
from gateway.stages.retry.retry_budget import RetryBudget
from gateway.stages.retry.stage import Backoff, RetryStage
from gateway.store.memory import MemoryStore
from gateway.store.protocols import Store
from gateway.store.redis import RedisStore
from gateway.store.redis_connection import RedisTarget
from gateway.store.resilient import ResilientStore
from gateway.upstream.client import UpstreamClient
from gateway.webhooks.relay import WebhookRelay
from gateway.webhooks.routes import webhook_routes

log = structlog.get_logger("gateway.app")

COMPONENTS: web.AppKey[Components] = web.AppKey("components")

KEY_AGE_WARN_DAYS = 60
KEY_AGE_ALARM_DAYS = 90


@dataclass
class Components:
    """Everything shared by requests, built once per process."""

    settings: Settings
    secrets: Secrets
    clock: Clock
    member_id: str
    store: Store
    telemetry: Telemetry
    after_answer: AfterAnswer
    credentials: CredentialSource
    upstream: UpstreamClient
    breakers: BreakerBoard
    retry_budget: RetryBudget
    records: RecordWriter
    status: StatusBoard
    metrics: MetricsView
    chain: Chain
    relay: WebhookRelay
    clients: ClientDirectory
    budget_table: BudgetTable
    config_path: Path | None = None
    key_first_seen: dict[str, float] = field(default_factory=dict)  # environment → wall seconds
    draining: bool = False
    extras: list[Callable[[], AsyncIterator[None]]] = field(default_factory=list)

    def readiness(self) -> list[str]:
        reasons = []
        if self.draining:
            reasons.append("shutting down")
        for environment in self.settings.environments:
            if not self.credentials.has_key(environment):
                reasons.append(f"no API key for environment {environment}")
        if isinstance(self.store, ResilientStore) and not self.store.healthy:
            reasons.append(f"store unreachable ({self.store.last_error}); budgets use the local share")
        return reasons

    def warn_key_age(self, environment: str, days: float) -> None:
        """Past 60 days a warning, past 90 a loud one (SPEC §3)."""
        if days > KEY_AGE_ALARM_DAYS:
            log.error("api_key_old", environment=environment, ageDays=days, rotateBy="now: older than 90 days")
        elif days > KEY_AGE_WARN_DAYS:
            log.warning("api_key_old", environment=environment, ageDays=days)

    def api_key_ages(self) -> list[tuple[str, float]]:
        ages = []
        today = datetime.fromtimestamp(self.clock.wall(), UTC).date()
        for name, env in self.settings.environments.items():
            rotated: date | None = env.api_key_rotated_at
            if rotated is None and env.api_key_file:
                try:
                    rotated = datetime.fromtimestamp(Path(env.api_key_file).stat().st_mtime, UTC).date()
                except OSError:
                    rotated = None
            if rotated is None and name in self.key_first_seen:
                rotated = datetime.fromtimestamp(self.key_first_seen[name], UTC).date()
            if rotated is not None:
                ages.append((name, float((today - rotated).days)))
        return ages

    async def learn_key_ages(self) -> None:
        """A key from ``api_key_env`` without ``api_key_rotated_at`` has no date of its own: its
        age counts from when any replica first saw it (its fingerprint, in the store)."""
        for name, env in self.settings.environments.items():
            fingerprint = self.credentials.fingerprint(name)
            if env.api_key_env and env.api_key_rotated_at is None and fingerprint:
                with contextlib.suppress(StoreError):
                    self.key_first_seen[name] = await self.store.first_seen(f"apikey:{fingerprint}", self.clock.wall())


def make_store(settings: Settings, clock: Clock, member_id: str, redis_password: str | None = None) -> Store:
    if settings.store.is_memory:
        return MemoryStore(clock)
    store = settings.store
    target = RedisTarget(store.url, redis_password, store.ca_file, store.cluster, store.sentinel_master, store.sentinels)
    return ResilientStore(
        RedisStore(target, ack_replicas=store.webhook_ack_replicas),
        member_id=member_id,
        min_members=settings.server.workers,
        clock=clock,
    )


def build_components(
    settings: Settings,
    secrets: Secrets,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    member_id: str | None = None,
    span_exporter: SpanExporter | None = None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,  # the process environment (egress proxy variables)
) -> Components:
    clock = clock or SystemClock()
    rng = rng or random.Random()
    member_id = member_id or f"{socket.gethostname()}:{os.getpid()}:{ulid()[-6:]}"
    store = make_store(settings, clock, member_id, secrets.redis_password)
    telemetry = Telemetry(settings.telemetry, member_id=member_id, span_exporter=span_exporter)
    after_answer = AfterAnswer()
    observers = StageObservers(telemetry)
    credentials = CredentialSource(settings.environments, secrets.api_keys)
    upstream = UpstreamClient(
        base_urls={name: settings.base_url_of(name) for name in settings.environments},
        connect_timeout_s=settings.upstream.connect_timeout_ms / 1000,
        attempt_timeout_s=settings.upstream.attempt_timeout_ms / 1000,
        clock=clock,
        telemetry=telemetry,
        after_answer=after_answer,
        ca_file=settings.upstream.ca_file,
        proxy_url=settings.upstream.proxy_url,
        max_response_bytes=settings.upstream.max_response_bytes,
        environ=environ,
    )
    breakers = BreakerBoard(
        store=store,
        fail_max=settings.breaker.fail_max,
        reset_timeout_s=settings.breaker.reset_timeout_s,
        probe_ttl_s=settings.upstream.attempt_timeout_ms / 1000 + 1,
        member_id=member_id,
        shared=not settings.store.is_memory,
    )
    budget_table = BudgetTable(settings)
    telemetry.declare_series((c, env) for c, client in settings.clients.items() for env in client.environments)
    retry_budget = RetryBudget(
        percent=settings.retry.budget_percent,
        min_per_second=settings.retry.min_retries_per_second,
        window_s=settings.retry.budget_window_s,
        clock=clock,
    )
    jobs = JobsStage(
        store=store,
        clock=clock,
        max_wait_s=settings.jobs.max_wait_s,
        poll_interval_s=settings.jobs.poll_interval_ms / 1000,
        ttl_s=settings.jobs.ttl_s,
        observer=observers,
    )
    chain = compose(
        [
            jobs,
            IdempotencyStage(
                store=store,
                ttl_s=settings.idempotency.ttl_s,
                lock_ttl_s=settings.upstream.deadline_ms / 1000 + 5,
                observer=observers,
            ),
            RetryStage(
                max_attempts=settings.retry.max_attempts,
                backoff=Backoff(settings.retry.base_delay_ms / 1000, settings.retry.max_delay_ms / 1000, rng),
                budget=retry_budget,
                clock=clock,
                observer=observers,
            ),
            BreakerStage(breakers),
            RateBudgetStage(
                store=store,
                asks=budget_table,
                max_wait_s=settings.budget.max_wait_ms / 1000,
                clock=clock,
                observer=observers,
            ),
            CredentialsStage(credentials),
        ],
        upstream,
        upstream.name,
    )
    records = RecordWriter(store, before_read=after_answer.drain)
    metrics = MetricsView(telemetry.registry)
    relay = WebhookRelay(
        store=store,
        settings=settings.webhooks,
        subscriber_secrets=secrets.subscriber_secrets,
        clock=clock,
        rng=rng,
        ca_file=settings.upstream.ca_file,
        proxy_url=settings.upstream.proxy_url,
        environ=environ,
    )
    components = Components(
        settings=settings,
        secrets=secrets,
        clock=clock,
        member_id=member_id,
        store=store,
        telemetry=telemetry,
        after_answer=after_answer,
        credentials=credentials,
        upstream=upstream,
        breakers=breakers,
        retry_budget=retry_budget,
        records=records,
        status=None,  # type: ignore[arg-type]  # set just below: it reads the other components
        metrics=metrics,
        chain=chain,
        relay=relay,
        clients=ClientDirectory(settings.clients),
        budget_table=budget_table,
        config_path=config_path,
    )
    components.status = StatusBoard(
        store=store,
        clock=clock,
        member_id=member_id,
        targets=settings.telemetry,
        sections={
            "breakers": lambda: breaker_section(components),
            "budgets": lambda: budget_section(settings),
            "store": lambda: store_section(components),
            "apiKeys": lambda: key_age_section(components),
            "webhooks": lambda: {"backlog": relay.backlog, "deadLetters": relay.dead_letters},
            "jobs": lambda: {"following": len(jobs.following), "polls": dict(telemetry.job_poll_counts)},
        },
        extra_snapshot=lambda: {"exposition": metrics.local().decode()},
    )
    telemetry.gauges.breaker_states = lambda: [
        (b.name.partition(":")[0], b.name.partition(":")[2], b.state) for b in breakers.breakers.values()
    ]
    telemetry.gauges.store_up = lambda: not isinstance(store, ResilientStore) or store.healthy
    telemetry.gauges.api_key_ages = components.api_key_ages
    telemetry.gauges.webhook_backlog = lambda: relay.backlog
    return components


def breaker_section(c: Components) -> list[dict[str, object]]:
    return [
        {
            "name": b.name,
            "environment": b.name.split(":", 1)[0],
            "route": b.name.split(":", 1)[1],
            "state": b.state,
            "failures": b.storage.counter,
            "retryInS": max(0.0, round(b.seconds_until_trial(), 1)) if b.state == "open" else 0,
        }
        for b in sorted(c.breakers.breakers.values(), key=lambda b: b.name)
    ]


def budget_section(settings: Settings) -> list[dict[str, object]]:
    return [
        {
            "environment": name,
            "limitPerMinute": env.rate_limit_per_minute,
            "burst": min(settings.budget.burst or env.rate_limit_per_minute, env.rate_limit_per_minute),
            "fairShare": settings.budget.fair_share,
            "clients": {
                client: c.requests_per_minute
                for client, c in settings.clients.items()
                if name in c.environments
            },
            "shares": {client: c.share for client, c in settings.clients.items() if name in c.environments},
        }
        for name, env in settings.environments.items()
    ]


def store_section(c: Components) -> dict[str, object]:
    store = c.store
    if isinstance(store, ResilientStore):
        return {"kind": store.kind, "healthy": store.healthy, "error": store.last_error, "members": store.members}
    return {"kind": store.kind, "healthy": True, "error": None, "members": 1}


def key_age_section(c: Components) -> list[dict[str, object]]:
    out = []
    for environment, days in c.api_key_ages():
        level = "alarm" if days > KEY_AGE_ALARM_DAYS else "warn" if days > KEY_AGE_WARN_DAYS else "ok"
        out.append({"environment": environment, "ageDays": days, "level": level})
    return out


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    c = app[COMPONENTS]
    await c.store.start()
    await c.upstream.start()
    await c.breakers.start()
    await c.records.start()
    await c.status.start()
    await c.relay.start()
    await c.learn_key_ages()
    log.info(
        "gateway_started",
        member=c.member_id,
        store=c.store.kind,
        chain=c.chain.describe(),
        environments=sorted(c.settings.environments),
    )
    for name, days in c.api_key_ages():
        c.warn_key_age(name, days)
    yield
    c.after_answer.drain()  # every answered request is accounted for before its consumers close
    await c.relay.close()
    await c.status.close()
    await c.records.close()
    await c.breakers.close()
    await c.upstream.close()
    await c.store.close()
    await asyncio.to_thread(c.telemetry.shutdown)  # flushes batched spans and metrics; exporters block


def build_app(components: Components) -> web.Application:
    """The aiohttp application for one process, from its components."""
    settings = components.settings
    app = web.Application(
        middlewares=[
            inbound_middleware(
                clock=components.clock,
                observer=RequestObserver(
                    telemetry=components.telemetry,
                    clock=components.clock,
                    after_answer=components.after_answer,
                    on_complete=(components.status.observe, _proxied(components.records.submit)),
                ),
                directory=components.clients,
            ),
        ],
        client_max_size=settings.server.max_body_bytes,
        # 75 s idle keep-alive (aiohttp's default is an hour): stalled callers cannot hold sockets
        handler_args={"max_field_size": 8190, "max_line_size": 8190, "max_headers": 100, "keepalive_timeout": 75},
    )
    app[COMPONENTS] = components
    app.cleanup_ctx.append(_lifecycle)
    app.add_routes(
        admin_routes(
            readiness=components.readiness,
            status=components.status,
            records=components.records,
            metrics_text=components.metrics.group_text(components.status)
            if settings.telemetry.prometheus
            else None,
            admin_token=lambda: components.secrets.admin_token,
            reload=lambda: reload_or_signal(components),
        )
    )
    if settings.webhooks.secret_envs:  # [] turns ingress off
        app.add_routes(
            webhook_routes(
                settings=settings.webhooks,
                secrets=lambda: components.secrets.webhook_secrets,
                store=components.store,
                clock=components.clock,
                telemetry=components.telemetry,
                max_body_bytes=settings.server.max_body_bytes,
                trusted=trusted_networks(settings.server.trusted_proxies),
                admin_token=lambda: components.secrets.admin_token,
                environments=tuple(settings.environments),
            )
        )
    app.router.add_route(
        "*",
        "/v1/{tail:.*}",
        proxy_handler(
            chain=components.chain,
            clock=components.clock,
            deadline_s=settings.upstream.deadline_ms / 1000,
            max_body_bytes=settings.server.max_body_bytes,
        ),
        name="proxy",
    )
    return app


def reload_or_signal(components: Components) -> tuple[int, dict[str, object]]:
    """One worker reloads itself; with several, validate here, then the supervisor signals all."""
    from gateway import reload as reloading

    if components.settings.server.workers == 1 or components.config_path is None:
        result = reloading.reload(components)
        return (200 if result.applied else 422), result.to_json()
    try:
        reloading.validate(components.config_path)
    except ConfigError as exc:
        return 422, {"status": "refused", "problems": exc.problems, "needsRestart": []}
    os.kill(os.getppid(), signal.SIGHUP)
    return 202, {"status": "accepted", "problems": [], "needsRestart": [], "workers": components.settings.server.workers}


def _proxied(submit: Callable[..., None]) -> Callable[..., None]:
    def keep(record):  # type: ignore[no-untyped-def]
        if record.client is not None:
            submit(record)

    return keep
