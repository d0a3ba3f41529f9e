"""Hostile names and values through the one line-protocol writer, into the real InfluxDB 1.6.

Hypothesis makes measurements, tag keys and values, field keys and string, float,
integer and boolean values out of spaces, commas, '=', quotes, backslashes (a
trailing one too), line breaks, carriage returns, tabs, NUL, other control
characters, unpaired surrogates, emoji, combining marks, empty strings, and
leading and trailing spaces. Each point goes through ``garden.points.line`` and the
batch through ``Influx.write_lines`` (v1 ``/write``, as 1.6 needs), then is read
back with InfluxQL whose only inputs are bound parameters. Every point is either
stored exactly (same measurement, tags, fields and time: no extra point, no
changed value), or refused with a PointError that names the part, before anything
is sent. The writer's refusals are also checked against the rules docs/schema.md
states (:func:`refusal_expected`), so it refuses no more than it says.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garden.influx import Influx, InfluxSettings
from garden.points import FieldValue, PointError, line
from tests.servers import Influxd

DB = "hostile_lp"
HOUR_MS = 3_600_000
BASE_MS = 946_684_800_000  # 2000-01-01
EXAMPLES = 80  # one write each, of 4 to 12 points: about 500 points, most round-tripped
STATS: dict[str, int] = {"points": 0, "stored": 0, "stored_with_escapes": 0, "refused": 0, "writes": 0}
ESCAPED = re.compile(r"[ ,=\"'\\]|[^\x00-\x7f]")  # what needs an escape, or is not ASCII
_example = itertools.count()


@pytest.fixture(scope="module")
def influx(influxd: Influxd) -> Iterator[Influx]:
    if influxd.proc is None:
        influxd.start()
    client = Influx(InfluxSettings(url=influxd.url, database=DB))
    client.execute(f'DROP DATABASE "{DB}"')
    client.execute(f'CREATE DATABASE "{DB}"')
    # One-hour shards, and each example an hour of its own: a field's type is fixed per
    # shard, so examples cannot collide on a field's type, only points within one.
    client.execute(f'CREATE RETENTION POLICY "rt" ON "{DB}" DURATION INF REPLICATION 1 SHARD DURATION 1h DEFAULT')
    yield client
    print(f"\n[line protocol round trip] {STATS}")
    client.close()


# ------------------------------------------------------------ the rules

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")
_TEXT_BAD = re.compile(r"[\n\r\x00\ud800-\udfff]")


def refusal_expected(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue]) -> bool:
    """docs/schema.md, "What the writer refuses", as a predicate."""
    names = [measurement, *(k for k, v in tags.items() if v is not None), *fields]
    if any(not n or _CONTROL.search(n) or len(n.encode("utf-8", "surrogatepass")) > 65_535 for n in names):
        return True
    if measurement.startswith("#") or not fields:
        return True
    present = {k: v for k, v in tags.items() if v is not None}
    if {"time", "_field", "_measurement"} & (set(present) | set(fields)) or set(present) & set(fields):
        return True
    for value in present.values():
        if not value or _CONTROL.search(value) or len(value.encode("utf-8", "surrogatepass")) > 65_535:
            return True
    for value in fields.values():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return True
        if isinstance(value, str) and (_TEXT_BAD.search(value) or len(value.encode("utf-8", "surrogatepass")) > 65_535):
            return True
    return False


# ------------------------------------------------------------ the inputs

HOSTILE = [" ", ",", "=", '"', "'", "\\", "\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\u0085", "\u2028", "#",
           "é", "e\u0301", "🌱", "👩\u200d🌾", "\ufeff", "\ud800", "$x", "*", "/", "a", "0", "_", "-"]  # fmt: skip
SAFE = [" ", ",", "=", '"', "'", "é", "e\u0301", "🌱", "👩\u200d🌾", "a", "b", "Z", "0", "_", "-", ".", "/"]

hostile_text = st.lists(st.sampled_from(HOSTILE), max_size=8).map("".join)
safe_text = st.lists(st.sampled_from(SAFE), min_size=1, max_size=8).map("".join)
edges = st.one_of(
    st.builds(lambda t: f" {t} ", safe_text),  # leading and trailing spaces
    st.builds(lambda t: t + "\\", safe_text),  # a trailing backslash
    st.sampled_from(["", " ", "  ", "#hash", "time", "_field", "_measurement", "a\\ b", "a\\,b", '"q"']),
)
# Mostly names InfluxDB can hold (with every separator it has an escape for), so that
# most points have something to round-trip; one in seven anything at all.
names = st.integers(0, 13).flatmap(
    lambda n: safe_text if n < 12 else st.one_of(hostile_text, edges, st.text(max_size=6))
)
string_values = st.one_of(
    safe_text, hostile_text, edges, st.text(max_size=20),
    st.sampled_from(["", "a\\", "\\", '\\"', "line1\nline2", "tab\there", "x" * 65_535, "é" * 40_000]),
)  # fmt: skip
field_values: st.SearchStrategy[FieldValue] = st.one_of(
    string_values,
    st.floats(),
    st.sampled_from([0.1, -0.0, 5e-324, 1.7976931348623157e308, 1e21, 123456789.123456789]),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63, -(2**63) - 1, 2**63 - 1, -(2**63)]),
    st.booleans(),
)
points = st.tuples(
    names,
    st.dictionaries(names, st.one_of(names, st.none()), max_size=3),
    st.dictionaries(names, field_values, min_size=1, max_size=3),
)


def _type(value: FieldValue) -> str:
    return type(value).__name__


def _readable(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue],
              schema: dict[tuple[str, str], str]) -> bool:  # fmt: skip
    """Within one batch, a field keeps one type and a key is a tag or a field, not both:
    what InfluxDB requires of a measurement, which one point alone cannot know."""
    for key, value in fields.items():
        if schema.get((measurement, key), _type(value)) != _type(value):
            return False
    for key, value in tags.items():
        if value is not None and schema.get((measurement, key), "tag") != "tag":
            return False
    for key, value in fields.items():
        schema[(measurement, key)] = _type(value)
    for key, value in tags.items():
        if value is not None:
            schema[(measurement, key)] = "tag"
    return True


def _ident(name: str) -> str:
    """An InfluxQL identifier: measurement names cannot be bound parameters."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _measurements(influx: Influx) -> set[str]:
    return {row[0] for s in influx.query("SHOW MEASUREMENTS") for row in s.values}


Stored = tuple[str, dict[str, str], dict[str, Any], int]  # measurement, tags, fields, time


def _stored(influx: Influx, names: set[str], start: int, end: int) -> list[Stored]:
    """Every point in [start, end) of the measurements ``names``, one query each: a
    query over several measurements types each field column once for all of them."""
    window = {"start": start * 1_000_000, "end": end * 1_000_000}
    out: list[Stored] = []
    for name in names:
        query = f"SELECT * FROM {_ident(name)} WHERE time >= $start AND time < $end GROUP BY *"
        for s in influx.query(query, window):
            tags = {k: v for k, v in s.tags.items() if v != ""}  # GROUP BY * gives "" for a tag the series lacks
            for record in s.records():
                when = record.pop("time")
                out.append((s.name, tags, {k: v for k, v in record.items() if v is not None}, when))
    # And nothing anywhere else in the window: no line split into a point of its own.
    anywhere = influx.query("SELECT * FROM /.*/ WHERE time >= $start AND time < $end", window)
    assert {(s.name, row[0]) for s in anywhere for row in s.values} <= {(p[0], p[3]) for p in out}
    return sorted(out, key=lambda p: p[3])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])  # fmt: skip
@given(st.lists(points, min_size=4, max_size=12))
def test_hostile_points_are_stored_exactly_or_refused_before_sending(
    influx: Influx, batch: list[tuple[str, dict[str, str | None], dict[str, FieldValue]]]
) -> None:
    start = BASE_MS + next(_example) * 2 * HOUR_MS
    lines: list[str] = []
    wanted = []
    schema: dict[tuple[str, str], str] = {}
    for i, (measurement, tags, fields) in enumerate(batch):
        ts = start + i
        try:
            text = line(measurement, tags, fields, ts)
        except PointError as err:
            assert refusal_expected(measurement, tags, fields), (measurement, tags, fields, err)
            assert err.part and err.problem and str(err).startswith(err.part)
            STATS["refused"] += 1
            continue
        assert not refusal_expected(measurement, tags, fields), (measurement, tags, fields, text)
        assert "\n" not in text and "\r" not in text
        if not _readable(measurement, tags, fields, schema):
            continue  # a type conflict within the batch: not this writer's to refuse
        lines.append(text)
        present = {k: v for k, v in tags.items() if v is not None}
        wanted.append((measurement, present, dict(fields), ts))
    STATS["points"] += len(batch)
    before = _measurements(influx)
    influx.write_lines(lines)  # one write; an InfluxError here is a line the writer should have refused
    STATS["writes"] += 1
    names = {p[0] for p in wanted} | (_measurements(influx) - before)
    stored = _stored(influx, names, start, start + HOUR_MS)
    # JSON gives a float with no fraction as an integer (4.4e16 reads 44209440448299550):
    # read it back as the float it was written as (the line said so: no "i").
    for (_, _, got, _), (_, _, sent, _) in zip(stored, wanted, strict=False):
        for key, value in sent.items():
            if isinstance(value, float) and type(got.get(key)) is int:
                got[key] = float(got[key])
    assert stored == wanted
    STATS["stored"] += len(stored)
    STATS["stored_with_escapes"] += sum(
        bool(ESCAPED.search(m + "".join(f"{k}{v}" for k, v in (*t.items(), *f.items())))) for m, t, f, _ in stored
    )


# --------------------------------------------------------- named cases


@pytest.mark.parametrize(
    ("measurement", "tags", "fields", "part", "problem"),
    [
        ("event", {"bed": "a\nb"}, {"v": 1}, "tag bed", "a line break"),
        ("event", {"bed": "a\rb"}, {"v": 1}, "tag bed", "a carriage return"),
        ("event", {"bed": "a\tb"}, {"v": 1}, "tag bed", "a tab"),
        ("event", {"bed": "a\x00"}, {"v": 1}, "tag bed", "a NUL character"),
        ("event", {"bed": "a\\"}, {"v": 1}, "tag bed", "a backslash"),
        ("event", {"bed": ""}, {"v": 1}, "tag bed", "an empty value"),
        ("event", {"b\ned": "x"}, {"v": 1}, "tag key 'b\\ned'", "a line break"),
        ("event", {"time": "x"}, {"v": 1}, "tag key time", "reserved"),
        ("event", {"bed": "x"}, {"bed": 1}, "field bed", "share its name with a tag"),
        ("ev\nent", {}, {"v": 1}, "measurement", "a line break"),
        ("#event", {}, {"v": 1}, "measurement", "comment"),
        ("", {}, {"v": 1}, "measurement", "empty"),
        ("event", {}, {"te\rxt": "x"}, "field key 'te\\rxt'", "a carriage return"),
        ("event", {}, {"_field": "x"}, "field key _field", "reserved"),
        ("event", {}, {"text": "two\nlines"}, "field text", "a line break"),
        ("event", {}, {"text": "cr\r"}, "field text", "a carriage return"),
        ("event", {}, {"text": "nul\x00"}, "field text", "a NUL"),
        ("event", {}, {"text": "\udc80"}, "field text", "unpaired surrogate"),
        ("event", {}, {"text": "x" * 65_536}, "field text", "longer than"),
        ("event", {}, {"n": 2**63}, "field n", "64-bit"),
        ("event", {}, {"f": math.inf}, "field f", "cannot be stored"),
        ("event", {}, {}, "fields", "at least one field"),
    ],
)
def test_what_no_line_can_carry_is_refused_by_name(
    measurement: str, tags: dict[str, str | None], fields: dict[str, FieldValue], part: str, problem: str
) -> None:
    with pytest.raises(PointError) as caught:
        line(measurement, tags, fields, 1)
    assert caught.value.part == part
    assert problem in caught.value.problem


def test_the_old_silent_changes_now_round_trip_or_refuse(influx: Influx) -> None:
    """What used to be changed on the way (a line break in a tag became a space, one in
    a string field the two characters backslash-n) is refused; what 1.6 stores
    unchanged (a tab, a backslash, quotes in a string; spaces and commas in a tag)
    comes back identical."""
    with pytest.raises(PointError, match="tag bed: a line break"):
        line("note", {"bed": "a\nb"}, {"v": 1}, 1)
    with pytest.raises(PointError, match="field text: a line break"):
        line("note", {}, {"text": "a\nb"}, 1)
    ts = BASE_MS - 7 * HOUR_MS
    text = 'tab\there, "quoted", back\\slash and a trailing \\'
    influx.write_lines([line("note", {"bed": " bed 1, a=b "}, {"text": text}, ts)])
    query = 'SELECT "text" FROM "note" WHERE "bed" = $bed AND time = $t'
    rows = influx.query(query, {"bed": " bed 1, a=b ", "t": ts * 1_000_000})
    assert [r["text"] for s in rows for r in s.records()] == [text]
