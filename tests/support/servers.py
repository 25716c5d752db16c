"""Real servers for tests, all on 127.0.0.1 and free ports: the gateway (in-process or as a
subprocess), a scripted upstream, and a private redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway import settings as settings_module
from gateway.app import Components, build_components
from gateway.serve import run_worker

LIVE_KEY = "pmc_live_TESTKEY_live_0001"
TEST_KEY = "pmc_test_TESTKEY_test_0001"
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
WEB_TOKEN = "client-token-booking-web-0001"
OPS_TOKEN = "client-token-ops-tools-0002"
WEBHOOK_SECRET = "whsec_test_2f9c1e"
SECRET_VALUES = (LIVE_KEY, TEST_KEY, ADMIN_TOKEN, WEB_TOKEN, OPS_TOKEN, WEBHOOK_SECRET)

BASE_ENV = {
    "PMC_LIVE_API_KEY": LIVE_KEY,
    "PMC_TEST_API_KEY": TEST_KEY,
    "PMC_GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
    "PMC_WEBHOOK_SECRET": WEBHOOK_SECRET,
}


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Ask a server to stop; kill it if it has not within 10 s."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


def gateway_document(upstream_url: str, /, **overrides: Any) -> dict[str, Any]:
    """A test config: two environments, two clients, fast timeouts; ``overrides`` merge per section."""
    document: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace_s": 5},
        "store": {"url": "memory://"},
        "upstream": {"base_url": upstream_url, "connect_timeout_ms": 500, "attempt_timeout_ms": 1000, "deadline_ms": 4000},
        "environments": {
            "live": {"api_key_env": "PMC_LIVE_API_KEY", "rate_limit_per_minute": 6000},
            "test": {"api_key_env": "PMC_TEST_API_KEY", "rate_limit_per_minute": 6000},
        },
        "clients": {
            "booking-web": {"token_sha256": settings_module.token_digest(WEB_TOKEN), "environments": ["live", "test"]},
            "ops-tools": {"token_sha256": settings_module.token_digest(OPS_TOKEN), "environments": ["test"]},
        },
        "retry": {"base_delay_ms": 10, "max_delay_ms": 50},
        "webhooks": {"secret_envs": ["PMC_WEBHOOK_SECRET"], "allow_insecure_http": True},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(document.get(section), dict):
            document[section] = {**document[section], **values}
        else:
            document[section] = values
    return document


def to_toml(document: dict[str, Any]) -> str:
    """Enough TOML for test configs (tables, arrays of tables, scalars, arrays)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(i) for i in v) + "]"
        raise TypeError(v)

    lines: list[str] = []

    def table(prefix: str, data: dict[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k) if not k.replace('_', '').replace('-', '').isalnum() else k} = {value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in data.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(name, v)
            elif _is_table_array(v):
                for item in v:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{ik} = {value(iv)}" for ik, iv in item.items())
                    lines.append("")

    table("", document)
    return "\n".join(lines)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list | tuple) and bool(v) and all(isinstance(i, dict) for i in v)


@dataclass
class RunningGateway:
    url: str
    components: Components
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@contextlib.asynccontextmanager
async def gateway(document: dict[str, Any], env: dict[str, str] | None = None, **component_kwargs: Any) -> AsyncIterator[RunningGateway]:
    """Run a gateway in this event loop on a free port."""
    environ = {**BASE_ENV, **(env or {})}
    config = settings_module.parse(document)
    secrets = settings_module.resolve_secrets(config, environ)
    components = build_components(config, secrets, environ={**os.environ, **environ}, **component_kwargs)
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(components, stop=stop, on_started=lambda _c, port: started.set_result(port))
    )
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
    if task in done:
        await task
    running = RunningGateway(f"http://127.0.0.1:{started.result()}", components, stop, task)
    try:
        yield running
    finally:
        await running.close()


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    url: str
    stdout_path: Path
    stderr_path: Path
    config_path: Path

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code. A gateway that does not stop in time is made to dump
        every thread's stack (PYTHONFAULTHANDLER is on for the processes tests start) into
        the failure, so a hang in shutdown names its own line."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            tail = self.stderr_path.read_text(errors="replace")[-6000:]
            raise AssertionError(f"the gateway did not stop within {timeout} s of SIGTERM; its stacks:\n{tail}") from None

    def kill(self) -> None:
        """SIGKILL the whole process group: a supervisor's forked workers too, which would
        otherwise outlive a failed test and keep serving the shared test Redis's queues."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)


def start_gateway_process(document: dict[str, Any], tmp: Path, env: dict[str, str] | None = None, name: str = "gw") -> GatewayProcess:
    """Run ``pmc-gateway serve`` as a real process; returns once /_gateway/health answers."""
    port = free_port()
    document = {**document, "server": {**document.get("server", {}), "listen": f"127.0.0.1:{port}"}}
    config_path = tmp / f"{name}.toml"
    config_path.write_text(to_toml(document))
    stdout_path, stderr_path = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
        stdout=stdout_path.open("wb"),
        stderr=stderr_path.open("wb"),
        env={**os.environ, **BASE_ENV, "PYTHONFAULTHANDLER": "1", **(env or {})},
        start_new_session=True,  # its own process group, so kill() reaches its workers
    )
    running = GatewayProcess(process, f"http://127.0.0.1:{port}", stdout_path, stderr_path, config_path)
    wait_http(f"{running.url}/_gateway/health", process=process, what=running.output)
    return running


def wait_http(url: str, *, timeout: float = 20, process: subprocess.Popen[bytes] | None = None, what: Any = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited {process.returncode}: {what() if what else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {what() if what else ''}")


class RedisServer:
    """A private redis-server on a free port, with nothing on disk; can be killed and restarted."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pmcgw-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],  # type: ignore[list-item]
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), 1) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


@dataclass
class Step:
    """One scripted upstream answer."""

    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=lambda: {"status": "ok", "requestId": "req_up"})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering (after reading the request)


class ScriptedUpstream:
    """An upstream that answers from a script and records every request it received."""

    def __init__(self) -> None:
        self.script: deque[Step] = deque()
        self.default = Step()
        self.received: list[dict[str, Any]] = []
        self.closed_early: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    def then(self, *steps: Step) -> ScriptedUpstream:
        self.script.extend(steps)
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "raw_path": request.raw_path,
                "headers": request.headers.copy(),
                "header_list": list(request.headers.items()),
                "body": body,
                "t": time.monotonic(),
            }
        )
        step = self.script.popleft() if self.script else self.default
        if step.delay_s:
            try:
                await asyncio.sleep(step.delay_s)
            except asyncio.CancelledError:
                self.closed_early.append(request.path_qs)  # the caller closed the connection before the answer
                raise
        if step.drop:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        payload = step.body if isinstance(step.body, bytes) else json.dumps(step.body).encode()
        headers = {"Content-Type": "application/json", **step.headers}
        return web.Response(status=step.status, body=payload, headers=headers)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self.runner.addresses if isinstance(a, tuple))
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def call(session: aiohttp.ClientSession, method: str, url: str, *, token: str | None = WEB_TOKEN, **kwargs: Any) -> tuple[int, CIMultiDict[str], bytes]:
    headers = dict(kwargs.pop("headers", {}) or {})
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    async with session.request(method, url, headers=headers, **kwargs) as response:
        return response.status, response.headers.copy(), await response.read()
