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
import re
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

# What each part of a line may hold. Escaping covers the separators (space,
# comma, "=" and, in a string, '"' and "\"); what no escape can carry is
# refused with a PointError naming the part, before anything is sent, because
# the server would otherwise split the line, drop the point, or store a
# changed value (docs/schema.md, "What the writer refuses"):
# - a line break or carriage return anywhere: a point is one line. InfluxDB 1.x
#   and 2.x keep a raw line break inside a quoted string, but the line-protocol
#   spec says it is not supported, and the hub's spool and its one-point-at-a-time
#   retry split batches on line breaks;
# - NUL, a tab or any other control character in a name (measurement, tag key or
#   value, field key): InfluxDB 3 ends a name at a tab and refuses NUL;
# - a backslash in a name: 1.x has no escape for one before a space or comma, and
#   1.x and 3.x read the escape "\\" in a measurement differently;
# - an unpaired surrogate anywhere: not Unicode, it cannot be encoded as UTF-8;
# - an empty name or tag value (InfluxDB drops empty tags: pass None to leave a
#   tag out), a measurement starting with "#" (a comment line, dropped without a
#   word), the keys "time" (refused), "_field" and "_measurement" (2.x drops the
#   point), a field key that is also a tag key (read back as "<key>_1");
# - more than 64 KiB in one string, an integer outside int64, NaN or infinity,
#   a time outside what InfluxDB stores (1677-2262).
_ESCAPES = {",": r"\,", "=": r"\=", " ": r"\ "}
_TAG_ESCAPES = str.maketrans(_ESCAPES)
_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ "})
_FIELD_STR_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\"})
_BAD_IN_NAME = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")
_BAD_IN_TEXT = re.compile(r"[\n\r\x00\ud800-\udfff]")
_RESERVED_KEYS = frozenset({"time", "_field", "_measurement"})
MAX_STRING_BYTES = 65_535
INT64 = 2**63
# InfluxDB stores int64 nanoseconds: 1677-09-21 to 2262-04-11.
MIN_TS_MS = -(2**63) // 1_000_000 + 1
MAX_TS_MS = (2**63 - 1) // 1_000_000 - 1

_WHAT = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL character", "\\": "a backslash"}

FieldValue = float | int | bool | str


class PointError(ValueError):
    """A point that cannot be written as given; ``part`` names where (``tag bed``, ``field text``)."""

    def __init__(self, part: str, problem: str) -> None:
        super().__init__(f"{part}: {problem}")
        self.part = part
        self.problem = problem


def _describe(char: str) -> str:
    if char in _WHAT:
        return _WHAT[char]
    if "\ud800" <= char <= "\udfff":
        return "an unpaired surrogate (not valid Unicode)"
    return f"the control character U+{ord(char):04X}"


def _check_text(part: str, text: str, bad: re.Pattern[str]) -> None:
    found = bad.search(text)
    if found is not None:
        raise PointError(part, f"{_describe(found.group())} cannot be stored (at character {found.start()})")
    if len(text) * 4 > MAX_STRING_BYTES and len(text.encode()) > MAX_STRING_BYTES:
        raise PointError(part, f"longer than InfluxDB's {MAX_STRING_BYTES} bytes")


def _check_name(part: str, name: str) -> None:
    if not name:
        raise PointError(part, "cannot be empty")
    _check_text(part, name, _BAD_IN_NAME)


def _field(key: str, value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise PointError(f"field {key}", f"{value} is outside a 64-bit integer")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PointError(f"field {key}", f"{value!r} cannot be stored")
        return repr(value)
    _check_text(f"field {key}", value, _BAD_IN_TEXT)
    return '"' + value.translate(_FIELD_STR_ESCAPES) + '"'


def line(
    measurement: str,
    tags: Mapping[str, str | None],
    fields: Mapping[str, FieldValue],
    ts_ms: int,
) -> str:
    """One point in line protocol, at millisecond precision.

    Tags whose value is None are left out; tags are sorted, as InfluxDB prefers.
    Raises PointError, naming the part, for anything the line cannot carry
    unchanged (see the comment above): nothing is half-built or sent.
    """
    if not fields:
        raise PointError("fields", "a point needs at least one field")
    if not MIN_TS_MS <= ts_ms <= MAX_TS_MS:
        raise PointError("time", f"{ts_ms} ms is outside what InfluxDB stores (years 1677-2262)")
    tag_items = tuple(sorted((k, v) for k, v in tags.items() if v is not None))
    head = _series(measurement, tag_items)
    for key in fields:
        if key in tags and tags[key] is not None:
            raise PointError(f"field {key}", "a field cannot share its name with a tag")
    body = ",".join(f"{_key(k)}={_field(k, v)}" for k, v in fields.items())
    return f"{head} {body} {ts_ms}"


# The same few series and field names come back with every reading: checking and
# escaping each once (and caching it) is most of what makes a line cheap to build.
@functools.lru_cache(maxsize=16384)
def _series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    _check_name("measurement", measurement)
    if measurement.startswith("#"):
        raise PointError("measurement", "cannot start with '#' (InfluxDB reads the line as a comment)")
    head = measurement.translate(_MEASUREMENT_ESCAPES)
    for key, value in tags:
        _check_name(f"tag key {key!r}", key)
        if key in _RESERVED_KEYS:
            raise PointError(f"tag key {key}", "is reserved by InfluxDB")
        if not value:
            raise PointError(f"tag {key}", "an empty value cannot be stored (InfluxDB drops it): leave the tag out")
        _check_name(f"tag {key}", value)
        head += f",{key.translate(_TAG_ESCAPES)}={value.translate(_TAG_ESCAPES)}"
    return head


@functools.lru_cache(maxsize=1024)
def _key(name: str) -> str:
    _check_name(f"field key {name!r}", name)
    if name in _RESERVED_KEYS:
        raise PointError(f"field key {name}", "is reserved by InfluxDB")
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
    if not MIN_TS_MS <= ts <= MAX_TS_MS:
        raise PointError("time", f"{ts} ms is outside what InfluxDB stores (years 1677-2262)")
    tail = f",seq={int(message['seq'])}i,boot={int(message['boot'])}i {ts}"
    for sensor in sorted(set(raw) | set(values) | set(errors)):
        parts = []
        if sensor in raw:
            parts.append(f"raw={_float('raw', raw[sensor])}")
        for name, value in values.get(sensor, {}).items():
            if name in _TELEMETRY_KEYS:
                raise PointError(f"field {name}", f"{sensor}'s calibrated value cannot reuse a reading's own key")
            parts.append(f"{_key(name)}={_float(name, value)}")
        if sensor in errors:
            parts.append(f"error={_field('error', errors[sensor])}")
        measurement = _measurement(sensor)
        tags = (("bed", bed), ("garden", garden), ("node", node), ("sensor", sensor)) if bed else (
            ("garden", garden), ("node", node), ("sensor", sensor))  # fmt: skip
        yield f"{_series(measurement, tags)} {','.join(parts)}{tail}"


@functools.lru_cache(maxsize=1024)
def _measurement(sensor: str) -> str:
    return MEASUREMENTS.get(sensor_kind(sensor), OTHER_MEASUREMENT)


# A reading's own fields and tags: a calibrated value by one of these names would
# overwrite it in the line, or be read back under another name.
_TELEMETRY_KEYS = frozenset({"raw", "seq", "boot", "error", "garden", "bed", "node", "sensor"})


def _float(key: str, value: float) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise PointError(f"field {key}", f"{value!r} cannot be stored")
    return repr(number)
