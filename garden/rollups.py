"""Hourly and daily rollups of the readings, so a year of history stays fast to query.

The hub computes them with InfluxQL and writes them back through the same
write path, into the ``hourly`` and ``daily`` retention policies. Not
continuous queries (1.x only) and not tasks (Flux, which InfluxDB 3 dropped):
this works the same on 1.x, 2.x and 3.x.

A rolled-up point keeps the reading's field names for the mean (``vwc_pct``
is the hour's mean moisture) and adds ``<field>_min`` and ``<field>_max``,
so a dashboard switches retention policy without changing its fields.
Rollups are idempotent: the same hour, computed again, overwrites itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from garden.influx import Influx
from garden.points import FieldValue, line

log = logging.getLogger(__name__)

# The numeric fields of each reading measurement (docs/schema.md).
FIELDS: dict[str, tuple[str, ...]] = {
    "soil_moisture": ("raw", "vwc_pct"),
    "soil_temperature": ("raw", "temp_c"),
    "air_temperature": ("raw", "temp_c"),
    "air_humidity": ("raw", "rh_pct"),
    "light": ("raw", "lux"),
    "tank": ("raw", "distance_cm", "level_cm", "litres"),
    "battery": ("raw", "battery_v"),
}
TAGS = ("garden", "bed", "node", "sensor")


@dataclass(frozen=True, slots=True)
class Period:
    name: str  # the retention policy it goes to
    ms: int
    group: str  # InfluxQL GROUP BY time(...)


HOURLY = Period("hourly", 3_600_000, "1h")
DAILY = Period("daily", 86_400_000, "1d")


def rollup_query(measurement: str, period: Period) -> str:
    """The InfluxQL for one measurement; times come in as bound parameters."""
    parts = []
    for name in FIELDS[measurement]:
        parts += [f'mean("{name}") AS "{name}"', f'min("{name}") AS "{name}_min"', f'max("{name}") AS "{name}_max"']
    tags = ", ".join(f'"{t}"' for t in TAGS)
    return (
        f'SELECT {", ".join(parts)} FROM "{measurement}" WHERE time >= $start AND time < $end '
        f"GROUP BY time({period.group}), {tags}"
    )


def roll_up(influx: Influx, period: Period, start_ms: int, end_ms: int, source_rp: str = "") -> int:
    """Compute ``period`` rollups for whole periods in [start, end); return points written."""
    start = start_ms - start_ms % period.ms
    end = end_ms - end_ms % period.ms
    if end <= start:
        return 0
    written = 0
    for measurement in FIELDS:
        query = rollup_query(measurement, period)
        if source_rp:
            query = query.replace(f'FROM "{measurement}"', f'FROM "{source_rp}"."{measurement}"')
        series = influx.query(query, {"start": start * 1_000_000, "end": end * 1_000_000})
        lines = []
        for s in series:
            tags = {k: v for k, v in s.tags.items() if v}
            for record in s.records():
                fields: dict[str, FieldValue] = {
                    k: float(v) for k, v in record.items() if k != "time" and isinstance(v, int | float)
                }
                if fields:
                    lines.append(line(measurement, tags, fields, int(record["time"])))
        if lines:
            influx.write_lines(lines, retention_policy=period.name)
            written += len(lines)
    log.debug("%s rollup %d..%d: %d points", period.name, start, end, written)
    return written
