"""``/_gateway/*``: health, readiness, status and its sections, key ages, triage records,
metrics exposition, reload, and the built-in dashboard page.

May import: everything below it (``core`` … ``webhooks``).
"""
