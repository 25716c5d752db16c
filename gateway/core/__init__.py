"""Building blocks with no knowledge of the gateway: clocks, ids, tasks, JSON, histogram
bounds, value parsers.

May import: the standard library and third-party packages, ``gateway.errors``; nothing else
of the gateway.
"""
