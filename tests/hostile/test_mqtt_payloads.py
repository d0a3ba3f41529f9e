"""Hostile MQTT payloads against the hub's ingest (garden/ingest.py), at unit level.

Every payload either becomes exactly its points, each one clean line of line
protocol, or is refused with a specific, counted reason (``Refused.reason``):
never another exception, which the hub could only file under the catch-all
``invalid``. A refused payload goes to the dead-letter store byte for byte.

The end-to-end path (MQTT, the hub process, ``garden hub dead-letters``) is
tests/integration/test_hub_pipeline.py::test_malformed_payloads_are_dead_lettered_and_ingest_goes_on,
for the reasons it lists; the reasons it does not reach are here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from garden.dead_letters import DeadLetterStore
from garden.ingest import (
    MAX_PAYLOAD,
    Points,
    Refused,
    alert_points,
    bridge_status_points,
    event_points,
    need_points,
    node_status_points,
    telemetry_points,
)
from garden.points import line

NOW = 1_800_000_000_000
DAY = 86_400_000

# Every reason the ingest gives. "invalid" (the hub's catch-all) is not one of them.
REASONS = {
    "too_large", "not_json", "wrong_type", "wrong_node", "too_old", "in_future", "out_of_range", "not_finite",
    "bad_bed", "bad_sensor_key", "bad_field_name", "empty", "unstorable", "bad_name", "bad_transition",
    "bad_severity", "bad_state",
}  # fmt: skip

Ingest = Callable[[bytes], Points]
INGESTS: dict[str, Ingest] = {
    "telemetry": lambda p: telemetry_points("g", "n1", p, NOW),
    "node_status": lambda p: node_status_points("g", "n1", p, NOW),
    "bridge_status": lambda p: bridge_status_points("g", "b1", p, NOW),
    "event": lambda p: event_points("g", "watering", p, NOW),
    "alert": lambda p: alert_points("g", "water", "bed-1", p, NOW),
    "need": lambda p: need_points("g", "bed-1", p, NOW),
}


def outcome(ingest: Ingest, payload: bytes) -> Points | Refused:
    """The ingest's answer, checked: clean lines, or a refusal with a known reason."""
    try:
        points = ingest(payload)
    except Refused as refused:
        assert refused.reason in REASONS, refused
        str(refused).encode()  # the message can be logged and dead-lettered
        return refused
    for text in points.lines:
        assert "\n" not in text and "\r" not in text, text
        text.encode()  # valid UTF-8: no unpaired surrogate reaches the writer
    return points


def good(**changes: Any) -> dict[str, Any]:
    body = {"ts": NOW, "node": "n1", "boot": 1, "seq": 3, "raw": {"sm0": 400}, "values": {"sm0": {"vwc_pct": 25.0}}}
    return body | changes


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# ----------------------------------------------------------- the catalogue

TELEMETRY: list[tuple[str, bytes, str]] = [
    ("empty payload", b"", "not_json"),
    ("half an object", b'{"ts": 1', "not_json"),
    ("not UTF-8", b"\xff\xfe\x00{}", "not_json"),
    ("a non-UTF-8 byte in a string", dumps(good()).replace(b'"n1"', b'"n\xff1"'), "not_json"),
    ("an encoded surrogate", dumps(good()).replace(b'"n1"', b'"n\xed\xa0\x801"'), "wrong_node"),
    ("JSON null", b"null", "wrong_type"),
    ("a list", b"[1, 2]", "wrong_type"),
    ("a string", b'"telemetry"', "wrong_type"),
    ("NaN token", dumps(good()).replace(b"400", b"NaN"), "not_finite"),
    ("Infinity token", dumps(good()).replace(b"25.0", b"Infinity"), "not_finite"),
    ("-Infinity token", dumps(good()).replace(b"400", b"-Infinity"), "not_finite"),
    ("a huge exponent", dumps(good()).replace(b"400", b"1e999"), "not_finite"),
    ("a huge negative exponent", dumps(good()).replace(b"25.0", b"-4e400"), "not_finite"),
    ("400 digits", dumps(good()).replace(b"400", b"9" * 400), "out_of_range"),
    ("5000 digits", dumps(good()).replace(b"400", b"9" * 5000), "not_json"),
    ("ts as text", dumps(good(ts="now")), "wrong_type"),
    ("ts as a float", dumps(good(ts=float(NOW))), "wrong_type"),
    ("ts as a bool", dumps(good(ts=True)), "wrong_type"),
    ("ts missing", dumps({k: v for k, v in good().items() if k != "ts"}), "wrong_type"),
    ("ts in 1970", dumps(good(ts=0)), "too_old"),
    ("ts 500 days ago", dumps(good(ts=NOW - 500 * DAY)), "too_old"),
    ("ts two days ahead", dumps(good(ts=NOW + 2 * DAY)), "in_future"),
    ("ts in the year 33000", dumps(good(ts=10**15)), "in_future"),
    ("ts beyond int64", dumps(good(ts=10**30)), "out_of_range"),
    ("ts negative", dumps(good(ts=-1)), "out_of_range"),
    ("seq negative", dumps(good(seq=-1)), "out_of_range"),
    ("seq over 32 bits", dumps(good(seq=2**32)), "out_of_range"),
    ("boot zero", dumps(good(boot=0)), "out_of_range"),
    ("boot as text", dumps(good(boot="1")), "wrong_type"),
    ("another node", dumps(good(node="n2")), "wrong_node"),
    ("no node", dumps({k: v for k, v in good().items() if k != "node"}), "wrong_node"),
    ("node as a number", dumps(good(node=1)), "wrong_node"),
    ("node with a line break", dumps(good(node="n1\n")), "wrong_node"),
    ("bed with a space", dumps(good(bed="bed 1")), "bad_bed"),
    ("bed empty", dumps(good(bed="")), "bad_bed"),
    ("bed with a NUL", dumps(good(bed="b\x00")), "bad_bed"),
    ("bed too long", dumps(good(bed="b" * 33)), "bad_bed"),
    ("bed as a list", dumps(good(bed=["bed-1"])), "bad_bed"),
    ("raw as a list", dumps(good(raw=[400])), "wrong_type"),
    ("raw value as text", dumps(good(raw={"sm0": "400"})), "wrong_type"),
    ("raw value null", dumps(good(raw={"sm0": None})), "wrong_type"),
    ("raw value a bool", dumps(good(raw={"sm0": True})), "wrong_type"),
    ("raw value nested", dumps(good(raw={"sm0": nested(50)})), "wrong_type"),
    ("values empty", dumps(good(values={"sm0": {}})), "wrong_type"),
    ("values a number", dumps(good(values={"sm0": 25.0})), "wrong_type"),
    ("calibrated name with a space", dumps(good(values={"sm0": {"vwc pct": 1.0}})), "bad_field_name"),
    ("calibrated name 'seq'", dumps(good(values={"sm0": {"seq": 1.0}})), "bad_field_name"),
    ("calibrated name 'time'", dumps(good(values={"sm0": {"time": 1.0}})), "bad_field_name"),
    ("calibrated name with a line break", dumps(good(values={"sm0": {"a\nb": 1.0}})), "bad_field_name"),
    ("calibrated NaN", dumps(good(values={"sm0": {"vwc_pct": math.nan}})), "not_finite"),
    ("error code a number", dumps(good(errors={"sm0": 5})), "wrong_type"),
    ("error code too long", dumps(good(errors={"sm0": "x" * 40})), "wrong_type"),
    ("error code with a line break", dumps(good(errors={"sm0": "nc\nx"})), "unstorable"),
    ("error code with a NUL", dumps(good(errors={"sm0": "nc\x00"})), "unstorable"),
    ("error code a lone surrogate", dumps(good(errors={"sm0": "\ud800"})), "unstorable"),
    ("sensor key with a space", dumps(good(raw={"sm 0": 1})), "bad_sensor_key"),
    ("sensor key empty", dumps(good(raw={"": 1})), "bad_sensor_key"),
    ("sensor key too long", dumps(good(raw={"s" * 17: 1})), "bad_sensor_key"),
    ("sensor key with a line break", dumps(good(raw={"sm0\n": 1})), "bad_sensor_key"),
    ("sensor key a lone surrogate", dumps(good(raw={"\udfff": 1})), "bad_sensor_key"),
    ("no sensors", dumps(good(raw={}, values={})), "empty"),
    ("nested 60,000 deep", b"[" * 60_000, "not_json"),
    ("nested 5,000 deep in raw", dumps(good()).replace(b"400", b"[" * 5000 + b"]" * 5000), "not_json"),
    ("over 64 KiB of spaces", b" " * (MAX_PAYLOAD + 1), "too_large"),
    ("over 64 KiB of valid JSON", dumps(good(pad="x" * MAX_PAYLOAD)), "too_large"),
]

OTHERS: list[tuple[str, str, bytes, str]] = [
    ("event", "text with a line break", dumps({"ts": NOW, "text": "a\nb"}), "unstorable"),
    ("event", "text with a carriage return", dumps({"ts": NOW, "text": "a\rb"}), "unstorable"),
    ("event", "text with a NUL", dumps({"ts": NOW, "text": "a\x00b"}), "unstorable"),
    ("event", "who a lone surrogate", dumps({"ts": NOW, "who": "\ud83c"}), "unstorable"),
    ("event", "bed with a comma", dumps({"ts": NOW, "bed": "a,b"}), "bad_name"),
    ("event", "node as a number", dumps({"ts": NOW, "node": 7}), "bad_name"),
    ("event", "ts far ahead", dumps({"ts": NOW + 30 * DAY}), "out_of_range"),
    ("event", "ts in 1970", dumps({"ts": 1}), "out_of_range"),
    ("event", "ts as text", dumps({"ts": "yesterday"}), "wrong_type"),
    ("event", "litres NaN", dumps({"ts": NOW, "litres": math.nan}), "not_finite"),
    ("event", "litres as text", dumps({"ts": NOW, "litres": "3"}), "wrong_type"),
    ("event", "kg with 400 digits", b'{"kg": ' + b"9" * 400 + b"}", "out_of_range"),
    ("event", "not JSON", b"\x00\x01", "not_json"),
    ("alert", "unknown transition", dumps({"ts": NOW, "transition": "exploded", "severity": "info"}), "bad_transition"),
    ("alert", "unknown severity", dumps({"ts": NOW, "transition": "raised", "severity": "doom"}), "bad_severity"),
    ("alert", "text with a line break",
     dumps({"ts": NOW, "transition": "raised", "severity": "info", "text": "dry\nbed"}), "unstorable"),
    ("alert", "bed with a space", dumps({"ts": NOW, "transition": "raised", "severity": "info", "bed": "b 1"}),
     "bad_name"),
    ("alert", "no ts", dumps({"transition": "raised", "severity": "info"}), "wrong_type"),
    ("need", "unknown state", dumps({"ts": NOW, "state": "thirsty"}), "bad_state"),
    ("need", "hours_left Infinity", b'{"ts": %d, "state": "ok", "hours_left": Infinity}' % NOW, "not_finite"),
    ("need", "hours_left with 400 digits", b'{"ts": %d, "state": "ok", "hours_left": %s}' % (NOW, b"9" * 400),
     "out_of_range"),
    ("node_status", "not an object", b"[]", "wrong_type"),
    ("bridge_status", "a port name with a line break", dumps({"state": "online", "ports": {"a\nb": {}}}),
     "unstorable"),
    ("bridge_status", "an empty port name", dumps({"state": "online", "ports": {"": {}}}), "unstorable"),
    ("bridge_status", "deep nesting", b'{"ports": ' + b"[" * 50_000, "not_json"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "reason"), [(p, r) for _, p, r in TELEMETRY], ids=[n for n, _, _ in TELEMETRY])
def test_hostile_telemetry_is_refused_with_its_reason(payload: bytes, reason: str) -> None:
    result = outcome(INGESTS["telemetry"], payload)
    assert isinstance(result, Refused) and result.reason == reason, result


@pytest.mark.parametrize(("kind", "payload", "reason"), [(k, p, r) for k, _, p, r in OTHERS],
                         ids=[f"{k}: {n}" for k, n, _, _ in OTHERS])  # fmt: skip
def test_hostile_events_alerts_needs_and_statuses_are_refused_with_their_reason(
    kind: str, payload: bytes, reason: str
) -> None:
    result = outcome(INGESTS[kind], payload)
    assert isinstance(result, Refused) and result.reason == reason, result


def test_a_bad_node_name_from_the_caller_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        telemetry_points("g", "n 1", dumps(good(node="n 1")), NOW)
    assert caught.value.reason == "bad_name"


def test_an_unknown_node_is_stored_like_any_other() -> None:
    # The hub keeps no list of nodes: the broker's ACLs decide who may publish under
    # node/<id>/. A well-formed reading from a node never seen before is stored.
    points = telemetry_points("g", "never-seen-7", dumps(good(node="never-seen-7")), NOW)
    assert points.lines == [
        f"soil_moisture,garden=g,node=never-seen-7,sensor=sm0 raw=400.0,vwc_pct=25.0,seq=3i,boot=1i {NOW}"
    ]


def test_statuses_keep_only_what_a_field_can_hold() -> None:
    # Counters beyond int64, booleans where counts go, NaN: left out, the rest kept.
    body = {"state": "online", "lost": 10**30, "readings": True, "seq": 5, "battery_v": math.nan}
    assert node_status_points("g", "n1", dumps(body), NOW).lines == [
        f"node_status,garden=g,node=n1 online=true,seq=5i {NOW}"
    ]
    port = {"open": True, "rejects": {"noise": 2**62, "crc_mismatch": 2**62}}
    body = {"state": "online", "counters": {"readings": 2**63, "published": False, "rejected": 4},
            "ports": {"/dev/serial/by-id/usb 1": port}}  # fmt: skip
    lines = bridge_status_points("g", "b1", dumps(body), NOW).lines
    assert lines[0] == f"bridge_status,bridge=b1,garden=g online=true,rejected=4i {NOW}"
    # The second reason would take the total past int64: it is left out, the total stays exact.
    assert lines[1] == (
        f"bridge_port,bridge=b1,garden=g,port=/dev/serial/by-id/usb\\ 1 open=true,rejects_noise={2**62}i,"
        f"rejected={2**62}i {NOW}"
    )


def test_every_refusal_is_dead_lettered_byte_for_byte() -> None:
    store = DeadLetterStore(":memory:")
    cases = [("telemetry", n, p, r) for n, p, r in TELEMETRY] + OTHERS
    for kind, _, payload, _ in cases:
        result = outcome(INGESTS[kind], payload)
        assert isinstance(result, Refused)
        store.add([(NOW, f"garden/g/{kind}", result.reason, result.detail, payload)])
    stored = store.latest(len(cases) + 1)
    assert len(stored) == len(cases)
    assert [(row.reason, row.payload) for row in reversed(stored)] == [
        (reason, payload[:65536]) for _, _, payload, reason in cases
    ]
    store.close()


# ------------------------------------------------------------- at volume

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**4000)]), st.floats(),
    st.text(), st.sampled_from(["\n", "\r", "\x00", "\ud800", "a\\", "𝔤🌱", "e\u0301", " ", ""]),
)  # fmt: skip
json_values = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=6
)
field_names = st.sampled_from([
    "ts", "node", "boot", "seq", "bed", "raw", "values", "errors", "state", "text", "who", "change", "transition",
    "severity", "litres", "kg", "battery_v", "counters", "spool", "ports", "hours_left", "interval_s", "lost",
])  # fmt: skip
hostile_bodies = st.dictionaries(field_names | st.text(max_size=6), json_values, max_size=6)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_are_points_or_a_reason(payload: bytes) -> None:
    for ingest in INGESTS.values():
        outcome(ingest, payload)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bodies, st.booleans(), st.data())
def test_any_json_is_points_or_a_reason(body: dict[str, Any], ascii_only: bool, data: st.DataObject) -> None:
    # Over a valid message too, so the checks past the first are reached.
    base = data.draw(st.sampled_from([{}, good(), {"ts": NOW, "state": "ok"}, {"ts": NOW, "transition": "raised",
                                                                              "severity": "info"}]))  # fmt: skip
    payload = json.dumps(base | body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    for ingest in INGESTS.values():
        outcome(ingest, payload)


sensor_keys = st.from_regex(r"(sm|st|at|rh|lx|tk|bt|xx)[0-9]", fullmatch=True)
readings = st.floats(-1e6, 1e6, allow_nan=False)
good_messages = st.fixed_dictionaries(
    {
        "ts": st.integers(NOW - 399 * DAY, NOW + DAY - 1),
        "seq": st.integers(0, 2**32 - 1),
        "boot": st.integers(1, 2**31),
        "raw": st.dictionaries(sensor_keys, readings | st.integers(-(2**40), 2**40), max_size=5),
        "values": st.dictionaries(
            sensor_keys,
            st.dictionaries(
                st.sampled_from(["vwc_pct", "temp_c", "litres", "level_cm"]), readings, min_size=1, max_size=3
            ),
            max_size=3,
        ),
        "errors": st.dictionaries(sensor_keys, st.sampled_from(["nc", "crc", "sentinel", "out_of_range"]), max_size=2),
    },
    optional={"bed": st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)},
).filter(lambda m: m["raw"] or m["values"] or m["errors"])


def expected_lines(message: dict[str, Any]) -> list[str]:
    """What docs/schema.md says a reading becomes, built with the one writer's ``line``."""
    out = []
    measurements = {"sm": "soil_moisture", "st": "soil_temperature", "at": "air_temperature", "rh": "air_humidity",
                    "lx": "light", "tk": "tank", "bt": "battery"}  # fmt: skip
    for sensor in sorted(set(message["raw"]) | set(message["values"]) | set(message["errors"])):
        fields: dict[str, float | int | bool | str] = {}
        if sensor in message["raw"]:
            fields["raw"] = float(message["raw"][sensor])
        fields |= message["values"].get(sensor, {})
        if sensor in message["errors"]:
            fields["error"] = message["errors"][sensor]
        fields |= {"seq": message["seq"], "boot": message["boot"]}
        tags = {"garden": "g", "node": "n1", "sensor": sensor, "bed": message.get("bed")}
        out.append(line(measurements.get(sensor[:2], "sensor_other"), tags, fields, message["ts"]))
    return out


@settings(max_examples=600, deadline=None)
@given(good_messages)
def test_good_telemetry_makes_exactly_its_points(message: dict[str, Any]) -> None:
    points = telemetry_points("g", "n1", dumps(message | {"node": "n1"}), NOW)
    assert points.ts_ms == message["ts"]
    assert points.lines == expected_lines(message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(good_messages, st.sampled_from(TELEMETRY)), min_size=1, max_size=20))
def test_a_batch_of_good_and_hostile_keeps_every_good_point(batch: list[Any]) -> None:
    """As the hub handles a batch: each message alone; the hostile ones refused and
    counted, every good one's points kept, in order."""
    lines: list[str] = []
    wanted: list[str] = []
    refused: dict[str, int] = {}
    for item in batch:
        if isinstance(item, tuple):
            payload, reason = item[1], item[2]
        else:
            payload, reason = dumps(item | {"node": "n1"}), ""
            wanted += expected_lines(item)
        result = outcome(INGESTS["telemetry"], payload)
        if isinstance(result, Refused):
            assert result.reason == reason
            refused[reason] = refused.get(reason, 0) + 1
        else:
            lines += result.lines
    assert lines == wanted
    assert sum(refused.values()) == sum(isinstance(item, tuple) for item in batch)
