from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from gateway.observability import log
from gateway.tools.sim.server import Faults, SimConfig, Simulator, start_sim
from tests.support.servers import GatewayProcess, RedisServer, ScriptedUpstream

log.configure()


@pytest.fixture
async def sim() -> AsyncIterator[tuple[str, Simulator]]:
    """The PinmyCal simulator at zero latency on a free port."""
    runner, port, simulator = await start_sim(SimConfig(port=0, faults=Faults(latency_ms=0), seed=7))
    yield f"http://127.0.0.1:{port}", simulator
    await runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    scripted = ScriptedUpstream()
    await scripted.start()
    yield scripted
    await scripted.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session (never the machine's own instance)."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    """Gateway processes a test starts; killed afterwards whatever happened."""
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.kill()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    from tests.support.redis_topologies import Cluster

    cluster = Cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[Any]:
    from tests.support.redis_topologies import SentinelSet

    topology = SentinelSet()
    yield topology
    topology.stop()


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[Any]:
    from tests.support.redis_topologies import TlsServer

    server = TlsServer()
    yield server
    server.stop()
