"""The one place that knows how to reach Redis (SPEC §3 ``[store]``, §5 "Redis deployments").

It builds the two things RedisStore talks through, for each deployment:

- ``client``: redis-py's asyncio client for everything off the request path — a plain
  ``Redis`` for one server, ``RedisCluster`` for a cluster (slots discovered from any node,
  MOVED/ASK followed, the topology refreshed when it changes), and for Sentinel the master
  that ``Sentinel.master_for`` names, re-asked after a failover.
- ``fast``: what request-path decisions (budget, pauses, idempotency, records) are sent on.
  For one server, ``RespConnection`` (resp.py: one pipelined hiredis socket, an eighth of
  redis-py's client CPU per admission; bench/README.md). For a cluster or Sentinel
  it is redis-py's own client behind the same two calls, so slot routing, redirections and
  failover are redis-py's, not a second implementation of them: one round trip per decision
  still, at redis-py's CPU cost.

TLS (``rediss://``) is always verified, with ``store.ca_file`` added to the system's CAs; the
password comes from ``store.password_env`` (an ACL user name may stand in the URL), for both.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from gateway.store.resp import Command, RespConnection, RespConnectionError, RespReplyError

WAIT_ALLOWANCE_S = 0.3


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """How to reach the store: the URL and what ``[store]`` adds to it."""

    url: str
    password: str | None = None
    ca_file: str = ""
    cluster: bool = False
    sentinel_master: str = ""
    sentinels: Sequence[str] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        return "cluster" if self.cluster else "sentinel" if self.sentinel_master else "single"


class FastPath(Protocol):
    async def call(self, *command: bytes | str | int | float) -> Any: ...
    async def pipeline(self, commands: Sequence[Command]) -> list[Any]: ...
    def reset(self) -> None: ...
    async def close(self) -> None: ...


def _tls(target: RedisTarget) -> dict[str, Any]:
    if not target.url.startswith("rediss://"):
        return {}
    return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": target.ca_file or None, "ssl_check_hostname": True}


def client(target: RedisTarget, op_timeout_s: float) -> Any:
    """redis-py's asyncio client for this deployment. No hidden retry loop: the resilient
    wrapper decides what a failure means."""
    common: dict[str, Any] = {
        # every call is bounded by op_timeout_s in RedisStore; the socket's own bound only has to
        # let a webhook's WAIT (up to 250 ms) come back
        "socket_timeout": op_timeout_s + WAIT_ALLOWANCE_S,
        "socket_connect_timeout": op_timeout_s,
        "password": target.password,
        **_tls(target),
    }
    if target.cluster:
        return RedisCluster.from_url(target.url, retry=Retry(NoBackoff(), 0), **common)
    if target.sentinel_master:
        from urllib.parse import urlsplit

        first = urlsplit(target.url)
        addresses = [(first.hostname or "127.0.0.1", first.port or 26379)]
        for extra in target.sentinels:
            host, _, port = extra.rpartition(":")
            addresses.append((host.strip("[]"), int(port)))
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves its __init__ unannotated
            addresses,
            sentinel_kwargs={"socket_timeout": op_timeout_s, "socket_connect_timeout": op_timeout_s},
            **common,
        )
        return sentinel.master_for(target.sentinel_master, retry=Retry(NoBackoff(), 0), max_connections=256)
    return Redis.from_url(target.url, retry=Retry(NoBackoff(), 0), max_connections=256, health_check_interval=0, **common)


class RedisPyFastPath:
    """The request path on redis-py's client (cluster, Sentinel), with RespConnection's errors."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def call(self, *command: bytes | str | int | float) -> Any:
        try:
            return await self._redis.execute_command(*command)
        except redis_errors.NoScriptError as exc:
            raise RespReplyError(f"NOSCRIPT {exc}") from exc
        except redis_errors.ResponseError as exc:
            raise RespReplyError(str(exc)) from exc
        except (redis_errors.RedisError, OSError) as exc:
            raise RespConnectionError(f"{type(exc).__name__}: {exc}") from exc

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except (redis_errors.RedisError, OSError) as exc:
            raise RespConnectionError(f"{type(exc).__name__}: {exc}") from exc
        return [RespReplyError(str(r)) if isinstance(r, redis_errors.ResponseError) else r for r in replies]

    def reset(self) -> None:
        return None  # redis-py replaces broken connections and follows topology itself

    async def close(self) -> None:
        return None  # the client is closed by its owner


def fast_path(target: RedisTarget, op_timeout_s: float, redis: Any) -> FastPath:
    if target.kind == "single":
        return RespConnection(target.url, op_timeout_s=op_timeout_s, password=target.password, ca_file=target.ca_file)
    return RedisPyFastPath(redis)
