"""pmc-gateway: a reliability gateway in front of the PinmyCal scheduling API.

Layers, lowest first (``python -m gateway.tools.layering`` checks them): ``core`` and
``errors.py`` → ``settings.py`` → ``request/`` → ``store/`` → ``observability/`` → ``upstream/``
→ ``stages/`` → ``inbound/`` → ``webhooks/`` → ``admin/`` → ``app.py``, ``serve.py``,
``reload.py`` → ``tools/`` → ``cli.py``. A module may import its own layer and those below.
This package itself holds nothing to import.
"""
