"""Names a PromQL expression refers to: metrics and labels (enough for our dashboards and rules)."""

from __future__ import annotations

import re

FUNCTIONS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "sort_desc",
    "sort", "vector", "abs", "clamp_min", "clamp_max", "label_values", "topk", "bottomk", "time", "inf", "nan",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def references(expr: str) -> tuple[set[str], set[str]]:
    """``(metric names, label names)`` used by ``expr``; Grafana variables are neutralised first."""
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "1m", expr)
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}", "", expr)
    for _, names in _GROUPING.findall(expr):
        labels.update(n.strip() for n in names.split(",") if n.strip())
    expr = _GROUPING.sub("", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    metrics = {
        m.group(0)
        for m in re.finditer(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])(?!\s*\()", expr)
        if m.group(0) not in FUNCTIONS_AND_KEYWORDS and not re.fullmatch(r"e\d*", m.group(0))
    }
    return metrics, labels


def problems(exprs: list[str], exported: dict[str, set[str]], recorded: set[str]) -> list[str]:
    """Every metric or label an expression names that is neither exported nor recorded."""
    all_labels = set().union(*exported.values()) | {"le", "__name__", "job", "instance"}
    found = []
    for expr in exprs:
        metrics, labels = references(expr)
        for metric in sorted(metrics - set(exported) - recorded):
            found.append(f"unknown metric {metric!r} in: {expr.strip()[:120]}")
        for label in sorted(labels - all_labels):
            found.append(f"unknown label {label!r} in: {expr.strip()[:120]}")
    return found
