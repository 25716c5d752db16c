"""What a caller's request meets first: the aiohttp middleware steps (request id, access log
and server span, error envelope, path safety, caller auth, admin token), the connection guard
beneath aiohttp, source-IP rules and the ``/v1`` handler that enters the stage chain.

May import: everything below it (``core`` … ``stages``).
"""
