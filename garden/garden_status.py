"""What ``garden status`` shows: per bed, the latest readings, a day of moisture, and water need.

The pure parts (water-need bands, sparkline, ages) do no I/O. :func:`collect_status`
asks InfluxDB with InfluxQL; the garden id goes in bound parameters, and the
measurement and field names in the query text are this module's constants.

Rows: one per bed, holding the nodes whose newest reading carries that bed;
then one per node that has no bed (yet). A node that moved from one bed to
another counts for the bed of its newest reading only.

Water need uses fixed bands on the moisture (volumetric water content):
``>= 20 %`` ok, ``15-20`` soon, ``10-15`` needs water, ``< 10`` critical. The
watering engine, with per-bed thresholds and rotas, comes later.

Bounded by time, so a year of history costs no more than a day: the newest
readings are looked for in the last :data:`RECENT_MS` of raw readings only. The
nodes that have been silent for longer (but not for 30 days) are found in the
hourly rollups (garden/rollups.py: a few hundred points per series a month),
and their newest readings are then read from the raw readings of those nodes,
from the last hour their rollups hold. Without hourly rollups (a hub that has
not rolled up yet, or a 2.x bucket without that mapping) the whole 30 days of
raw readings are read instead, as before. The sparkline's hourly means are from
the raw readings of the last day (the current hour is never rolled up yet).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from garden.influx import Influx, InfluxQueryError, Series
from garden.points import MEASUREMENTS, OTHER_MEASUREMENT
from garden.rollups import FIELDS as ROLLUP_FIELDS
from garden.rollups import HOURLY

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LOOKBACK_MS = 30 * DAY_MS  # a node silent for longer drops out of the status
RECENT_MS = 6 * HOUR_MS  # newest readings are looked for here first; older ones through the hourly rollups

# (floor in % VWC, need), checked in order; below the last floor: critical.
NEED_BANDS: tuple[tuple[float, str], ...] = ((20.0, "ok"), (15.0, "soon"), (10.0, "needs water"))
CRITICAL = "critical"
NEEDS = ("ok", "soon", "needs water", CRITICAL)

BLOCKS = "▁▂▃▄▅▆▇█"
MIN_SPAN_PCT = 5.0  # a sparkline spans at least this much, so noise stays flat

READING_MEASUREMENTS: tuple[str, ...] = (*sorted(set(MEASUREMENTS.values())), OTHER_MEASUREMENT)


def water_need(vwc_pct: float | None) -> str | None:
    """The need band of a moisture reading; None when there is no reading."""
    if vwc_pct is None:
        return None
    for floor, need in NEED_BANDS:
        if vwc_pct >= floor:
            return need
    return CRITICAL


def sparkline(values: Sequence[float | None], *, min_span: float = MIN_SPAN_PCT) -> str:
    """One block character per value (``▁`` lowest to ``█`` highest), a space where None.

    Scaled to the values' own range, widened to at least ``min_span`` around
    its middle so a flat but noisy series draws flat.
    """
    known = [v for v in values if v is not None]
    if not known:
        return " " * len(values)
    lo, hi = min(known), max(known)
    if hi - lo < min_span:
        middle = (lo + hi) / 2
        lo, hi = middle - min_span / 2, middle + min_span / 2
    top = len(BLOCKS) - 1
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            out.append(BLOCKS[min(top, max(0, round((v - lo) / (hi - lo) * top)))])
    return "".join(out)


def format_age(age_ms: int | None) -> str:
    """``42 s``, ``5 min``, ``3 h 10 min``, ``2 d``; ``never`` for None."""
    if age_ms is None:
        return "never"
    seconds = max(0, age_ms) // 1000
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86_400} d"


def hour_slots(now_ms: int, hours: int) -> list[int]:
    """Start times of the last ``hours`` clock hours, oldest first; the last holds ``now_ms``."""
    current = now_ms - now_ms % HOUR_MS
    return [current - (hours - 1 - i) * HOUR_MS for i in range(hours)]


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort ``bed-2`` before ``bed-10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One bed (``bed`` set) or one node without a bed (``bed`` None, one node)."""

    bed: str | None
    nodes: tuple[str, ...]
    vwc_pct: float | None
    hourly_vwc: tuple[float | None, ...]  # oldest first, one per clock hour
    soil_temp_c: float | None
    air_temp_c: float | None
    tank_litres: float | None
    last_seen_ms: int | None

    @property
    def name(self) -> str:
        return self.bed if self.bed is not None else self.nodes[0]

    @property
    def need(self) -> str | None:
        return water_need(self.vwc_pct)

    @property
    def sparkline(self) -> str:
        return sparkline(self.hourly_vwc)

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "bed": self.bed,
            "nodes": list(self.nodes),
            "vwc_pct": self.vwc_pct,
            "need": self.need,
            "hourly_vwc_pct": list(self.hourly_vwc),
            "sparkline": self.sparkline,
            "soil_temp_c": self.soil_temp_c,
            "air_temp_c": self.air_temp_c,
            "tank_litres": self.tank_litres,
            "last_seen_ms": self.last_seen_ms,
            "age_s": None if self.last_seen_ms is None else max(0, now_ms - self.last_seen_ms) // 1000,
        }


@dataclass(frozen=True, slots=True)
class GardenStatus:
    garden: str
    now_ms: int
    hours: int
    rows: tuple[StatusRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "garden": self.garden,
            "now_ms": self.now_ms,
            "hours": self.hours,
            "need_bands_pct": {"ok": ">=20", "soon": "15-20", "needs water": "10-15", "critical": "<10"},
            "rows": [row.to_json(self.now_ms) for row in self.rows],
        }


# ------------------------------------------------------------------ reading

# (bed, node, sensor) -> (time ms, value): the newest value of one probe.
Latest = dict[tuple[str, str, str], tuple[int, float]]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _latest(series: Iterable[Series]) -> Latest:
    out: Latest = {}
    for s in series:
        key = (s.tags.get("bed", ""), s.tags.get("node", ""), s.tags.get("sensor", ""))
        for row in s.values:
            value = _number(row[1])
            if value is not None and isinstance(row[0], int):
                previous = out.get(key)
                if previous is None or row[0] > previous[0]:
                    out[key] = (row[0], value)
    return out


def _latest_query(measurement: str, field: str, where: str = "") -> str:
    return (
        f'SELECT last("{field}") FROM "{measurement}" WHERE "garden" = $garden AND time > $start{where} '
        'GROUP BY "bed", "node", "sensor"'
    )


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


# What the status reads of each probe: (measurement, field), and "seq" of every reading for "seen".
LATEST_FIELDS = (("soil_moisture", "vwc_pct"), ("soil_temperature", "temp_c"), ("air_temperature", "temp_c"),
                 ("tank", "litres"))  # fmt: skip


def _latest_all(influx: Influx, params: Mapping[str, Any], where: str = "") -> list[Latest]:
    """The newest value of each probe for LATEST_FIELDS, then the newest reading of each probe
    (``seen``), with ``time > $start`` (and ``where``)."""
    out = [_latest(influx.query(_latest_query(m, f, where), params)) for m, f in LATEST_FIELDS]
    sources = ", ".join(f'"{m}"' for m in READING_MEASUREMENTS)
    out.append(
        _latest(
            influx.query(
                f'SELECT last("seq") FROM {sources} WHERE "garden" = $garden AND time > $start{where} '
                'GROUP BY "bed", "node", "sensor"',
                params,
            )
        )
    )
    return out


def _last_rolled_up_hours(influx: Influx, garden: str, start_ms: int) -> dict[str, int] | None:
    """Per node, the start of the newest hour its hourly rollups hold since ``start_ms``; None
    when there are no hourly rollups to ask (none written yet, or no such retention policy)."""
    sources = ", ".join(f'"{HOURLY.name}"."{m}"' for m in ROLLUP_FIELDS)
    try:
        series = influx.query(
            f'SELECT last("raw") FROM {sources} WHERE "garden" = $garden AND time > $start GROUP BY "node"',
            {"garden": garden, "start": start_ms * 1_000_000},
        )
    except InfluxQueryError:
        return None
    hours: dict[str, int] = {}
    for s in series:
        node = s.tags.get("node", "")
        for row in s.values:
            if node and isinstance(row[0], int):
                hours[node] = max(hours.get(node, row[0]), row[0])
    return hours or None


def collect_status(influx: Influx, garden: str, now_ms: int, *, hours: int = 24) -> GardenStatus:
    """The garden's status from InfluxDB. Raises an InfluxError when it cannot be read."""
    lookback = now_ms - LOOKBACK_MS
    recent = now_ms - RECENT_MS
    latest = _latest_all(influx, {"garden": garden, "start": recent * 1_000_000})
    heard = {node for (_b, node, _s) in latest[-1]}
    rolled = _last_rolled_up_hours(influx, garden, lookback)
    if rolled is None:  # no rollups to ask: the whole lookback of raw readings
        older = _latest_all(influx, {"garden": garden, "start": lookback * 1_000_000, "end": recent * 1_000_000},
                            ' AND time <= $end')  # fmt: skip
    else:
        silent = sorted(node for node in rolled if node not in heard)
        older = [{} for _ in latest]
        if silent:
            # The silent nodes only, from the newest hour their rollups hold (what came after
            # that hour was not rolled up yet, and is then in the recent window, or nowhere).
            params: dict[str, Any] = {"garden": garden, "start": (min(rolled[n] for n in silent) - 1) * 1_000_000,
                                      "end": recent * 1_000_000}  # fmt: skip
            params |= {f"n{i}": node for i, node in enumerate(silent)}
            nodes = " OR ".join(f'"node" = $n{i}' for i in range(len(silent)))
            older = _latest_all(influx, params, f" AND time <= $end AND ({nodes})")
    moisture, soil_temp, air_temp, tank, seen = (_merge(o, r) for o, r in zip(older, latest, strict=True))
    slots = hour_slots(now_ms, hours)
    hourly = influx.query(
        'SELECT mean("vwc_pct") FROM "soil_moisture" WHERE "garden" = $garden AND time >= $start '
        'GROUP BY time(1h), "bed", "node" fill(none)',
        {"garden": garden, "start": slots[0] * 1_000_000},
    )
    return build_status(garden, now_ms, slots, moisture, soil_temp, air_temp, tank, seen, hourly)


def _merge(older: Latest, recent: Latest) -> Latest:
    """Each probe's newest value of the two."""
    out = dict(older)
    for key, (t, v) in recent.items():
        if key not in out or t >= out[key][0]:
            out[key] = (t, v)
    return out


def build_status(
    garden: str,
    now_ms: int,
    slots: Sequence[int],
    moisture: Latest,
    soil_temp: Latest,
    air_temp: Latest,
    tank: Latest,
    seen: Latest,
    hourly: Iterable[Series],
) -> GardenStatus:
    """Group the query answers into rows (pure: see the module docstring for the rules)."""
    # Each node belongs to the bed ("" for none) of its newest reading.
    newest: dict[str, tuple[int, str]] = {}
    for (bed, node, _sensor), (t, _v) in seen.items():
        if node and (node not in newest or t > newest[node][0]):
            newest[node] = (t, bed)
    row_of = {node: (bed, "" if bed else node) for node, (_t, bed) in newest.items()}  # row key: (bed, lone node)
    members: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node, key in row_of.items():
        members[key].append(node)

    def of_row(latest: Latest, bed: str, nodes: Sequence[str]) -> list[tuple[int, float]]:
        return [tv for (b, n, _s), tv in latest.items() if b == bed and n in nodes]

    per_hour: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in hourly:
        bed, node = s.tags.get("bed", ""), s.tags.get("node", "")
        key = (bed, "" if bed else node)
        if row_of.get(node) != key:  # hours this node spent elsewhere
            continue
        for row in s.values:
            value = _number(row[1])
            if value is not None and isinstance(row[0], int):
                per_hour[key][row[0]].append(value)

    rows = []
    for (bed, lone), nodes in members.items():
        nodes.sort(key=natural_key)
        vwc = [v for _t, v in of_row(moisture, bed, nodes)]
        tank_values = [v for _t, v in of_row(tank, bed, nodes)]
        seen_times = [t for t, _v in of_row(seen, bed, nodes)]
        hours = per_hour.get((bed, lone), {})
        rows.append(
            StatusRow(
                bed=bed or None,
                nodes=tuple(nodes),
                vwc_pct=_mean(vwc),
                hourly_vwc=tuple(_mean(hours[t]) if t in hours else None for t in slots),
                soil_temp_c=_mean([v for _t, v in of_row(soil_temp, bed, nodes)]),
                air_temp_c=_mean([v for _t, v in of_row(air_temp, bed, nodes)]),
                tank_litres=round(sum(tank_values), 1) if tank_values else None,
                last_seen_ms=max(seen_times) if seen_times else None,
            )
        )
    rows.sort(key=lambda r: (r.bed is None, natural_key(r.name)))
    return GardenStatus(garden, now_ms, len(slots), tuple(rows))
