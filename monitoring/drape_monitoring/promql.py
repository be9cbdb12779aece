"""The metric names a PromQL expression reads, so tests can check rules and dashboards against real metrics.

A rule or panel that names a metric nobody exports is silently empty forever; ``metric_names`` lets a test
compare every expression with the series a real Triton, the prober and the recording rules actually produce.
It is a small lexer, not a parser: enough for the expressions in monitoring/ (PromQL plus Grafana's
``$variables``), and ``promtool check rules`` stays the syntax authority.
"""
from __future__ import annotations

import re

__all__ = ["metric_names", "grafana_to_promql"]

_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan", "atan2",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')


def metric_names(expr: str) -> set[str]:
    """Names of the metrics (and recorded series) ``expr`` selects; functions, keywords and labels excluded."""
    names = set(_NAME_MATCHER.findall(expr))
    s = _VARIABLE.sub(" ", expr)
    s = _STRING.sub('""', s)
    s = _BRACES.sub(" ", s)
    s = _RANGE.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    s = _OFFSET.sub(" ", s)
    s = _NUMBER.sub(" ", s)
    for match in _IDENT.finditer(s):
        name = match.group()
        if name.lower() in _KEYWORDS or s[match.end():].lstrip().startswith("("):
            continue  # operator keyword, or a function / aggregation call
        names.add(name)
    return names


def grafana_to_promql(expr: str, interval: str = "1m", value: str = ".*") -> str:
    """A Grafana panel query with its variables replaced, so Prometheus or promtool can evaluate it."""
    for var in ("$__rate_interval", "$__interval", "$__range"):
        expr = expr.replace(var, interval)
    return _VARIABLE.sub(value, expr)
