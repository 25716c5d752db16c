"""Runs the gateway: one process, or ``workers`` processes on one port (SO_REUSEPORT).

SIGTERM/SIGINT drain: readiness turns 503, the listener closes (new connections are
refused), in-flight requests finish for up to ``shutdown_grace_s``, telemetry is
flushed, exit 0. With several workers the parent forwards the signal to each one and
restarts a worker that dies unexpectedly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.app import Components, build_admin_app, build_app, build_components
from gateway.inbound.connection_guard import GuardedTCPSite
from gateway.observability import log as gateway_log
from gateway.reload import reload
from gateway.settings import Settings

log = structlog.get_logger("gateway.serve")


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.server.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # 1.0 and 1.1 handshakes are refused
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


GC_YOUNG_THRESHOLD = 5_000  # CPython's default is 700


def tune_gc() -> None:
    """Collect and freeze what start-up built, and collect the young generation less often.

    The cyclic GC's cost per request was half full collections walking the libraries, config
    and instruments that live as long as the process (``gc.freeze`` takes them out of every
    later collection), half young collections at the default threshold; with both changes it
    is a tenth, with no full-collection pause under a request (bench/README.md). Garbage in reference cycles
    lives a little longer; request objects are freed by reference counting as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _serving(_components: Components, _port: int) -> None:
    tune_gc()  # a serving process only: tests embed run_worker and keep their interpreter's defaults


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


async def run_worker(
    components: Components,
    *,
    reuse_port: bool = False,
    on_started: Callable[[Components, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    settings = components.settings
    app = build_app(components)
    runner = web.AppRunner(
        app, shutdown_timeout=settings.server.shutdown_grace_s, handle_signals=False, access_log=None
    )
    admin_runner: web.AppRunner | None = None
    try:
        await runner.setup()  # starts every resource; one that fails closes those started before it
        site = GuardedTCPSite(
            runner,
            settings.server.host,
            settings.server.port,
            reuse_port=reuse_port or None,
            ssl_context=server_ssl_context(settings),
            backlog=2048,
            header_timeout_s=settings.server.header_timeout_ms / 1000,
            make_ulid=components.ids,
        )
        await site.start()
        port = _bound_port(runner) or settings.server.port
        if settings.server.admin_listen:
            admin_runner = web.AppRunner(build_admin_app(components), handle_signals=False, access_log=None, shutdown_timeout=1)
            await admin_runner.setup()
            await web.TCPSite(admin_runner, settings.server.admin_host, settings.server.admin_port, reuse_port=reuse_port or None).start()
            components.admin_port = _bound_port(admin_runner)
            log.info("admin_listening", url=f"http://{settings.server.admin_host}:{components.admin_port}")
        loop = asyncio.get_running_loop()
        if stop is None:  # standalone: signals drive the stop; embedded: the caller's event does
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        if components.config_path is not None:
            loop.add_signal_handler(signal.SIGHUP, lambda: reload(components))
        scheme = "https" if settings.server.tls else "http"
        log.info("listening", url=f"{scheme}://{settings.server.host}:{port}", pid=os.getpid())
        if on_started:
            on_started(components, port)
        await stop.wait()
        components.draining = True
        log.info("draining", graceS=settings.server.shutdown_grace_s)
    finally:
        if admin_runner is not None:
            await admin_runner.cleanup()
        await runner.cleanup()
    log.info("stopped")


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


def serve(settings: Settings, secrets_loader: Callable[[], object], config_path: Path | None = None) -> int:
    """Run until SIGTERM; returns the exit code."""

    def components() -> Components:
        return build_components(settings, secrets_loader(), config_path=config_path)  # type: ignore[arg-type]

    if settings.server.workers == 1:
        run_async(lambda: run_worker(components(), on_started=_serving))
        return 0
    return _supervise(settings, components)


def _supervise(settings: Settings, make_components: Callable[[], Components]) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def start(index: int) -> None:
        if stopping:
            return
        pid = os.fork()
        if pid == 0:  # the worker: drop the supervisor's handlers until its own loop installs them
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            code = 0
            try:
                run_async(lambda: run_worker(make_components(), reuse_port=True, on_started=_serving))
            except BaseException:
                log.exception("worker_crashed", worker=index)
                code = 1
            finally:
                gateway_log.flush()  # os._exit skips atexit
                sys.stdout.flush()
                os._exit(code)
        children[pid] = index
        if stopping:  # the stop signal came between fork and here: this worker missed the forward
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def reload_all(signum: int, _frame: object) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, reload_all)
    for index in range(settings.server.workers):
        start(index)
    log.info("supervising", workers=settings.server.workers, pid=os.getpid())
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        exited = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, code if code > 0 else 0)
        if not stopping and exited is not None:
            log.error("worker_exited", worker=exited, code=code)
            time.sleep(0.5)
            start(exited)
    return worst
