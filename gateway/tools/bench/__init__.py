"""``pmc-gateway bench``: load generator, reference proxies and the scenario runner; figures
go to bench/README.md, not into code.

May import: what ``tools`` may.
"""
