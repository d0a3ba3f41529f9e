"""InfluxDB line protocol, and the points a telemetry message becomes. Pure code.

:func:`line` is the project's one line-protocol writer: every point goes
through it, and its escaping is what keeps user text (a bed's name, a
harvest note) from ever breaking a line. The schema is in docs/schema.md.

Built by hand rather than with influxdb-client's ``Point``: an escaped
f-string costs about a microsecond, ``Point.to_line_protocol()`` about
fifteen, and the hub builds one per sensor per reading.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any

from firmware_bridge.calibration import sensor_kind

# Measurement per sensor kind (docs/schema.md).
MEASUREMENTS: dict[str, str] = {
    "sm": "soil_moisture",
    "st": "soil_temperature",
    "at": "air_temperature",
    "rh": "air_humidity",
    "lx": "light",
    "tk": "tank",
    "bt": "battery",
}
OTHER_MEASUREMENT = "sensor_other"

# InfluxDB 1.x has no escape for a backslash in a tag (one before a space
# or comma changes the line), so tags refuse it; tags hold names, not prose.
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " "})
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": " ", "\r": " "})
# Line breaks inside a string field are stored as the two characters \n, \r:
# a raw one would end the line for some servers.
_FIELD_STR_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": "\\n", "\r": "\\r"})

FieldValue = float | int | bool | str


class PointError(ValueError):
    """A value that cannot be written (NaN, infinity, an empty field set)."""


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PointError(f"{value!r} cannot be stored")
        return repr(value)
    return '"' + value.translate(_FIELD_STR_ESCAPES) + '"'


def line(
    measurement: str,
    tags: Mapping[str, str | None],
    fields: Mapping[str, FieldValue],
    ts_ms: int,
) -> str:
    """One point in line protocol, at millisecond precision.

    Tags with an empty or None value are left out (InfluxDB has no empty
    tags); tags are sorted, as InfluxDB prefers. Field names and tag keys
    are escaped like tag values. Raises PointError for NaN/inf or no fields.
    """
    if not fields:
        raise PointError(f"{measurement}: a point needs at least one field")
    head = _series(measurement, tuple(sorted((k, v) for k, v in tags.items() if v)))
    body = ",".join(f"{_key(k)}={_field(v)}" for k, v in fields.items())
    return f"{head} {body} {ts_ms}"


# The same few series and field names come back with every reading: escaping
# each once (and caching it) is most of what makes a line cheap to build.
@functools.lru_cache(maxsize=16384)
def _series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    head = measurement.translate(_MEASUREMENT_ESCAPES)
    for key, value in tags:
        if "\\" in value:
            raise PointError(f"tag {key}={value!r}: a backslash cannot be stored in a tag")
        head += f",{key.translate(_TAG_ESCAPES)}={value.translate(_TAG_ESCAPES)}"
    return head


@functools.lru_cache(maxsize=1024)
def _key(name: str) -> str:
    return name.translate(_TAG_ESCAPES)


def telemetry_lines(garden: str, message: Mapping[str, Any]) -> Iterator[str]:
    """The points of one telemetry message (already validated): one per sensor.

    Each carries ``raw``, the calibrated fields, ``seq`` and ``boot``; a
    sensor that failed carries ``raw`` (if sent) and ``error``. This is the
    hub's hot path, so it builds the lines directly rather than through
    :func:`line`; a test checks the two agree.
    """
    node = message["node"]
    bed = message.get("bed")
    ts = message["ts"]
    raw: Mapping[str, float] = message.get("raw", {})
    values: Mapping[str, Mapping[str, float]] = message.get("values", {})
    errors: Mapping[str, str] = message.get("errors", {})
    tail = f",seq={int(message['seq'])}i,boot={int(message['boot'])}i {ts}"
    for sensor in sorted(set(raw) | set(values) | set(errors)):
        parts = []
        if sensor in raw:
            parts.append(f"raw={_float(raw[sensor])}")
        for name, value in values.get(sensor, {}).items():
            parts.append(f"{_key(name)}={_float(value)}")
        if sensor in errors:
            parts.append(f"error={_field(errors[sensor])}")
        measurement = MEASUREMENTS.get(sensor_kind(sensor), OTHER_MEASUREMENT)
        tags = (("bed", bed), ("garden", garden), ("node", node), ("sensor", sensor)) if bed else (
            ("garden", garden), ("node", node), ("sensor", sensor))  # fmt: skip
        yield f"{_series(measurement, tags)} {','.join(parts)}{tail}"


def _float(value: float) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise PointError(f"{value!r} cannot be stored")
    return repr(number)
