"""Retries: the stage; what may be retried (``policy.py``); how long to wait (``backoff.py``,
``retry_after.py``); how many retries the whole process may add (``retry_budget.py``).

May import: what ``stages`` may.
"""
