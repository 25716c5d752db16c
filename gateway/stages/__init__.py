"""The outbound stages, outermost first: jobs, idempotency, retry/, breaker/, rate budget,
credentials. Each is one concern in one module (or folder), taking only the store protocol
and observer protocol it uses.

May import: ``core``, ``errors``, ``settings``, ``request``, ``store``, ``observability``,
``upstream``; a stage may use another's helpers, never its instance.
"""
