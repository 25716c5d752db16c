"""Async jobs (SPEC §5): ``domain.py`` says what a job answer means and tells a job's story;
``stage.py`` follows a 202 for ``Prefer: wait`` and shares polls across callers and replicas.

May import: ``core``, ``errors``, ``settings``, ``request``, ``store``, ``observability``.
"""
