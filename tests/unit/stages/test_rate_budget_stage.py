"""The rate-budget stage against a fake terminal and a ManualClock: no socket, no sleep."""

from __future__ import annotations

import pytest

from gateway.core.clock import ManualClock
from gateway.errors import RateBudgetExhausted
from gateway.observability.instruments import UPSTREAM_THROTTLED
from gateway.request.types import UpstreamRequest, UpstreamResponse
from gateway.stages.rate_budget import RateBudgetStage
from gateway.store.memory import MemoryStore
from gateway.store.protocols import BudgetAsk
from tests.support.fakes import CountedFacts, make_request


class Notes(CountedFacts):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.used: list[tuple[int, int]] = []
        self.rejected: list[str] = []

    def budget_admitted(self, request: UpstreamRequest, waited_s: float, used: int, limit: int) -> None:
        super().budget_admitted(request, waited_s, used, limit)
        self.waits.append(waited_s)
        self.used.append((used, limit))

    def budget_rejected(self, request: UpstreamRequest, limit: str, waited_s: float) -> None:
        super().budget_rejected(request, limit, waited_s)
        self.rejected.append(limit)

    @property
    def throttled(self) -> list[float]:
        return self.values(UPSTREAM_THROTTLED, "pmc.pause_s")


class Terminal:
    """The upstream, faked at the chain's seam: answers what it is told and notes when."""

    def __init__(self, clock: ManualClock, *answers: UpstreamResponse) -> None:
        self.clock, self.answers = clock, list(answers)
        self.sent: list[float] = []

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        self.sent.append(self.clock.monotonic())
        return self.answers.pop(0) if self.answers else UpstreamResponse(200, (), b"{}")


def stage(clock: ManualClock, notes: Notes, *, limit: int = 4, burst: int = 0, max_wait_s: float = 1.0, **kw: object) -> RateBudgetStage:
    asks = {(c, "live"): BudgetAsk("env:live", c, limit, burst or limit, **kw) for c in ("web", "other")}  # type: ignore[arg-type]
    return RateBudgetStage(MemoryStore(clock), asks, max_wait_s, clock, notes)


async def test_within_the_burst_nothing_waits() -> None:
    clock, notes = ManualClock(), Notes()
    budget, terminal = stage(clock, notes), Terminal(clock)
    for _ in range(4):
        await budget(make_request(clock), terminal)
    assert clock.slept == [] and notes.waits == [0.0] * 4 and notes.used[-1] == (4, 4)


async def test_beyond_the_burst_a_request_waits_for_its_slot() -> None:
    clock, notes = ManualClock(), Notes()
    budget, terminal = stage(clock, notes, limit=120, burst=1), Terminal(clock)
    first = make_request(clock)
    await budget(first, terminal)
    second = make_request(clock)
    await budget(second, terminal)
    assert terminal.sent[1] - terminal.sent[0] == pytest.approx(0.5)  # 60 s / 120
    assert notes.waits[1] == pytest.approx(0.5) and second.record.budget_wait_ms == pytest.approx(500)


async def test_a_request_that_cannot_fit_within_max_wait_is_refused_with_what_held_it() -> None:
    clock, notes = ManualClock(), Notes()
    budget, terminal = stage(clock, notes, limit=2), Terminal(clock)
    await budget(make_request(clock), terminal)
    await budget(make_request(clock), terminal)
    with pytest.raises(RateBudgetExhausted) as refused:
        await budget(make_request(clock), terminal)
    assert refused.value.details == {"limit": "key"} and refused.value.retry_after_s == 61
    assert notes.rejected == ["key"] and len(terminal.sent) == 2 and clock.slept == []


async def test_a_wait_never_passes_the_deadline() -> None:
    clock, notes = ManualClock(), Notes()
    budget, terminal = stage(clock, notes, limit=120, burst=1, max_wait_s=5.0), Terminal(clock)
    await budget(make_request(clock), terminal)
    with pytest.raises(RateBudgetExhausted):
        await budget(make_request(clock, deadline_s=0.2), terminal)


async def test_a_clients_cap_refuses_as_client() -> None:
    clock, notes = ManualClock(), Notes()
    budget, terminal = stage(clock, notes, limit=10, client_limit=1, max_wait_s=0.0), Terminal(clock)
    await budget(make_request(clock), terminal)
    with pytest.raises(RateBudgetExhausted) as refused:
        await budget(make_request(clock), terminal)
    assert refused.value.details == {"limit": "client"}
    await budget(make_request(clock, client="other"), terminal)


async def test_an_upstream_429_pauses_the_key_for_its_retry_after() -> None:
    clock, notes = ManualClock(), Notes()
    throttled = UpstreamResponse(429, (("Retry-After", "2"),), b"{}")
    budget, terminal = stage(clock, notes, max_wait_s=5.0), Terminal(clock, throttled)
    assert (await budget(make_request(clock), terminal)).status == 429
    await budget(make_request(clock, client="other"), terminal)
    assert notes.throttled == [2.0] and terminal.sent[1] - terminal.sent[0] == pytest.approx(2.0)


async def test_rate_limit_headers_hold_the_key_until_their_reset() -> None:
    clock, notes = ManualClock(), Notes()
    last = UpstreamResponse(200, (("RateLimit-Remaining", "0"), ("RateLimit-Reset", "3")), b"{}")
    budget, terminal = stage(clock, notes, limit=100, max_wait_s=5.0), Terminal(clock, last)
    await budget(make_request(clock), terminal)
    await budget(make_request(clock), terminal)  # outside traffic spent the key: wait for the reset
    assert terminal.sent[1] - terminal.sent[0] == pytest.approx(3.0)


async def test_x_ratelimit_reset_as_a_unix_time() -> None:
    clock, notes = ManualClock(), Notes()
    reset_at = str(int(clock.wall() + 4))
    last = UpstreamResponse(200, (("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", reset_at)), b"{}")
    budget, terminal = stage(clock, notes, limit=100, max_wait_s=5.0), Terminal(clock, last)
    await budget(make_request(clock), terminal)
    await budget(make_request(clock), terminal)
    assert terminal.sent[1] - terminal.sent[0] == pytest.approx(4.0, abs=1.0)
