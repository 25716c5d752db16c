"""Shared reads (SPEC §5): identical GETs coalesced across replicas, answers of listed routes
cached in the store, dropped the moment a booking changes them, served stale rather than failed.

``rules.py`` says what may be stored and for how long (RFC 9111, RFC 5861) and what the caller
asked for; ``invalidation.py`` turns bookings, webhooks, jobs and purges into generation bumps;
``stage.py`` answers a read from the cache, from a call already in flight, or as the leader of one.

May import: ``core``, ``errors``, ``settings``, ``request``, ``store``.
"""
