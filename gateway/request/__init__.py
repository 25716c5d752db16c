"""What one proxied request is: the request and response types, the stage chain, the record
kept of it, route templates, header rules, body reading and the error envelope.

May import: ``core``, ``errors``, ``settings``.
"""
