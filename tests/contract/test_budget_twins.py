"""The Lua script and the Python function are one algorithm: every decision a real Redis
made, replayed through rolling_budget.admit at the same instants, comes out the same."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.store import rolling_budget
from gateway.store.protocols import BudgetAsk
from gateway.store.redis import RedisStore

pytestmark = pytest.mark.redis


async def test_redis_decides_as_the_python_algorithm_does(redis_url: str) -> None:
    rng = random.Random(5)
    store = RedisStore(redis_url)
    await store.start()
    asks = [
        BudgetAsk("env:twin", "a", limit=8, burst=3, share=1, period_s=0.4, margin_s=0.05),
        BudgetAsk("env:twin", "b", limit=8, burst=3, share=2, period_s=0.4, margin_s=0.05),
        BudgetAsk("env:twin", "c", limit=8, burst=3, share=1, client_limit=2, period_s=0.4, margin_s=0.05),
    ]
    decisions = []
    try:
        for _ in range(400):
            ask, first = rng.choice(asks), rng.random() < 0.7
            decisions.append((ask, first, await store.admit(ask, first=first)))
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0.0, 0.03))
    finally:
        await store.close()

    state = rolling_budget.KeyState()
    reasons = set()
    for ask, first, redis in decisions:
        python = rolling_budget.admit(state, ask, redis.at, first=first)
        assert (python.granted, python.limit, python.used, python.seq) == (redis.granted, redis.limit, redis.used, redis.seq)
        assert python.wait_s == pytest.approx(redis.wait_s, abs=2e-6)
        reasons.add(redis.limit)
    assert reasons == {"", "key", "client", "share"}  # every branch was taken
