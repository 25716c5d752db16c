"""The resilient wrapper on a fake primary (no socket): what counts as the store being down."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import ReplicasBehind, StoreError
from gateway.store.memory import MemoryStore
from gateway.store.resilient import ResilientStore


class Primary(MemoryStore):
    """A memory store whose webhook accept fails as told."""

    def __init__(self, failure: Exception) -> None:
        super().__init__(ManualClock())
        self.failure = failure

    async def webhook_accept(self, *args: Any, **kwargs: Any) -> bool:
        raise self.failure


async def test_a_replica_behind_refuses_one_webhook_and_the_store_stays_up() -> None:
    store = ResilientStore(Primary(ReplicasBehind("0 of 1 replicas")), member_id="m", min_members=1, clock=ManualClock())
    with pytest.raises(ReplicasBehind):
        await store.webhook_accept("evt_1", b"{}", 60, 1.0)
    assert store.health().healthy  # budgets, breakers and reads keep using Redis


async def test_a_store_that_does_not_answer_is_down() -> None:
    store = ResilientStore(Primary(StoreError("timeout")), member_id="m", min_members=1, clock=ManualClock())
    with pytest.raises(StoreError):
        await store.webhook_accept("evt_1", b"{}", 60, 1.0)
    assert not store.health().healthy
