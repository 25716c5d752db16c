"""The terminal stage and its transport: the PinmyCal client (one span per attempt), the
HTTP/1.1 connection pool, and the egress proxy.

May import: ``core``, ``errors``, ``settings``, ``request``, ``store``, ``observability``.
"""
