"""The commands that are tools, not the gateway: the PinmyCal simulator (``sim/``), the demo,
the benchmarks (``bench/``) and the layering check.

May import: anything in ``gateway`` but ``cli.py``; nothing in the gateway imports them.
"""
