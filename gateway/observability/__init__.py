"""Metric and span names and instruments, tracing, structured logs, SLO bookkeeping, the
after-answer queue, and the one route stage facts take into the record and telemetry.

May import: ``core``, ``errors``, ``settings``, ``request``, ``store``.
"""
