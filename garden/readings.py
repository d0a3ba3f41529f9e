"""The readings of one bed or node, for ``garden readings``; and durations like ``24h``.

The name is matched against both the ``bed`` and the ``node`` tag, and it, the
garden, the sensor and the start time all go into InfluxQL as bound parameters.
The query text holds only this module's measurement, field and retention policy names.

**Resolution.** Over a long range every reading would be a year of five-minute
points, so the range picks the resolution (:func:`choose_resolution`): every
reading (``raw``) up to 2 days, the hourly rollups up to 60 days, the daily ones
beyond (docs/schema.md, garden/rollups.py). A rolled-up row has the same shape
as a reading: ``value`` and ``raw`` are the period's means, ``fields`` also holds
each field's ``<field>_min`` and ``<field>_max``, and it has no ``seq``, ``boot``
or ``error`` (a failed reading has no value to average). Its time is the start of
the period. The periods the hub has not rolled up yet (the current one, and any
after the newest rollup) are computed the same way from the raw readings, so the
newest rows are never missing. ``sensor_other`` readings have no rollups: they
show at ``raw`` resolution only. The dashboards pick their retention policy by the
same thresholds (``garden.schema.RP_CHOICES``, docs/dashboards.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.topics import NAME_RE
from garden.garden_status import READING_MEASUREMENTS
from garden.influx import Influx
from garden.rollups import DAILY, FIELDS, HOURLY

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
MAX_DURATION_S = 5 * 366 * 86_400  # the hourly rollups keep five years
_DURATION_RE = re.compile(r"(\d{1,9})\s*([smhdw])")
SENSOR_RE = re.compile(r"[a-z]{1,8}[0-9]{0,3}")

# measurement -> (its main calibrated field, unit)
MAIN_FIELD: dict[str, tuple[str, str]] = {
    "soil_moisture": ("vwc_pct", "%"),
    "soil_temperature": ("temp_c", "°C"),
    "air_temperature": ("temp_c", "°C"),
    "air_humidity": ("rh_pct", "%"),
    "light": ("lux", "lx"),
    "tank": ("litres", "l"),
    "battery": ("battery_v", "V"),
    "sensor_other": ("raw", ""),
}
TAGS = ("garden", "bed", "node", "sensor")


def parse_duration(text: str) -> int:
    """``30m``, ``24h``, ``7d``, ``2w``, ``90s`` to seconds. ValueError says what is wrong."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration: give a number and a unit (s, m, h, d, w), like 30m, 24h or 7d")
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be more than zero")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r}: at most five years")
    return seconds


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where readings come from: every reading (``raw``, the default retention policy), or
    the ``hourly`` or ``daily`` rollups (retention policies of those names)."""

    name: str
    period_ms: int  # 0: every reading
    label: str  # what a row is, for people

    @property
    def rolled_up(self) -> bool:
        return self.period_ms > 0


RAW = Resolution("raw", 0, "every reading")
HOURLY_MEANS = Resolution(HOURLY.name, HOURLY.ms, "hourly means")
DAILY_MEANS = Resolution(DAILY.name, DAILY.ms, "daily means")
RESOLUTIONS = {r.name: r for r in (RAW, HOURLY_MEANS, DAILY_MEANS)}
RAW_MAX_S = 2 * 86_400  # up to this range: every reading
HOURLY_MAX_S = 60 * 86_400  # up to this: hourly rollups; beyond: daily
_GROUP = {HOURLY.ms: HOURLY.group, DAILY.ms: DAILY.group}


def choose_resolution(since_s: int) -> Resolution:
    """The resolution for readings of the last ``since_s`` seconds (see the module docstring)."""
    if since_s <= RAW_MAX_S:
        return RAW
    if since_s <= HOURLY_MAX_S:
        return HOURLY_MEANS
    return DAILY_MEANS


def check_sensor(sensor: str) -> str:
    if not SENSOR_RE.fullmatch(sensor):
        raise ValueError(f"sensor {sensor!r} must be a kind and an index, like sm0, st0 or tk0")
    return sensor


@dataclass(frozen=True, slots=True)
class Reading:
    time_ms: int
    measurement: str
    bed: str | None
    node: str
    sensor: str
    value: float | None  # the measurement's main calibrated field
    unit: str
    raw: float | None
    error: str | None
    fields: Mapping[str, float] = field(default_factory=dict)  # every numeric field but seq/boot
    seq: int | None = None
    boot: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time_ms": self.time_ms,
            "measurement": self.measurement,
            "bed": self.bed,
            "node": self.node,
            "sensor": self.sensor,
            "value": self.value,
            "unit": self.unit,
            "raw": self.raw,
            "error": self.error,
            "fields": dict(self.fields),
            "seq": self.seq,
            "boot": self.boot,
        }


def _reading(measurement: str, record: Mapping[str, Any], tags: Mapping[str, str]) -> Reading:
    record = {**record, **tags}
    numbers = {
        k: float(v)
        for k, v in record.items()
        if k not in (*TAGS, "time", "seq", "boot", "error") and isinstance(v, int | float) and not isinstance(v, bool)
    }
    main, unit = MAIN_FIELD.get(measurement, ("raw", ""))
    seq, boot = record.get("seq"), record.get("boot")
    error = record.get("error")
    return Reading(
        time_ms=int(record["time"]),
        measurement=measurement,
        bed=record.get("bed") or None,
        node=str(record.get("node") or ""),
        sensor=str(record.get("sensor") or ""),
        value=numbers.get(main),
        unit=unit,
        raw=numbers.get("raw"),
        error=error if isinstance(error, str) else None,
        fields=numbers,
        seq=int(seq) if isinstance(seq, int | float) else None,
        boot=int(boot) if isinstance(boot, int | float) else None,
    )


def query_readings(
    influx: Influx,
    garden: str,
    name: str,
    *,
    since_s: int,
    now_ms: int,
    sensor: str | None = None,
    limit: int = 500,
    resolution: Resolution | None = None,
) -> list[Reading]:
    """Readings of the bed or node ``name`` since ``since_s`` ago, newest first, at most ``limit``;
    at ``resolution`` (default: :func:`choose_resolution` of ``since_s``)."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a bed or node name: 1-32 letters, digits, '-' or '_'")
    resolution = resolution or choose_resolution(since_s)
    params: dict[str, Any] = {
        "garden": garden,
        "name": name,
        "start": (now_ms - since_s * 1000) * 1_000_000,
        "limit": limit,
    }
    where = '"garden" = $garden AND ("bed" = $name OR "node" = $name) AND time > $start'
    if sensor is not None:
        params["sensor"] = check_sensor(sensor)
        where += ' AND "sensor" = $sensor'
    if resolution.rolled_up:
        rows = _rolled_up(influx, resolution, where, params, now_ms)
    else:
        sources = ", ".join(f'"{m}"' for m in READING_MEASUREMENTS)
        series = influx.query(f"SELECT * FROM {sources} WHERE {where} ORDER BY time DESC LIMIT $limit", params)
        rows = [(s.name, record, s.tags) for s in series for record in s.records()]
    # Only the newest ``limit`` become readings (each measurement answered up to ``limit``).
    rows.sort(key=_newest_first)
    return [_reading(*row) for row in rows[:limit]]


Row = tuple[str, dict[str, Any], Mapping[str, str]]  # measurement, record, series tags


def _newest_first(row: Row) -> tuple[int, str, str]:
    _m, record, tags = row
    node = tags.get("node") or record.get("node") or ""
    sensor = tags.get("sensor") or record.get("sensor") or ""
    return (-int(record["time"]), str(node), str(sensor))


def _aggregates(measurement: str) -> str:
    """mean (under the field's name), min and max of each field: what a rollup holds."""
    return ", ".join(
        f'mean("{f}") AS "{f}", min("{f}") AS "{f}_min", max("{f}") AS "{f}_max"' for f in FIELDS[measurement]
    )


def _rolled_up(influx: Influx, resolution: Resolution, where: str, params: Mapping[str, Any],
               now_ms: int) -> list[Row]:  # fmt: skip
    """The newest rows of the rollups; then the periods not rolled up yet, from the raw readings.

    A series has one row per period, so the newest ``limit`` rows lie within ``limit`` periods
    of now, unless the series stopped before: the rollups are asked for those periods first
    (a year of hourly rollups is slow to read backwards), and for the whole range only when
    that gave fewer than ``limit`` rows."""
    rp = resolution.name
    period = resolution.period_ms
    current = now_ms - now_ms % period
    start_ns = int(params["start"])
    limit = int(params["limit"])
    sources = ", ".join(f'"{rp}"."{m}"' for m in FIELDS)
    query = f"SELECT * FROM {sources} WHERE {where} AND time >= $near ORDER BY time DESC LIMIT $limit"
    near_ns = max(start_ns, (current - limit * period) * 1_000_000)
    series = influx.query(query, {**params, "near": near_ns})
    rows: list[Row] = [(s.name, record, s.tags) for s in series for record in s.records()]
    if len(rows) < limit and near_ns > start_ns:
        series = influx.query(query, {**params, "near": start_ns})
        rows = [(s.name, record, s.tags) for s in series for record in s.records()]
    # Per measurement, the periods after its newest rollup (at least the current one).
    newest: dict[str, int] = {}
    for measurement, record, _tags in rows:
        newest[measurement] = max(newest.get(measurement, 0), int(record["time"]))
    statements = []
    tail_params = dict(params)
    for i, measurement in enumerate(FIELDS):
        tail_start = min(current, newest[measurement] + period) if measurement in newest else 0
        tail_params[f"tail{i}"] = max(start_ns, tail_start * 1_000_000)
        statements.append(
            f'SELECT {_aggregates(measurement)} FROM "{measurement}" WHERE {where} AND time >= $tail{i} '
            f'GROUP BY time({_GROUP[period]}), "bed", "node", "sensor" fill(none) ORDER BY time DESC LIMIT $limit'
        )
    for s in influx.query("; ".join(statements), tail_params):
        tags = {k: v for k, v in s.tags.items() if v}
        for record in s.records():
            if any(v is not None for k, v in record.items() if k != "time"):
                rows.append((s.name, {k: v for k, v in record.items() if v is not None}, tags))
    return rows


def latest_per_sensor(influx: Influx, garden: str, node: str, *, now_ms: int, days: int = 30) -> list[Reading]:
    """The newest reading of each of a node's sensors in the last ``days``."""
    sources = ", ".join(f'"{m}"' for m in READING_MEASUREMENTS)
    series = influx.query(
        f'SELECT * FROM {sources} WHERE "garden" = $garden AND "node" = $node AND time > $start '
        'GROUP BY "sensor" ORDER BY time DESC LIMIT 1',
        {"garden": garden, "node": node, "start": (now_ms - days * 86_400_000) * 1_000_000},
    )
    readings = [_reading(s.name, record, s.tags) for s in series for record in s.records()]
    readings.sort(key=lambda r: r.sensor)
    return readings
