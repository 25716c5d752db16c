"""Real Redis deployments the tests start on free 127.0.0.1 ports (never the machine's own):
a 3-master Cluster, a primary + replica watched by a Sentinel, and one server with TLS (a
private CA) and a password. Each can be flushed between tests and stopped."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.nginx import private_ca
from tests.support.servers import free_port

SENTINEL_MASTER = "pmcgw"
PASSWORD = "redis-test-password-0001"


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    return binary


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if process.poll() is not None:
            raise RuntimeError(f"redis-server on {port} exited")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def free_cluster_port() -> int:
    """A free port whose cluster bus (port + 10000) is free too, so at most 55535."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class Topology:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pmcgw-topology-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        work = self.dir / str(port)
        work.mkdir(exist_ok=True)
        process = subprocess.Popen(
            [_redis_server(), *args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.processes[port] = process
        return process

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster(Topology):
    """Three masters, slots split by ``redis-cli --cluster create``."""

    def __init__(self, replicas: int = 0) -> None:
        super().__init__()
        self.ports = [free_cluster_port() for _ in range(3 * (1 + replicas))]
        for port in self.ports:
            _wait_port(port, self.spawn(
                port, "--port", str(port), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0",
            ))
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", str(replicas), "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [redis.Redis(port=p).cluster("info").get("cluster_state") for p in self.ports]
            synced = all(
                r.get("state") == "online"
                for p in self.ports
                for k, r in redis.Redis(port=p).info("replication").items()
                if k.startswith("slave") and isinstance(r, dict)
            )
            links = sum(int(redis.Redis(port=p).info("replication").get("connected_slaves", 0)) for p in self.ports)
            if states == ["ok"] * len(self.ports) and synced and links >= 3 * replicas:
                return
            time.sleep(0.2)
        raise TimeoutError("the cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[1]}/0"  # any node: the gateway discovers the rest

    def flush(self) -> None:
        for port in self.ports:
            redis.Redis(port=port).flushall()


class SentinelSet(Topology):
    """A primary, one replica, one Sentinel (quorum 1, a failover within a few seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.primary, self.replica, self.sentinel = free_port(), free_port(), free_port()
        fast_sync = ("--repl-diskless-sync-delay", "0")  # else the replica is first in sync 5 s later
        _wait_port(self.primary, self.spawn(self.primary, "--port", str(self.primary), *fast_sync))
        _wait_port(self.replica, self.spawn(self.replica, "--port", str(self.replica), "--replicaof", "127.0.0.1", str(self.primary), *fast_sync))
        config = self.dir / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )
        process = subprocess.Popen([_redis_server(), str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[self.sentinel] = process
        _wait_port(self.sentinel, process)
        self.wait_replicated()

    def wait_replicated(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                replication = redis.Redis(port=self.master_port()).info("replication")
                if replication.get("connected_slaves", 0) >= 1 and replication.get("slave0", {}).get("state") == "online":
                    return
            time.sleep(0.1)
        raise TimeoutError("the replica never caught up")

    def master_port(self) -> int:
        _, port = redis.Redis(port=self.sentinel).execute_command("SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER)
        return int(port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.sentinel}/0"

    def flush(self) -> None:
        redis.Redis(port=self.master_port()).flushall()
        time.sleep(0.05)


class TlsServer(Topology):
    """One server on TLS only, with a private CA and a password."""

    def __init__(self) -> None:
        super().__init__()
        self.ca, cert, key = private_ca(self.dir, "localhost")
        self.port = free_port()
        _wait_port(self.port, self.spawn(
            self.port, "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no", "--requirepass", PASSWORD,
        ))

    @property
    def url(self) -> str:
        return f"rediss://localhost:{self.port}/0"

    def flush(self) -> None:
        redis.Redis(host="localhost", port=self.port, ssl=True, ssl_ca_certs=str(self.ca), password=PASSWORD).flushall()
