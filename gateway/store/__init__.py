"""Shared state: small protocols (budget, breaker, idempotency, jobs, records, membership,
webhook queue), the memory and Redis backends (with their Lua scripts), and the resilient
wrapper that falls back to memory when Redis is away.

May import: ``core``, ``errors``, ``settings``, ``request``.
"""
