"""``redis://``: the store every worker and replica shares.

Every decision on the request path is one round trip: a Lua script (``redis_scripts/``)
or a pipeline. Each call has a tight timeout and any failure becomes ``StoreError``.
Keys live under ``pmcgw:`` and carry hash tags (``{live}``) so the keys one script
touches sit in one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any

from redis import RedisError
from redis.commands.core import AsyncScript

from gateway.errors import ReplicasBehind, StoreError
from gateway.store import redis_connection, rolling_budget
from gateway.store.protocols import (
    Admission,
    BreakerTransition,
    BudgetAsk,
    IdempotencyEntry,
    IdempotencyState,
    ReadLookup,
    StoreHealth,
)
from gateway.store.redis_connection import FastPath, RedisTarget
from gateway.store.resp import Command, RespConnectionError, RespReplyError

PREFIX = "pmcgw"
_SCRIPTS = Path(__file__).with_name("redis_scripts")


def budget_log_key(key: str) -> str:
    return f"{PREFIX}:{{{key}}}:budget:log"


def budget_state_key(key: str) -> str:
    return f"{PREFIX}:{{{key}}}:budget"


def idempotency_key(scope: str) -> str:
    return f"{PREFIX}:{{idem:{scope}}}"


def probe_key(name: str) -> str:
    return f"{PREFIX}:{{breaker:{name}}}:probe"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:{{job:{job_id}}}"


def timeline_key(key: str) -> str:
    return f"{PREFIX}:timeline:{key}"


def record_key(request_id: str) -> str:
    return f"{PREFIX}:record:{request_id}"


def read_scope_tag(scope: str) -> str:
    """A scope's keys share one hash tag (one Cluster slot: its scripts touch them together); the
    scope is hashed because a route template's ``{id}`` would end a tag early."""
    return f"{PREFIX}:{{rd:{hashlib.sha1(scope.encode()).hexdigest()[:16]}}}"


def read_keys(scope: str, key: str, generation: int, leader: str = "") -> dict[str, str]:
    tag = read_scope_tag(scope)
    return {
        "generation": f"{tag}:gen",
        "entry": f"{tag}:e:{key}",
        "index": f"{tag}:idx",
        "claim": f"{tag}:f:{generation}:{key}",
        "answer": f"{tag}:a:{leader}",
    }


FIRST_SEEN_TTL_S = 400 * 86400  # past the 90-day alarm with room: an unrotated key stays known


def first_seen_key(name: str) -> str:
    return f"{PREFIX}:seen:{name}"


def snapshot_key(member: str) -> str:
    return f"{PREFIX}:{{snap}}:{member}"  # one slot: they are read together (MGET)


def webhook_seen_key(event_id: str) -> str:
    return f"{PREFIX}:{{wh}}:seen:{event_id}"


WEBHOOK_EVENTS = f"{PREFIX}:{{wh}}:events"
WEBHOOK_DUE = f"{PREFIX}:{{wh}}:due"
WEBHOOK_DEAD = f"{PREFIX}:{{wh}}:dead"
BREAKERS_KEY = f"{PREFIX}:breakers"
WEBHOOK_WAIT_MS = 250  # SPEC §3 webhook_ack_replicas: at most this long for the replicas
MEMBERS_KEY = f"{PREFIX}:members"


class _NotStarted:
    async def call(self, *command: bytes | str | int | float) -> Any:
        raise RespConnectionError("redis store not started")

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        raise RespConnectionError("redis store not started")

    def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisStore:
    """Request-path calls (budget, pauses, idempotency, records) go through one pipelined
    ``RespConnection`` (see resp.py for why); everything else through redis-py."""

    kind = "redis"

    def __init__(self, target: RedisTarget | str, *, op_timeout_s: float = 0.25, ack_replicas: int = 0) -> None:
        self._target = target if isinstance(target, RedisTarget) else RedisTarget(target)
        self._op_timeout_s = op_timeout_s
        self._ack_replicas = ack_replicas
        self._node_clients: dict[str, Any] = {}  # cluster + webhook_ack_replicas: one client per slot owner
        self._redis: Any = None
        self._scripts: dict[str, AsyncScript] = {}
        self._fast: FastPath = _NotStarted()
        self._lua = {path.stem: path.read_bytes() for path in _SCRIPTS.glob("*.lua")}
        self._sha = {name: hashlib.sha1(source).hexdigest() for name, source in self._lua.items()}

    async def start(self) -> None:
        self._redis = redis_connection.client(self._target, self._op_timeout_s)
        self._fast = redis_connection.fast_path(self._target, self._op_timeout_s, self._redis)
        for script in _SCRIPTS.glob("*.lua"):
            self._scripts[script.stem] = self._redis.register_script(script.read_text())

    def health(self) -> StoreHealth:
        """Bare, a Redis store cannot tell; the resilient wrapper it runs in can."""
        return StoreHealth(self.kind, True, None, 1)

    async def close(self) -> None:
        await self._fast.close()
        for owner in self._node_clients.values():
            await owner.aclose()
        self._node_clients.clear()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def client(self) -> Any:
        if self._redis is None:
            raise StoreError("redis store not started")
        return self._redis

    async def _run(self, awaitable: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._op_timeout_s):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[bytes | str | int | float]) -> Any:
        return await self._run(self._scripts[name](keys=list(keys), args=list(args)))

    async def _fast_script(self, name: str, keys: Sequence[str], args: Sequence[bytes | str | int | float]) -> Any:
        """A script on the request path, on the pipelined connection (loaded on first NOSCRIPT)."""
        try:
            try:
                return await self._fast.call("EVALSHA", self._sha[name], len(keys), *keys, *args)
            except RespReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                return await self._fast.call("EVAL", self._lua[name], len(keys), *keys, *args)
        except (RespConnectionError, RespReplyError, OSError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> None:
        await self._run(self.client.ping())

    async def reset(self) -> None:
        """Drop idle pooled connections. Across an outage they point at a server that is gone;
        left in the pool, each fails once in a request and marks the store down again."""
        self._fast.reset()
        pool = getattr(self._redis, "connection_pool", None)  # a cluster client keeps one per node itself
        if pool is not None:
            await pool.disconnect(inuse_connections=False)

    # -- rate budget --------------------------------------------------------
    async def admit(self, ask: BudgetAsk, *, first: bool) -> Admission:
        granted, wait_us, limit, used, seq, now_us = await self._fast_script(
            "budget_admit",
            [budget_log_key(ask.key), budget_state_key(ask.key)],
            [
                ask.client, ask.limit, ask.burst, repr(ask.share), ask.client_limit, int(ask.fair_share),
                int(ask.window_s * 1e6), int(ask.interval_s * 1e6), int(first),
                int(rolling_budget.MIN_AGE_S * 1e6), repr(rolling_budget.DEMAND_HEADROOM),
            ],
        )
        reason = limit.decode() if isinstance(limit, bytes) else str(limit)
        return Admission(bool(granted), int(wait_us) / 1e6, reason, int(used), int(seq), int(now_us) / 1e6)

    async def pause(self, key: str, seconds: float) -> None:
        await self._fast_script("budget_pause", [budget_state_key(key)], [int(seconds * 1e6)])

    async def rate_limit_seen(self, key: str, remaining: int, reset_s: float, seq: int) -> None:
        await self._fast_script(
            "budget_rate_limit",
            [budget_state_key(key)],
            [remaining, int(reset_s * 1e6), seq, int(rolling_budget.NEXT_WINDOW_S * 1e6)],
        )

    # -- breaker ------------------------------------------------------------
    async def publish_breaker(self, name: str, transition: BreakerTransition) -> None:
        await self._script(
            "breaker_publish",
            [BREAKERS_KEY],
            [name, repr(transition.at), transition.state, transition.origin],
        )

    async def breaker_transitions(self) -> dict[str, BreakerTransition]:
        raw = await self._run(self.client.hgetall(BREAKERS_KEY))
        transitions = {}
        for name, value in raw.items():
            at, state, origin = value.decode().split("|", 2)
            transitions[name.decode()] = BreakerTransition(state, float(at), origin)
        return transitions

    async def claim_probe(self, name: str, ttl_s: float, token: str) -> bool:
        return bool(await self._run(self.client.set(probe_key(name), token, nx=True, px=int(ttl_s * 1000))))

    async def release_probe(self, name: str, token: str) -> None:
        await self._script("probe_release", [probe_key(name)], [token])

    # -- idempotency --------------------------------------------------------
    async def idempotency_begin(self, scope: str, fingerprint: str, lock_ttl_s: float) -> IdempotencyEntry:
        state, stored_fp, response = await self._fast_script(
            "idempotency_begin", [idempotency_key(scope)], [fingerprint, int(lock_ttl_s * 1000)]
        )
        state = state.decode() if isinstance(state, bytes) else state
        stored_fp = stored_fp.decode() if isinstance(stored_fp, bytes) else (stored_fp or "")
        return IdempotencyEntry(IdempotencyState(state), stored_fp, response or None)

    async def idempotency_complete(self, scope: str, fingerprint: str, response: bytes, ttl_s: float) -> None:
        await self._fast_script(
            "idempotency_complete", [idempotency_key(scope)], [fingerprint, response, int(ttl_s * 1000)]
        )

    async def idempotency_release(self, scope: str, fingerprint: str) -> None:
        await self._fast_script("idempotency_release", [idempotency_key(scope)], [fingerprint])

    # -- async jobs and timelines ---------------------------------------------
    async def job_update(self, job_id: str, fields: Mapping[str, str], polls: int, ttl_s: float) -> None:
        flat = [part for pair in fields.items() for part in pair]
        await self._script("job_update", [job_key(job_id)], [polls, int(ttl_s * 1000), *flat])

    async def job_get(self, job_id: str) -> dict[str, str] | None:
        raw = await self._run(self.client.hgetall(job_key(job_id)))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    async def job_poll_claim(self, job_id: str, interval_s: float) -> bool:
        return bool(await self._run(self.client.set(f"{job_key(job_id)}:poll", b"1", nx=True, px=max(1, int(interval_s * 1000)))))

    async def timeline_add(self, key: str, entry: bytes, ttl_s: float) -> None:
        pipe = self.client.pipeline(transaction=False)  # one key each: a cluster runs them on its node
        pipe.rpush(timeline_key(key), entry)
        pipe.ltrim(timeline_key(key), -100, -1)
        pipe.expire(timeline_key(key), int(ttl_s))
        await self._run(pipe.execute())

    async def timeline(self, key: str) -> list[bytes]:
        return [bytes(e) for e in await self._run(self.client.lrange(timeline_key(key), 0, -1))]

    # -- shared reads -------------------------------------------------------
    async def read_lookup(self, scope: str, key: str) -> ReadLookup:
        keys = read_keys(scope, key, 0)
        reply = await self._fast_script("read_lookup", [keys["generation"], keys["entry"]], [])
        if int(reply[1]) != 1:
            return ReadLookup(int(reply[0]), None, 0.0)
        return ReadLookup(int(reply[0]), bytes(reply[2]), max(0.0, float(reply[3])))

    async def read_claim(self, scope: str, key: str, generation: int, leader: str, ttl_s: float) -> str | None:
        claim = read_keys(scope, key, generation)["claim"]
        holder = await self._fast_script("read_claim", [claim], [leader, max(1, int(ttl_s * 1000))])
        holder = holder.decode() if isinstance(holder, bytes) else str(holder or "")
        return holder or None

    async def read_publish(
        self, scope: str, key: str, generation: int, leader: str, answer: bytes, answer_ttl_s: float,
        entry: bytes | None, entry_ttl_s: float,
    ) -> bool:
        keys = read_keys(scope, key, generation, leader)
        stored = await self._fast_script(
            "read_publish",
            [keys["generation"], keys["entry"], keys["index"], keys["claim"], keys["answer"]],
            [generation, leader, answer, max(1, int(answer_ttl_s * 1000)), entry or b"", max(1, int(entry_ttl_s * 1000))],
        )
        return bool(stored)

    async def read_answer(self, scope: str, key: str, generation: int, leader: str) -> tuple[bytes | None, bool]:
        keys = read_keys(scope, key, generation, leader)
        try:
            answer, holder = await self._fast.call("MGET", keys["answer"], keys["claim"])
        except (RespConnectionError, RespReplyError, OSError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        holding = holder is not None and bytes(holder).decode() == leader
        return (bytes(answer) if answer is not None else None), holding

    async def read_invalidate(self, scopes: Sequence[str]) -> None:
        if not scopes:
            return
        try:  # one key each: a cluster sends each INCR to its slot's node
            replies = await self._fast.pipeline([("INCR", f"{read_scope_tag(scope)}:gen") for scope in scopes])
        except (RespConnectionError, OSError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        errors = [reply for reply in replies if isinstance(reply, RespReplyError)]
        if errors:
            raise StoreError(f"redis: {errors[0]}")

    async def read_purge(self, scopes: Sequence[str]) -> int:
        dropped = 0
        for scope in scopes:
            keys = read_keys(scope, "", 0)
            dropped += int(await self._fast_script("read_purge", [keys["generation"], keys["index"]], []))
        return dropped

    # -- triage records -----------------------------------------------------
    async def put_records(self, records: Sequence[tuple[str, bytes]], ttl_s: float) -> None:
        try:
            replies = await self._fast.pipeline(
                [("SET", record_key(request_id), payload, "EX", int(ttl_s)) for request_id, payload in records]
            )
        except (RespConnectionError, OSError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        errors = [reply for reply in replies if isinstance(reply, RespReplyError)]
        if errors:
            raise StoreError(f"redis: {errors[0]}")

    async def get_record(self, request_id: str) -> bytes | None:
        value = await self._run(self.client.get(record_key(request_id)))
        return bytes(value) if value is not None else None

    # -- membership ---------------------------------------------------------
    async def heartbeat(self, member: str, ttl_s: float) -> int:
        now = time.time()
        pipe = self.client.pipeline(transaction=False)  # one key each: a cluster runs them on its node
        pipe.zadd(MEMBERS_KEY, {member: now})
        pipe.zremrangebyscore(MEMBERS_KEY, "-inf", now - ttl_s)
        pipe.zcard(MEMBERS_KEY)
        results = await self._run(pipe.execute())
        return int(results[-1])

    async def first_seen(self, name: str, now_wall: float) -> float:
        pipe = self.client.pipeline(transaction=False)  # one key each: a cluster runs them on its node
        pipe.set(first_seen_key(name), repr(now_wall), nx=True, ex=FIRST_SEEN_TTL_S)
        pipe.get(first_seen_key(name))
        _, seen = await self._run(pipe.execute())
        return float(seen)

    async def put_snapshot(self, member: str, blob: bytes, ttl_s: float) -> None:
        await self._run(self.client.set(snapshot_key(member), blob, px=int(ttl_s * 1000)))

    async def snapshots(self) -> list[bytes]:
        members = await self._run(self.client.zrange(MEMBERS_KEY, 0, -1))
        if not members:
            return []
        blobs = await self._run(self.client.mget([snapshot_key(m.decode()) for m in members]))
        return [bytes(blob) for blob in blobs if blob is not None]

    # -- webhooks ----------------------------------------------------------------
    async def webhook_accept(self, event_id: str, blob: bytes, dedupe_ttl_s: float, due: float) -> bool:
        keys = [webhook_seen_key(event_id), WEBHOOK_EVENTS, WEBHOOK_DUE]
        args: list[bytes | str | int | float] = [event_id, blob, int(dedupe_ttl_s), repr(due)]
        if not self._ack_replicas:
            return bool(await self._script("webhook_accept", keys, args))
        # WAIT counts the replicas holding this connection's writes: the script and the WAIT
        # must share a connection, hence one pipeline (EVAL: a pipeline cannot recover a NOSCRIPT).
        pipe = (await self._owner_of(WEBHOOK_EVENTS)).pipeline(transaction=False)
        pipe.eval(self._lua["webhook_accept"], len(keys), *keys, *args)
        pipe.execute_command("WAIT", self._ack_replicas, WEBHOOK_WAIT_MS)
        try:
            async with asyncio.timeout(self._op_timeout_s + WEBHOOK_WAIT_MS / 1000):
                accepted, acked = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        if int(acked) < self._ack_replicas:
            if accepted:
                await self._script("webhook_unaccept", keys, [event_id])
            raise ReplicasBehind(
                f"redis: {acked} of the {self._ack_replicas} replicas webhook_ack_replicas asks for hold the event "
                f"after {WEBHOOK_WAIT_MS} ms"
            )
        return bool(accepted)

    async def _owner_of(self, key: str) -> Any:
        """The client whose one connection can both write ``key`` and WAIT for it: the store's own,
        or on a cluster a plain client of the node that owns the key's slot now (a slot moved
        since is a MOVED error: a 503, and the sender's retry finds the new owner)."""
        if not self._target.cluster:
            return self.client
        try:
            await self._run(self.client.initialize())  # slots are learnt on first use; once
            node = self.client.get_node_from_key(key)
        except RedisError as exc:
            raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc
        owner = self._node_clients.get(node.name)
        if owner is None:
            owner = self._node_clients[node.name] = redis_connection.client(
                dataclasses.replace(self._target, url=f"{self._target.url.split('://', 1)[0]}://{node.host}:{node.port}/0", cluster=False),
                self._op_timeout_s,
            )
        return owner

    async def webhook_claim(self, now: float, lease_s: float, limit: int) -> list[bytes]:
        blobs = await self._script("webhook_claim", [WEBHOOK_DUE, WEBHOOK_EVENTS], [repr(now), repr(now + lease_s), limit])
        return [bytes(b) for b in blobs]

    async def webhook_finish(self, event_id: str, outcome: str, blob: bytes, score: float) -> None:
        await self._script("webhook_finish", [WEBHOOK_DUE, WEBHOOK_EVENTS, WEBHOOK_DEAD], [event_id, outcome, blob, repr(score)])

    async def webhook_counts(self) -> tuple[int, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(WEBHOOK_DUE)
        pipe.zcard(WEBHOOK_DEAD)
        backlog, dead = await self._run(pipe.execute())
        return int(backlog), int(dead)

    async def webhook_dead_letters(self, limit: int) -> list[bytes]:
        ids = await self._run(self.client.zrevrange(WEBHOOK_DEAD, 0, limit - 1))
        if not ids:
            return []
        blobs = await self._run(self.client.hmget(WEBHOOK_EVENTS, ids))
        return [bytes(b) for b in blobs if b is not None]

    async def webhook_get(self, event_id: str) -> bytes | None:
        blob = await self._run(self.client.hget(WEBHOOK_EVENTS, event_id))
        return bytes(blob) if blob is not None else None

    async def webhook_replay(self, event_id: str, blob: bytes, due: float) -> bool:
        return bool(await self._script("webhook_replay", [WEBHOOK_DUE, WEBHOOK_EVENTS, WEBHOOK_DEAD], [event_id, blob, repr(due)]))
