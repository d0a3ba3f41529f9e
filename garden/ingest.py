"""What the hub makes of each MQTT message: points, or a reason to refuse it. Pure.

Telemetry is checked field by field before it becomes points, because a
payload on the broker can come from anything that can publish. A message
that fails is never half-written: it is refused whole, with a reason that
is counted and kept with the message in the dead-letter store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson

from firmware_bridge.topics import NAME_RE
from garden.alerting.lifecycle import ALERT_CHANGES, SEVERITY_ORDER
from garden.points import FieldValue, PointError, line, telemetry_lines
from garden.watering.need import Need

MAX_PAYLOAD = 64 * 1024
# Readings older than this, or this far in the future, are refused: a node
# with a reset clock, or a replay of something that is not ours.
MAX_AGE_MS = 400 * 86_400_000  # the raw retention period
MAX_AHEAD_MS = 86_400_000


_NUMBER_TYPES = (int, float)
# A run of 19 digits, found by a translate and a substring search: a tenth of a regex's time.
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_NINETEEN_DIGITS = b"0" * 19


@functools.lru_cache(maxsize=1024)
def _sensor_key_ok(key: str) -> bool:
    return len(key) <= 16 and NAME_RE.fullmatch(key) is not None


# A reading's own fields and tags: a calibrated value cannot take one of these names.
_READING_KEYS = frozenset({"raw", "seq", "boot", "error", "garden", "bed", "node", "sensor", "time"})


@functools.lru_cache(maxsize=4096)
def _name_ok(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


@functools.lru_cache(maxsize=1024)
def _field_name_ok(name: str) -> bool:
    return len(name) <= 32 and NAME_RE.fullmatch(name) is not None and name not in _READING_KEYS


def _int64(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


class Refused(ValueError):
    """A message the hub will not store. ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Points:
    lines: list[str]
    ts_ms: int | None = None  # the reading's own time, for the lag figure


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("wrong_type", f"{where} must be a number, got {type(value).__name__}")
    try:
        if not math.isfinite(value):
            raise Refused("not_finite", where)
        return float(value)
    except OverflowError:  # an integer no float holds (JSON has no limit on digits)
        raise Refused("out_of_range", f"{where} has {len(str(value))} digits") from None


def _integer(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused("wrong_type", f"{where} must be an integer")
    if not low <= value <= high:
        raise Refused("out_of_range", f"{where}={value}")
    return value


def _parse_json(payload: bytes) -> Any:
    """``json.loads``' answer, from orjson where it gives the same one (in a fraction of the time).

    What orjson refuses (NaN, 1e400, nesting past 1,024, a lone surrogate) goes to json,
    and so does a run of 19 digits or more: orjson makes an integer beyond 64 bits a float.
    """
    if _NINETEEN_DIGITS not in payload.translate(_DIGITS_TO_ZERO):
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(payload)
    return json.loads(payload)


def _load(payload: bytes) -> Mapping[str, Any]:
    if len(payload) > MAX_PAYLOAD:
        raise Refused("too_large", f"{len(payload)} bytes")
    try:
        body = _parse_json(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise Refused("not_json", str(err)[:80] or type(err).__name__) from None
    if not isinstance(body, dict):
        raise Refused("wrong_type", "payload must be a JSON object")
    return body


def telemetry_points(garden: str, node: str, payload: bytes, now_ms: int) -> Points:
    """Validate one telemetry message from ``node`` and turn it into points."""
    try:
        return _telemetry_points(garden, node, payload, now_ms)
    except OverflowError as err:  # an integer too large for a float
        raise Refused("out_of_range", str(err)) from None


def _telemetry_points(garden: str, node: str, payload: bytes, now_ms: int) -> Points:
    if not _name_ok(node):  # the hub takes it from the topic, which it has checked
        raise Refused("bad_name", f"node={node!r}"[:60])
    body = _load(payload)
    if body.get("node") != node:
        raise Refused("wrong_node", f"topic says {node!r}, payload says {body.get('node')!r}")
    ts = _integer(body.get("ts"), "ts", 0, 2**62)
    if ts < now_ms - MAX_AGE_MS:
        raise Refused("too_old", f"ts {ts}")
    if ts > now_ms + MAX_AHEAD_MS:
        raise Refused("in_future", f"ts {ts}")
    _integer(body.get("seq"), "seq", 0, 2**32 - 1)
    _integer(body.get("boot"), "boot", 1, 2**31)
    bed = body.get("bed")
    if bed is not None and not (isinstance(bed, str) and NAME_RE.fullmatch(bed)):
        raise Refused("bad_bed", repr(bed)[:40])
    raw, values, errors = body.get("raw", {}), body.get("values", {}), body.get("errors", {})
    if not isinstance(raw, dict) or not isinstance(values, dict) or not isinstance(errors, dict):
        raise Refused("wrong_type", "raw, values and errors must be objects")
    # The hub's hot path: plain type checks first, the message only on failure.
    for key, value in raw.items():
        if type(value) not in _NUMBER_TYPES or not math.isfinite(value):
            _number(value, f"raw.{key}")
    for key, fields in values.items():
        if type(fields) is not dict or not fields:
            raise Refused("wrong_type", f"values.{key} must be an object of numbers")
        for name, value in fields.items():
            if type(value) not in _NUMBER_TYPES or not math.isfinite(value):
                _number(value, f"values.{key}.{name}")
            if not _field_name_ok(name):
                raise Refused("bad_field_name", f"values.{key}.{name!r}"[:60])
    for key, code in errors.items():
        if not isinstance(code, str) or len(code) > 32:
            raise Refused("wrong_type", f"errors.{key}")
    for key in (*raw, *values, *errors):
        if not _sensor_key_ok(key):
            raise Refused("bad_sensor_key", repr(key)[:40])
    if not raw and not values and not errors:
        raise Refused("empty", "no sensor in the message")
    try:
        return Points(list(telemetry_lines(garden, body)), ts)
    except PointError as err:
        raise Refused("unstorable", str(err)) from None


def node_status_points(garden: str, node: str, payload: bytes, now_ms: int) -> Points:
    """A retained node status, as a ``node_status`` point at the hub's receive time."""
    body = _load(payload) if payload else {"state": "offline"}
    fields: dict[str, float | int | bool | str] = {"online": body.get("state") == "online"}
    for key in ("interval_s", "last_seen", "boot", "seq", "lost", "reboots", "readings"):
        value = body.get(key)
        if _int64(value):
            fields[key] = value
    battery = body.get("battery_v")
    if isinstance(battery, int | float) and not isinstance(battery, bool) and -1e6 < battery < 1e6:
        fields["battery_v"] = float(battery)  # a number, not NaN (no comparison holds), nor one no float holds
    bed = body.get("bed") if isinstance(body.get("bed"), str) and NAME_RE.fullmatch(body["bed"]) else None
    return Points([_line("node_status", {"garden": garden, "node": node, "bed": bed}, fields, now_ms)])


def _line(measurement: str, tags: Mapping[str, str | None], fields: Mapping[str, FieldValue], ts: int) -> str:
    """:func:`garden.points.line`, its refusal (a value no line can carry) made a counted reason."""
    try:
        return line(measurement, tags, fields, ts)
    except PointError as err:
        raise Refused("unstorable", str(err)) from None


def _obj(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def bridge_status_points(garden: str, bridge: str, payload: bytes, now_ms: int) -> Points:
    """A retained bridge status, as ``bridge_status`` and ``bridge_port`` points."""
    body = _load(payload) if payload else {"state": "offline"}
    counters, spool = _obj(body, "counters"), _obj(body, "spool")
    fields: dict[str, float | int | bool | str] = {"online": body.get("state") == "online"}
    for key in ("readings", "published", "rejected"):
        if _int64(counters.get(key)):
            fields[key] = counters[key]
    for key in ("depth", "dropped"):
        if _int64(spool.get(key)):
            fields[f"spool_{key}"] = spool[key]
    lines = [_line("bridge_status", {"garden": garden, "bridge": bridge}, fields, now_ms)]
    ports = _obj(body, "ports")
    for port, info in ports.items():
        if not isinstance(info, dict) or not isinstance(port, str) or "\\" in port:
            continue
        rejects = _obj(info, "rejects")
        port_fields: dict[str, float | int | bool | str] = {"open": bool(info.get("open"))}
        for key in ("frames", "opens"):
            if _int64(info.get(key)):
                port_fields[key] = info[key]
        total = 0
        for reason, count in rejects.items():
            if isinstance(reason, str) and NAME_RE.fullmatch(reason) and _int64(count) and _int64(total + count):
                port_fields[f"rejects_{reason}"] = count
                total += count
        port_fields["rejected"] = total
        lines.append(_line("bridge_port", {"garden": garden, "bridge": bridge, "port": port}, port_fields, now_ms))
    return Points(lines)


def _event_time(value: Any, now_ms: int) -> int:
    """An event's, alert's or need's own time: an integer in ms, within the raw retention and a day ahead."""
    ts = _integer(value, "ts", 0, 2**62)
    if ts > now_ms + MAX_AHEAD_MS or ts < now_ms - MAX_AGE_MS:
        raise Refused("out_of_range", f"ts {ts}")
    return ts


EVENT_NUMBERS = ("litres", "mm", "kg", "quantity", "interval_s")


def event_points(garden: str, kind: str, payload: bytes, now_ms: int) -> Points:
    """An event from the commons' journal (``garden/<g>/event/<type>``) as an ``event`` point.

    ``{"ts", "bed"?, "node"?, "who"?, "text"?, "change"?, "litres"?, ...}``;
    ``ts`` defaults to the hub's receive time when the publisher gave none.
    """
    body = _load(payload)
    ts = _event_time(body.get("ts", now_ms), now_ms)
    tags: dict[str, str | None] = {"garden": garden, "type": kind}
    for key in ("bed", "node"):
        value = body.get(key)
        if value is not None:
            if not (isinstance(value, str) and NAME_RE.fullmatch(value)):
                raise Refused("bad_name", f"{key}={value!r}"[:60])
            tags[key] = value
    fields: dict[str, float | int | bool | str] = {}
    for key in ("who", "text"):
        value = body.get(key)
        if isinstance(value, str) and value:
            fields[key] = value[:500]
    change = body.get("change")
    if change is not None:
        fields["change"] = json.dumps(change, separators=(",", ":"))[:500]
    for key in EVENT_NUMBERS:
        if key in body:
            fields[key] = _number(body[key], key)
    # Annotations show ``text``: an event always has one.
    fields.setdefault("text", kind)
    try:
        return Points([line("event", tags, fields, ts)])
    except PointError as err:
        raise Refused("unstorable", str(err)) from None


def alert_points(garden: str, kind: str, subject: str, payload: bytes, now_ms: int) -> Points:
    """An alert's change (``garden/<g>/alert/<kind>/<subject>``) as an ``alert`` point.

    ``{"ts", "transition", "severity", "text", "bed"?, "node"?, "by"?}``. An
    empty retained payload (a cleared alert) is no change and gives no point.
    """
    if not payload:
        return Points([])
    body = _load(payload)
    ts = _event_time(body.get("ts"), now_ms)
    transition = body.get("transition")
    if not isinstance(transition, str) or transition not in ALERT_CHANGES:
        raise Refused("bad_transition", repr(transition)[:40])
    severity = body.get("severity")
    if not isinstance(severity, str) or severity not in SEVERITY_ORDER:  # a list or object is unhashable
        raise Refused("bad_severity", repr(severity)[:40])
    if not NAME_RE.fullmatch(subject):
        raise Refused("bad_name", f"subject={subject!r}"[:60])
    tags: dict[str, str | None] = {"garden": garden, "kind": kind, "subject": subject, "state": transition}
    bed = body.get("bed")
    if bed is not None:
        if not (isinstance(bed, str) and NAME_RE.fullmatch(bed)):
            raise Refused("bad_name", f"bed={bed!r}"[:60])
        tags["bed"] = bed
    text = body.get("text")
    fields: dict[str, float | int | bool | str] = {
        "severity": severity,
        "text": text[:500] if isinstance(text, str) and text else f"{kind} {subject}: {transition}",
    }
    by = body.get("by")
    if isinstance(by, str) and by:
        fields["who"] = by[:64]
    try:
        return Points([line("alert", tags, fields, ts)])
    except PointError as err:
        raise Refused("unstorable", str(err)) from None


NEED_STATES = {need.value: need.level for need in Need}
NEED_NUMBERS = (
    "vwc_pct", "trigger_vwc", "critical_vwc", "fc_vwc", "wp_vwc",
    "hours_left", "hours_low", "hours_high", "balance_hours", "et0_mm", "kc", "p",
)  # fmt: skip


def need_points(garden: str, bed: str, payload: bytes, now_ms: int) -> Points:
    """A bed's watering need (``garden/<g>/bed/<bed>/need``) as a ``water_need`` point."""
    if not payload:
        return Points([])
    body = _load(payload)
    ts = _event_time(body.get("ts"), now_ms)
    state = body.get("state")
    if not isinstance(state, str) or state not in NEED_STATES:
        raise Refused("bad_state", repr(state)[:40])
    fields: dict[str, float | int | bool | str] = {"state": state, "level": NEED_STATES[state]}
    for key in NEED_NUMBERS:
        value = body.get(key)
        if value is not None:
            fields[key] = _number(value, key)
    try:
        return Points([line("water_need", {"garden": garden, "bed": bed}, fields, ts)])
    except PointError as err:
        raise Refused("unstorable", str(err)) from None
