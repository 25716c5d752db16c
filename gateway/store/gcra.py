"""GCRA admission with reservations: the rate-budget algorithm, as a pure function.

Why GCRA with no burst tolerance: the upstream's rule is "at most N requests per key in
any 60 s window". Spacing admissions at least ``60/N`` s apart guarantees it for every
window (n admissions span ≥ (n-1)·60/N s, so n ≤ N within any half-open 60 s window)
and spreads traffic evenly instead of spending the minute's budget in a burst.

Why reservations: a request that may wait ``max_wait`` is given the earliest slot free
*now* and the state moves past it at once, so waiting requests are served strictly in
the order they arrived at the store, not by whoever wakes first. A request that would
wait too long reserves nothing and is refused with the truthful distance to a slot.

``redis_scripts/admit.lua`` is the same function over Redis keys, with Redis' clock.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from gateway.store.base import Admission, Bucket


def admit(
    tats: MutableMapping[str, float],
    pause_until: float,
    buckets: Sequence[Bucket],
    now: float,
    max_wait_s: float,
) -> Admission:
    """Admit one request through every bucket at once, or none of them.

    ``tats`` maps bucket name to its theoretical arrival time (the earliest next slot);
    ``pause_until`` is an upstream-imposed pause (429 Retry-After) on the key.
    """
    start = max(now, pause_until)
    for bucket in buckets:
        start = max(start, tats.get(bucket.name, now))
    wait = start - now
    if wait > max_wait_s:
        return Admission(granted=False, wait_s=wait)
    for bucket in buckets:
        tats[bucket.name] = start + bucket.interval_s
    return Admission(granted=True, wait_s=wait)
