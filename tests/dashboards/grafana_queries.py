"""What Grafana does to an InfluxQL query's text before InfluxDB sees it.

Grafana itself cannot run in these tests, so this module repeats, step by step,
what Grafana 11's InfluxDB datasource does to a raw InfluxQL query (query
language InfluxQL, server access; the backend query path):

1. In the browser, ``templateSrv.replace`` finds every ``$name``, ``${name}``,
   ``${name:format}`` and ``[[name]]``. Dashboard variables go through the
   datasource's ``interpolateQueryExpr``:

   - a value that starts like a number (JavaScript ``parseFloat``) goes in as is;
   - a multi-value variable is regex-escaped, several values as ``(a|b)``;
   - a single-value variable is regex-escaped only where the query uses it inside
     a regex (``=~ /^$bed$/``), and goes in as is elsewhere (``= '$bed'``);
   - "All" without a custom all value is the list of every value (for a
     multi-value variable ``(a|b|c)``, each regex-escaped); a custom all value
     goes in as is, never escaped. The dashboards' ``$garden`` (multi-value,
     custom all value ``.*``) makes ``"garden" =~ /^$garden$/`` into
     ``/^(demo)$/`` for one garden, ``/^(demo|north)$/`` for two and
     ``/^.*$/`` for All.

   ``$__interval`` and ``$__interval_ms`` are left for the backend; ``$__from``
   and ``$__to`` become epoch milliseconds, ``$__range_ms``, ``$__range_s`` and
   ``$__range`` the range's length (ms, whole seconds, and Grafana's ``<s>s``).
   Any other name is left alone. This holds for a query variable's query too:
   a variable with ``refresh`` 2 ("On time range change") is queried again with
   the new range before the panels run (:func:`resolve_variables`).
   (Annotation queries go through the same function without the query text, so
   a single-value variable is never escaped there.)
2. The Go backend then replaces, in this order: ``$timeFilter`` with
   ``time >= <from>ms and time <= <to>ms``, ``$interval``, ``$__interval_ms``
   and ``$__interval``.

The interval is the frontend's: the range divided by the panel's data points
(its ``maxDataPoints``, else its width in pixels), rounded to Grafana's steps,
and never below the panel's min interval or the datasource's ``timeInterval``.

Sources: grafana/grafana ``public/app/plugins/datasource/influxdb/datasource.ts``
(``interpolateQueryExpr``), ``pkg/tsdb/influxdb/influxql/models/query.go``
(``Build``, ``renderTimeFilter``), ``packages/grafana-data/src/datetime/rangeutil.ts``
(``roundInterval``, ``calculateInterval``), ``packages/grafana-data/src/text/string.ts``
(``escapeRegex``) and grafana-plugin-sdk-go ``gtime.FormatInterval``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# templateSrv's variable syntax: $name, [[name:fmt]], ${name.path:fmt}. JS \w is ASCII.
VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}", re.ASCII)
# Names that are not dashboard variables but that Grafana fills in itself.
BACKEND_MACROS = frozenset({"timeFilter", "interval", "__interval", "__interval_ms"})
FRONTEND_MACROS = frozenset({"__from", "__to", "__range", "__range_ms", "__range_s"})
MACROS = BACKEND_MACROS | FRONTEND_MACROS
# What an InfluxQL alias may hold besides variables (influx_series.ts / the backend's alias).
ALIAS_PATTERNS = re.compile(r"^(tag_\w+|col|m|measurement|\d+)$", re.ASCII)

ALL_VALUE = "$__all"
_ESCAPE_RE = re.compile(r"[\\^$*+?.()|\[\]{}/]")
# JavaScript parseFloat accepts any string that starts like a number.
_JS_FLOAT_PREFIX = re.compile(r"^\s*[+-]?(Infinity|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
# interpolateQueryExpr: the regexes of a query (=~ /.../ or !~ /.../).
_QUERY_REGEXES = re.compile(
    r"(\s*(=|!)~\s*)\/((?![*+?])(?:[^\r\n\[/\\]|\\.|\[(?:[^\r\n\]\\]|\\.)*\])+)\/"
    r"((?:g(?:im?|mi?)?|i(?:gm?|mg?)?|m(?:gi?|ig?)?)?)",
    re.MULTILINE,
)
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
             "M": 2_592_000_000, "y": 31_536_000_000}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimeRange:
    from_ms: int
    to_ms: int


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard template variable and its current value (a list when multi)."""

    name: str
    current: str | Sequence[str]
    options: Sequence[str] = ()
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None

    @classmethod
    def from_model(cls, model: Mapping[str, Any], options: Sequence[str],
                   current: str | Sequence[str] | None = None) -> Variable:  # fmt: skip
        """From a dashboard's ``templating.list`` entry, with the options its query found."""
        if current is None:
            saved = (model.get("current") or {}).get("value")
            if saved in (ALL_VALUE, [ALL_VALUE]):
                current = ALL_VALUE
            elif saved:
                current = saved
            else:  # Grafana selects the first option
                current = options[0] if options else ""
        return cls(model["name"], current, tuple(options), bool(model.get("multi")),
                   bool(model.get("includeAll")), model.get("allValue") or None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Context:
    """Everything a query's expansion depends on."""

    time_range: TimeRange
    interval_ms: int
    variables: Mapping[str, Variable] = field(default_factory=dict)


# -------------------------------------------------------------- intervals


def round_interval(interval_ms: float) -> int:
    """rangeutil.roundInterval: the step Grafana rounds a raw interval to."""
    steps = (
        (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
        (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
        (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
        (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
        (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
        (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
    )  # fmt: skip
    for below, step in steps:
        if interval_ms < below:
            return step
    return 31_536_000_000


def interval_to_ms(text: str) -> int:
    """rangeutil.intervalToMs for "5m", "10s", ">1m" (a min interval may start with ">")."""
    match = re.fullmatch(r">?\s*(\d+)(ms|s|m|h|d|w|M|y)", text.strip())
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


def format_interval(ms: int) -> str:
    """gtime.FormatInterval: the largest whole unit, as the backend writes $__interval."""
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
                       ("s", 1000), ("ms", 1)):  # fmt: skip
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def calculate_interval(time_range: TimeRange, max_data_points: int, min_interval: str | None) -> int:
    """rangeutil.calculateInterval, in milliseconds."""
    interval = round_interval((time_range.to_ms - time_range.from_ms) / max_data_points)
    low = interval_to_ms(min_interval) if min_interval else 1
    return max(interval, low)


def panel_interval_ms(panel: Mapping[str, Any], time_range: TimeRange, datasource_min: str | None,
                      screen_px: int = 1920) -> int:  # fmt: skip
    """The interval Grafana computes for a panel on a screen ``screen_px`` wide."""
    points = panel.get("maxDataPoints") or max(1, round(panel["gridPos"]["w"] / 24 * screen_px))
    return calculate_interval(time_range, int(points), panel.get("interval") or datasource_min)


# --------------------------------------------------------------- variables


def escape_regex(value: str) -> str:
    """@grafana/data escapeRegex."""
    return _ESCAPE_RE.sub(lambda m: "\\" + m.group(0), value)


def _looks_numeric(value: str) -> bool:
    return _JS_FLOAT_PREFIX.match(value) is not None


def interpolate_query_expr(value: str | Sequence[str], variable: Variable, query: str | None) -> str | list[str]:
    """InfluxDatasource.interpolateQueryExpr (Grafana 11)."""
    if isinstance(value, str) and _looks_numeric(value):
        return value
    if variable.multi:
        if isinstance(value, str):
            return escape_regex(value)
        return "(" + "|".join(escape_regex(v) for v in value) + ")"
    if not query:
        return value if isinstance(value, str) else list(value)
    used_in_regex = re.compile(rf"\/(?:\^)?(.*)(\${re.escape(variable.name)})(.*)(?:\$)?\/", re.MULTILINE)
    for match in _QUERY_REGEXES.finditer(query):
        if used_in_regex.search(match.group(0)):
            if isinstance(value, str):
                return escape_regex(value)
            return "(" + "|".join(escape_regex(v) for v in value) + ")"
    return value if isinstance(value, str) else list(value)


def _explicit_format(value: str | Sequence[str], fmt: str) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if fmt == "raw":
        return ",".join(values)
    if fmt == "regex":
        escaped = [escape_regex(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    raise ValueError(f"variable format {fmt!r} is not emulated here")


def replace_variables(text: str, ctx: Context, *, query_for_regex_check: str | None) -> str:
    """templateSrv.replace with the datasource's interpolateQueryExpr (step 1)."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in ("__interval", "__interval_ms"):
            return "$" + name  # applyTemplateVariables leaves these for the backend
        if name in ("__from", "__to"):
            ms = ctx.time_range.from_ms if name == "__from" else ctx.time_range.to_ms
            return str(ms)
        if name in ("__range", "__range_ms", "__range_s"):
            span = ctx.time_range.to_ms - ctx.time_range.from_ms
            seconds = round(span / 1000)  # getRangeScopedVars: Math.round
            return {"__range_ms": str(span), "__range_s": str(seconds), "__range": f"{seconds}s"}[name]
        variable = ctx.variables.get(name)
        if variable is None:
            return match.group(0)
        value: str | Sequence[str] = variable.current
        if value == ALL_VALUE or (not isinstance(value, str) and list(value) == [ALL_VALUE]):
            if variable.all_value is not None:
                return variable.all_value  # a custom all value is never formatted
            value = list(variable.options)
        if fmt:
            return _explicit_format(value, fmt)
        out = interpolate_query_expr(value, variable, query_for_regex_check)
        return out if isinstance(out, str) else ",".join(out)

    return VARIABLE_RE.sub(substitute, text)


def backend_macros(text: str, ctx: Context) -> str:
    """models.Query.Build's replacements (step 2), in its order."""
    time_filter = f"time >= {ctx.time_range.from_ms}ms and time <= {ctx.time_range.to_ms}ms"
    interval = format_interval(ctx.interval_ms)
    text = text.replace("$timeFilter", time_filter)
    text = text.replace("$interval", interval)
    text = text.replace("$__interval_ms", str(ctx.interval_ms))
    return text.replace("$__interval", interval)


def expand_query(query: str, ctx: Context) -> str:
    """A panel's raw InfluxQL (or a query variable's), as Grafana sends it to /query."""
    return backend_macros(replace_variables(query, ctx, query_for_regex_check=query), ctx)


def expand_annotation(query: str, ctx: Context) -> str:
    """An InfluxQL annotation query, as Grafana sends it."""
    return backend_macros(replace_variables(query, ctx, query_for_regex_check=None), ctx)


def names_used(text: str) -> set[str]:
    """Every variable or macro name a text refers to."""
    return {m.group(1) or m.group(2) or m.group(4) for m in VARIABLE_RE.finditer(text)}


def sort_values(values: Sequence[str], sort: int) -> list[str]:
    """A query variable's options in the order of its ``sort`` (Grafana's ``sortVariableValues``).

    0 as found; 1/2 alphabetical (lodash ``sortBy`` on the text: code units) up/down;
    3/4 by the first number in the text (-1 without one) up/down; 5/6 alphabetical,
    case-insensitive. ``sortBy`` is stable, and "down" is its result reversed.
    """

    def first_number(text: str) -> int:
        match = re.match(r".*?(\d+)", text)
        return int(match.group(1)) if match else -1

    keys: dict[int, Any] = {
        1: lambda v: v.encode("utf-16-be"),
        3: first_number,
        5: lambda v: v.lower().encode("utf-16-be"),
    }
    if sort == 0:
        return list(values)
    if sort not in (1, 2, 3, 4, 5, 6):
        raise ValueError(f"variable sort {sort} is not emulated here")
    ordered = sorted(values, key=keys[sort - 1 + sort % 2])
    return ordered[::-1] if sort % 2 == 0 else ordered


def variable_options(model: Mapping[str, Any], series: Sequence[Any]) -> list[str]:
    """A query variable's options from its query's answer, in its sort order (a ``regex`` filter is not emulated)."""
    values = metric_find_values(series)
    if model.get("regex"):
        raise ValueError("a variable's regex is not emulated here")
    return sort_values(values, int(model.get("sort") or 0))


def metric_find_values(series: Sequence[Any]) -> list[str]:
    """The options a query variable gets from its InfluxQL result (the datasource's
    ``ResponseParser.parse``): each row's second column when it has one (the ``value``
    of SHOW TAG VALUES, the first field of a SELECT after ``time``), else its first;
    unique, in order."""
    seen: dict[str, None] = {}
    for s in series:
        for row in s.values:
            seen.setdefault(str(row[1] if len(row) > 1 else row[0]), None)
    return list(seen)


def resolve_variables(dashboard: Mapping[str, Any], time_range: TimeRange,
                      run_query: Callable[[str], Sequence[Any]],
                      picks: Mapping[str, str | Sequence[str]] | None = None) -> dict[str, Variable]:  # fmt: skip
    """Every variable of a dashboard for one time range, in order, as Grafana refreshes them.

    Each query is expanded with the variables before it and run (``run_query``
    takes InfluxQL, returns series); the value is ``picks[name]`` if given, else
    the saved current value if the query offers it, else the first option, else
    (no options) the saved value: a hidden variable such as ``$rp`` keeps its
    default when its query finds nothing.
    """
    variables: dict[str, Variable] = {}
    for model in dashboard.get("templating", {}).get("list", []):
        ctx = Context(time_range, 300_000, dict(variables))
        options = variable_options(model, run_query(expand_query(model["query"], ctx)))
        pick = (picks or {}).get(model["name"])
        if pick is None:
            saved = (model.get("current") or {}).get("value")
            if saved in (ALL_VALUE, [ALL_VALUE]) or (isinstance(saved, str) and saved in options) or not options:
                pick = ALL_VALUE if saved in (ALL_VALUE, [ALL_VALUE]) else saved
            else:
                pick = [options[0]] if model.get("multi") else options[0]
        variables[model["name"]] = Variable.from_model(model, options, pick)
    return variables
