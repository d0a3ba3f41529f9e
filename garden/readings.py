"""The readings of one bed or node, for ``garden readings``; and durations like ``24h``.

The name is matched against both the ``bed`` and the ``node`` tag, and it, the
garden, the sensor and the start time all go into InfluxQL as bound parameters.
The query text holds only this module's measurement names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.topics import NAME_RE
from garden.garden_status import READING_MEASUREMENTS
from garden.influx import Influx

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
) -> list[Reading]:
    """Readings of the bed or node ``name`` since ``since_s`` ago, newest first, at most ``limit``."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a bed or node name: 1-32 letters, digits, '-' or '_'")
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
    sources = ", ".join(f'"{m}"' for m in READING_MEASUREMENTS)
    series = influx.query(f"SELECT * FROM {sources} WHERE {where} ORDER BY time DESC LIMIT $limit", params)
    readings = [_reading(s.name, record, s.tags) for s in series for record in s.records()]
    readings.sort(key=lambda r: (-r.time_ms, r.node, r.sensor))
    return readings[:limit]


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
