"""A built-in simulator of the PinmyCal API (``pmc-gateway sim``): faults, rate limits, jobs and
signed webhooks, for the demo, the tests and the benchmarks.

May import: what ``tools`` may.
"""
