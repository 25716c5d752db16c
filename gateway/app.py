"""The composition root: builds every shared thing once, composes the pipeline, and gives each
resource its own ``cleanup_ctx`` (a failed start closes what had started, in reverse order).

Inbound (one aiohttp middleware, gateway/inbound/middleware.py, steps in order):
    request_id → access_log (+ SERVER span) → error_envelope → path_safety → caller_auth

Outbound (stages, outermost first), for ``/v1/**``:
    jobs → idempotency → reads → retry → hedging → breaker → rate_budget → credentials → upstream
    (one CLIENT span per attempt; hedging and reads only when [hedging] / [reads] are configured)

Credentials sit innermost so no outer stage can see a key; the retry and breaker stages
treat the gateway's own refusals (rate budget, open circuit) as final.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter

from gateway.admin.key_ages import KeyAges
from gateway.admin.metrics import MetricsView
from gateway.admin.readiness import Readiness
from gateway.admin.routes import admin_routes
from gateway.admin.status import StatusBoard
from gateway.admin.triage import RecordWriter
from gateway.core.clock import Clock, SystemClock
from gateway.core.ids import MonotonicUlids
from gateway.inbound.access_log import RequestObserver
from gateway.inbound.caller_auth import ClientDirectory
from gateway.inbound.middleware import inbound_middleware
from gateway.inbound.proxy_handler import proxy_handler
from gateway.inbound.source_ip import trusted_networks
from gateway.observability.after_answer import AfterAnswer
from gateway.observability.stage_facts import StageObservers
from gateway.observability.telemetry import GaugeSources, Telemetry
from gateway.reload import reload_or_signal
from gateway.request.chain import Chain, compose
from gateway.request.record import RequestRecord
from gateway.settings import Secrets, Settings
from gateway.stages.breaker.stage import BreakerBoard, BreakerStage
from gateway.stages.credentials import CredentialSource, CredentialsStage
from gateway.stages.hedging.stage import HedgeRoom, HedgingStage
from gateway.stages.idempotency import IdempotencyStage
from gateway.stages.jobs.stage import JobsStage
from gateway.stages.rate_budget import BudgetTable, KeyUsage, RateBudgetStage
from gateway.stages.reads.invalidation import ReadInvalidator
from gateway.stages.reads.rules import ReadRules
from gateway.stages.reads.stage import ReadsStage
from gateway.stages.retry.backoff import Backoff
from gateway.stages.retry.retry_budget import RetryBudget
from gateway.stages.retry.stage import RetryStage
from gateway.store.memory import MemoryStore
from gateway.store.protocols import Store
from gateway.store.redis import RedisStore
from gateway.store.redis_connection import RedisTarget
from gateway.store.resilient import ResilientStore
from gateway.upstream.client import UpstreamClient
from gateway.webhooks.relay import WebhookRelay
from gateway.webhooks.routes import webhook_routes

log = structlog.get_logger("gateway.app")


@dataclass
class Components:
    """Everything shared by requests, built once per process. Also what a reload swaps
    (``reload.Reloadable``): the settings, the secrets, and what was built from them."""

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
    jobs: JobsStage
    reads: ReadsStage
    read_invalidator: ReadInvalidator
    records: RecordWriter
    status: StatusBoard
    metrics: MetricsView
    chain: Chain
    relay: WebhookRelay
    clients: ClientDirectory
    budget_table: BudgetTable
    key_ages: KeyAges
    readiness: Readiness
    ids: MonotonicUlids
    environ: Mapping[str, str]  # the process environment, read once: a reload resolves secrets from it
    config_path: Path | None = None
    admin_port: int | None = None  # bound port of server.admin_listen, once serving

    @property
    def draining(self) -> bool:
        return self.readiness.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.readiness.draining = value

    def swap(self, settings: Settings, secrets: Secrets) -> None:
        """A reload's new settings and secrets, into everything built from them."""
        self.settings = settings
        self.secrets = secrets
        self.credentials.replace_all(secrets.api_keys)
        self.clients.replace(settings.clients)
        self.budget_table.replace(settings.clients)
        self.relay.replace_secrets(secrets.subscriber_secrets)
        self.key_ages.learn_in_background()
        self.key_ages.warn()


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
    environ = os.environ if environ is None else environ  # read here only: every part gets it handed in
    ids = MonotonicUlids(rng, lambda: int(clock.wall() * 1000))  # every request id this process makes
    member_id = member_id or f"{socket.gethostname()}:{os.getpid()}:{ids()[-6:]}"
    store = make_store(settings, clock, member_id, secrets.redis_password)
    credentials = CredentialSource(settings.environments, secrets.api_keys, environ)
    breakers = BreakerBoard(
        store=store,
        fail_max=settings.breaker.fail_max,
        reset_timeout_s=settings.breaker.reset_timeout_s,
        probe_ttl_s=settings.upstream.attempt_timeout_ms / 1000 + 1,
        member_id=member_id,
        shared=not settings.store.is_memory,
        clock=clock,
    )
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
    key_ages = KeyAges(environments=settings.environments, credentials=credentials, store=store, clock=clock)
    telemetry = Telemetry(
        settings.telemetry,
        member_id=member_id,
        clock=clock,
        environ=environ,
        span_exporter=span_exporter,
        gauges=GaugeSources(
            breaker_states=breakers.states,
            webhook_backlog=lambda: relay.backlog,
            store_up=lambda: store.health().healthy,
            api_key_ages=key_ages.ages,
        ),
    )
    telemetry.declare_series((c, env) for c, client in settings.clients.items() for env in client.environments)
    read_rules = ReadRules.from_settings(settings.reads)
    after_answer = AfterAnswer()
    observers = StageObservers(telemetry)
    read_invalidator = ReadInvalidator(store=store, rules=read_rules, environments=tuple(settings.environments), observer=observers)
    reads = ReadsStage(store=store, rules=read_rules, invalidator=read_invalidator, clock=clock, observer=observers)
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
        attempts=observers,
    )
    budget_table = BudgetTable(settings.clients, settings.environments, settings.budget)
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
        bookings=read_invalidator,
    )
    key_usage = KeyUsage(clock)
    hedging = (
        HedgingStage(
            settings=settings.hedging,
            guards=HedgeRoom(usage=key_usage, breakers=breakers, retry_budget=retry_budget),
            clock=clock,
            observer=observers,
        )
        if settings.hedging is not None and settings.hedging.routes
        else None
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
            *([reads] if read_rules.enabled else []),
            RetryStage(
                max_attempts=settings.retry.max_attempts,
                backoff=Backoff(settings.retry.base_delay_ms / 1000, settings.retry.max_delay_ms / 1000, rng),
                budget=retry_budget,
                clock=clock,
                observer=observers,
                keys=credentials,
                circuits=breakers,
            ),
            *([hedging] if hedging is not None else []),
            BreakerStage(breakers, observers),
            RateBudgetStage(
                store=store,
                asks=budget_table,
                max_wait_s=settings.budget.max_wait_ms / 1000,
                clock=clock,
                observer=observers,
                usage=key_usage,
            ),
            CredentialsStage(credentials),
        ],
        upstream,
        upstream.name,
    )
    metrics = MetricsView(telemetry.registry)
    status = StatusBoard(
        store=store,
        clock=clock,
        member_id=member_id,
        targets=settings.telemetry,
        sections={
            "breakers": breakers.status_section,
            "budgets": budget_table.status_section,
            "store": lambda: store.health().to_json(),
            "apiKeys": key_ages.status_section,
            "webhooks": relay.status_section,
            "jobs": jobs.status_section,
            "reads": read_invalidator.status_section,
        },
        extra_snapshot=lambda: {"exposition": metrics.local().decode()},
    )
    return Components(
        environ=environ,
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
        jobs=jobs,
        reads=reads,
        read_invalidator=read_invalidator,
        records=RecordWriter(store, before_read=after_answer.drain),
        status=status,
        metrics=metrics,
        chain=chain,
        relay=relay,
        clients=ClientDirectory(settings.clients),
        budget_table=budget_table,
        key_ages=key_ages,
        readiness=Readiness(environments=settings.environments, credentials=credentials, store=store),
        ids=ids,
        config_path=config_path,
    )


CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def resource(name: str, start: Callable[[], Awaitable[None]] | None, close: Callable[[], Awaitable[None]] | None) -> CleanupContext:
    """One resource's ``cleanup_ctx``: aiohttp closes the ones that started, newest first,
    when a later one fails to start or the app stops."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        if start is not None:
            await start()
        log.debug("resource_started", resource=name)
        yield
        if close is not None:
            await close()

    return context


def lifecycle(c: Components) -> list[CleanupContext]:
    """Start order; the stop order is the reverse."""

    async def announce() -> None:
        await c.key_ages.learn()
        log.info(
            "gateway_started",
            member=c.member_id,
            store=c.store.kind,
            chain=c.chain.describe(),
            environments=sorted(c.settings.environments),
        )
        c.key_ages.warn()

    async def account_for_answers() -> None:
        c.after_answer.drain()  # every answered request is accounted for before its consumers close

    async def flush_telemetry() -> None:
        await asyncio.to_thread(c.telemetry.shutdown)  # flushes batched spans and metrics; exporters block

    return [
        resource("telemetry", None, flush_telemetry),
        resource("store", c.store.start, c.store.close),
        resource("upstream", c.upstream.start, c.upstream.close),
        resource("breakers", c.breakers.start, c.breakers.close),
        resource("records", c.records.start, c.records.close),
        resource("status", c.status.start, c.status.close),
        resource("relay", c.relay.start, c.relay.close),
        resource("reads", None, c.reads.close),
        resource("after_answer", None, account_for_answers),
        resource("announce", announce, None),
    ]


ADMIN_PREFIX = "/_gateway/"


def _application(components: Components) -> web.Application:
    settings = components.settings
    return web.Application(
        middlewares=[
            inbound_middleware(
                clock=components.clock,
                observer=RequestObserver(
                    telemetry=components.telemetry,
                    clock=components.clock,
                    after_answer=components.after_answer,
                    on_complete=(components.status.observe, proxied_only(components.records.submit)),
                ),
                directory=components.clients,
                make_ulid=components.ids,
            ),
        ],
        client_max_size=settings.server.max_body_bytes,
        # 75 s idle keep-alive (aiohttp's default is an hour): stalled callers cannot hold sockets
        handler_args={"max_field_size": 8190, "max_line_size": 8190, "max_headers": 100, "keepalive_timeout": 75},
    )


def _routes(components: Components) -> tuple[list[web.RouteDef], list[web.RouteDef]]:
    """(the callers' routes: /v1 and the webhook ingress, the operators': everything under /_gateway/)."""
    settings = components.settings
    operators = admin_routes(
        readiness=components.readiness.answer,
        status=components.status,
        records=components.records,
        metrics_text=components.metrics.group_text(components.status) if settings.telemetry.prometheus else None,
        admin_token=lambda: components.secrets.admin_token,
        reload=lambda: reload_or_signal(components),
        purge_reads=components.read_invalidator.purge if settings.reads is not None else None,
        metrics_token=lambda: components.secrets.metrics_token,
    )
    callers: list[web.RouteDef] = []
    if settings.webhooks.secret_envs:  # [] turns ingress off
        for route in webhook_routes(
            settings=settings.webhooks,
            secrets=lambda: components.secrets.webhook_secrets,
            store=components.store,
            clock=components.clock,
            telemetry=components.telemetry,
            max_body_bytes=settings.server.max_body_bytes,
            body_timeout_s=settings.server.body_timeout_ms / 1000,
            trusted=trusted_networks(settings.server.trusted_proxies),
            admin_token=lambda: components.secrets.admin_token,
            environments=tuple(settings.environments),
            reads=components.read_invalidator,
        ):
            (operators if route.path.startswith(ADMIN_PREFIX) else callers).append(route)
    callers.append(
        web.route(
            "*",
            "/v1/{tail:.*}",
            proxy_handler(
                chain=components.chain,
                clock=components.clock,
                deadline_s=settings.upstream.deadline_ms / 1000,
                max_body_bytes=settings.server.max_body_bytes,
                body_timeout_s=settings.server.body_timeout_ms / 1000,
            ),
            name="proxy",
        )
    )
    return callers, operators


def build_app(components: Components) -> web.Application:
    """The aiohttp application for one process, from its components: with ``server.admin_listen``
    set, the callers' routes only (``build_admin_app`` serves the rest on its own address)."""
    app = _application(components)
    app.cleanup_ctx.extend(lifecycle(components))
    callers, operators = _routes(components)
    app.add_routes(callers if components.settings.server.admin_listen else [*operators, *callers])
    return app


def build_admin_app(components: Components) -> web.Application:
    """``/_gateway/*`` alone, for ``server.admin_listen``; the resources belong to ``build_app``'s."""
    app = _application(components)
    app.add_routes(_routes(components)[1])
    return app


def proxied_only(submit: Callable[[RequestRecord], None]) -> Callable[[RequestRecord], None]:
    """Triage records are kept for proxied calls (those with a client), not admin or health."""

    def keep(record: RequestRecord) -> None:
        if record.proxied:
            submit(record)

    return keep
