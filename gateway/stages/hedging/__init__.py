"""Hedged reads (SPEC §5): a GET still unanswered after its route's recent latency quantile gets
one second attempt; the first usable answer wins and the other is abandoned.

``latency.py`` learns each route's delay from recent attempts; ``stage.py`` races the two and
spends a hedge only where the key's budget, the retry budget and the breaker all have room.

May import: ``core``, ``errors``, ``settings``, ``request``, ``store``; the breaker's board and the
retry budget (``stages.breaker``, ``stages.retry``) to read their state, never to act for them.
"""
