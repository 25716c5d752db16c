"""The rate-budget algorithm (SPEC §5), as a pure function over one key's state.

``redis_scripts/budget_admit.lua`` is the same function over a Redis hash and sorted set,
on Redis' clock; the memory store runs this one. Both pass one contract suite.

What it guarantees, and why each part is there:

- **The rolling limit, exactly.** Every admission is logged with its time; a request is
  admitted only while fewer than ``limit`` admissions lie in the last ``window_s``. Admissions
  are made at "now" only, never reserved in the future, so the log stays in time order and
  the check is one comparison. The window is 60 s plus ``WINDOW_MARGIN_S``: an admission is
  not an arrival, and the time from one to the other varies (a fresh connection, a slower
  route), so two admissions 60.0 s apart could reach the upstream 59.9 s apart.
- **No waste.** An idle key admits up to ``burst`` at once (the whole limit by default);
  beyond the burst, admissions are spaced at the limit's rate (GCRA with a burst tolerance of
  ``burst - 1`` intervals). A request that fits both never waits and is never refused.
- **Fair share, work-conserving.** Each client that asked in the last window has a demand
  estimate (an exponentially weighted count of its asks, bias-corrected while the client is
  young, so a steady client is judged by its rate from its first seconds). The key's limit is
  split max-min fairly by ``share`` over those demands (water-filling): a client asking less
  than its share is allocated what it asks (with ``DEMAND_HEADROOM`` for its variance), the
  rest is split between the others. A client under its allocation takes any free slot; a
  client over it may only borrow slots that no other client's unspent allocation needs. So a
  quiet client is never held back by a noisy one, and nothing is held for a client that does
  not ask for it.
- **Waiting without reservations.** A request that cannot go now is told how long until the
  first thing holding it back may change, and asks again then (``first=False``: the same
  request, not a new demand). Whoever is then under its allocation goes first: waiters are
  served in fair order, not strictly first come first served.
- **The upstream's word.** An upstream 429 pauses the key; rate-limit headers cap the
  admissions until their reset (``rate_limit_seen``), so traffic on the key from outside the
  gateway is accounted.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0
WINDOW_MARGIN_S = 1.0
DEMAND_HEADROOM = 1.25
MIN_AGE_S = 5.0  # a new client's first ask is read as at least 60/5 = 12 per minute
NEXT_WINDOW_S = 1.0  # a rate-limit reset this much later than the one known starts a new window

CLOCK_RESOLUTION_S = 1e-6  # Redis' TIME: sums of intervals may not land on "now" exactly in floats

KEY, CLIENT, SHARE = "key", "client", "share"


@dataclass(frozen=True, slots=True)
class BudgetAsk:
    """What one admission asks of a key's budget. Built once per (client, environment).

    ``key`` names the API key's budget (also the Redis Cluster hash tag); ``burst`` is
    1..``limit``; ``client_limit`` is the client's own cap per window (0: none)."""

    key: str
    client: str
    limit: int
    burst: int
    share: float = 1.0
    client_limit: int = 0
    fair_share: bool = True
    period_s: float = WINDOW_S  # the limit is per this many seconds; tests shorten it
    margin_s: float = WINDOW_MARGIN_S

    @property
    def window_s(self) -> float:
        return self.period_s + self.margin_s

    @property
    def interval_s(self) -> float:
        return self.period_s / self.limit


@dataclass(frozen=True, slots=True)
class Admission:
    """``granted``: send now. Otherwise ask again in ``wait_s``; ``limit`` names what held
    the request back (key, client or share). ``used`` is the key's admissions in the window
    (this one included); ``seq`` numbers a granted admission on its key; ``at`` is the
    decision's time on the store's clock."""

    granted: bool
    wait_s: float = 0.0
    limit: str = ""
    used: int = 0
    seq: int = 0
    at: float = 0.0


@dataclass(slots=True)
class ClientState:
    demand: float = 0.0  # exponentially weighted count of asks, as of ``last_ask``
    last_ask: float = 0.0
    since: float = 0.0
    share: float = 1.0
    admitted: int = 0  # admissions in the window


@dataclass(slots=True)
class KeyState:
    log: deque[tuple[float, str]] = field(default_factory=deque)  # (time, client), oldest first
    clients: dict[str, ClientState] = field(default_factory=dict)
    seq: int = 0
    tat: float = 0.0
    pause_until: float = 0.0
    cap_left: int = 0
    cap_until: float = 0.0


def projected_demand(client: ClientState, now: float, window_s: float) -> float:
    """Asks per window the client is making, judged by its recent asks."""
    decayed = client.demand * math.exp(-(now - client.last_ask) / window_s)
    age = max(now - client.since, MIN_AGE_S)
    return DEMAND_HEADROOM * decayed / -math.expm1(-age / window_s)


def allocations(demands: dict[str, float], shares: dict[str, float], limit: float) -> dict[str, float]:
    """Max-min fair split of ``limit`` by ``shares`` over ``demands`` (water-filling)."""
    alloc: dict[str, float] = {}
    left = dict(demands)
    remaining = float(limit)
    while left:
        unit = remaining / sum(shares[c] for c in left)
        satisfied = [c for c, d in left.items() if d <= unit * shares[c]]
        if not satisfied:
            for c in left:
                alloc[c] = unit * shares[c]
            break
        for c in satisfied:
            alloc[c] = left.pop(c)
            remaining -= alloc[c]
    return alloc


def admit(state: KeyState, ask: BudgetAsk, now: float, *, first: bool) -> Admission:
    """Admit one request of ``ask.client`` on its key now, or say how long to wait."""
    window = ask.window_s
    cutoff = now - window
    while state.log and state.log[0][0] <= cutoff:
        _, gone = state.log.popleft()
        if gone in state.clients:
            state.clients[gone].admitted -= 1

    me = state.clients.get(ask.client)
    if me is None:
        me = state.clients[ask.client] = ClientState(since=now, last_ask=now)
    if first:
        me.demand = me.demand * math.exp(-(now - me.last_ask) / window) + 1
    me.last_ask = now
    me.share = ask.share
    for name in [c for c, s in state.clients.items() if s.last_ask <= cutoff and s.admitted <= 0]:
        del state.clients[name]

    used = len(state.log)
    holds: list[tuple[float, str]] = []
    if state.pause_until > now:
        holds.append((state.pause_until - now, KEY))
    if state.cap_until > now and state.cap_left <= 0:
        holds.append((state.cap_until - now, KEY))
    if ask.client_limit and me.admitted >= ask.client_limit:
        own = [t for t, c in state.log if c == ask.client]
        holds.append((own[me.admitted - ask.client_limit] + window - now, CLIENT))
    if used >= ask.limit:
        holds.append((state.log[used - ask.limit][0] + window - now, KEY))
    tolerance = (min(ask.burst, ask.limit) - 1) * ask.interval_s
    if state.tat - tolerance > now + CLOCK_RESOLUTION_S:
        holds.append((state.tat - tolerance - now, KEY))
    if ask.fair_share and len(state.clients) > 1 and used < ask.limit:
        demands = {c: projected_demand(s, now, window) for c, s in state.clients.items()}
        alloc = allocations(demands, {c: s.share for c, s in state.clients.items()}, ask.limit)
        # A whole unspent slot of its own allocation takes any free slot; otherwise only one
        # that no other client's unspent allocation needs (a fraction of one included).
        if me.admitted + 1 > alloc[ask.client]:
            others = sum(max(0.0, alloc[c] - s.admitted) for c, s in state.clients.items() if c != ask.client)
            if used + 1 + others > ask.limit:
                holds.append((state.log[0][0] + window - now if state.log else ask.interval_s, SHARE))

    if holds:
        wait, limit = max(holds, key=lambda hold: (hold[0], _PRECEDENCE[hold[1]]))
        return Admission(False, max(wait, 1e-6), limit, used, 0, now)

    state.seq += 1
    state.log.append((now, ask.client))
    me.admitted += 1
    state.tat = max(state.tat, now) + ask.interval_s
    if state.cap_until > now:
        state.cap_left -= 1
    return Admission(True, 0.0, "", used + 1, state.seq, now)


_PRECEDENCE = {KEY: 0, SHARE: 1, CLIENT: 2}


def pause(state: KeyState, now: float, seconds: float) -> None:
    """An upstream 429: no admission on the key for ``seconds`` (never shortening a pause)."""
    state.pause_until = max(state.pause_until, now + seconds)


def rate_limit_seen(state: KeyState, now: float, remaining: int, reset_s: float, seq: int) -> None:
    """The upstream said ``remaining`` requests are left until ``reset_s`` from now, in the answer
    to admission ``seq``. Admissions made since then were not counted by it yet: they come off."""
    until = now + max(0.0, reset_s)
    left = remaining - max(0, state.seq - seq)
    if state.cap_until <= now or until > state.cap_until + NEXT_WINDOW_S:
        state.cap_left, state.cap_until = left, until
    else:
        state.cap_left = min(state.cap_left, left)
        state.cap_until = max(state.cap_until, until)
