"""OTLP export: our span encoding, the SDK exporters around it, the metric reader and its
histograms, and the one file (``sdk_seams.py``) that touches the SDK's private parts.

May import: what ``observability`` may.
"""

