"""What the hub makes of each message: points, or a counted reason to refuse it."""

from __future__ import annotations

import json

import pytest

from garden.ingest import Refused, bridge_status_points, event_points, node_status_points, telemetry_points

NOW = 1_800_000_000_000


def telemetry(**changes: object) -> bytes:
    body = {"ts": NOW, "node": "n1", "boot": 1, "seq": 3, "raw": {"sm0": 400}, "values": {"sm0": {"vwc_pct": 25.0}}}
    return json.dumps(body | changes).encode()


def test_good_telemetry() -> None:
    points = telemetry_points("g", "n1", telemetry(), NOW)
    assert points.ts_ms == NOW
    assert points.lines == [f"soil_moisture,garden=g,node=n1,sensor=sm0 raw=400.0,vwc_pct=25.0,seq=3i,boot=1i {NOW}"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "not_json"),
        (b"[1]", "wrong_type"),
        (telemetry(node="n2"), "wrong_node"),
        (telemetry(ts="now"), "wrong_type"),
        (telemetry(ts=NOW - 500 * 86_400_000), "too_old"),
        (telemetry(ts=NOW + 2 * 86_400_000), "in_future"),
        (telemetry(seq=-1), "out_of_range"),
        (telemetry(boot=True), "wrong_type"),
        (telemetry(raw={"sm0": "4"}), "wrong_type"),
        (telemetry().replace(b"400", b"Infinity"), "not_finite"),
        (telemetry(values={"sm0": {}}), "wrong_type"),
        (telemetry(raw={"sm 0": 1}), "bad_sensor_key"),
        (telemetry(raw={}, values={}), "empty"),
        (telemetry(bed="bed 1"), "bad_bed"),
        (b" " * 70_000, "too_large"),
    ],
)
def test_refusals_name_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        telemetry_points("g", "n1", payload, NOW)
    assert caught.value.reason == reason


def test_status_points_keep_only_known_typed_fields() -> None:
    node = node_status_points("g", "n1", b'{"state":"online","lost":2,"battery_v":3.9,"fw":"x","bed":"b1"}', NOW)
    assert node.lines == [f"node_status,bed=b1,garden=g,node=n1 online=true,lost=2i,battery_v=3.9 {NOW}"]
    body = {"state": "online", "counters": {"readings": 5}, "spool": {"depth": 1},
            "ports": {"/dev/a": {"open": True, "frames": 9, "rejects": {"noise": 2, "crc_mismatch": 1}}}}  # fmt: skip
    lines = bridge_status_points("g", "b1", json.dumps(body).encode(), NOW).lines
    assert lines[0] == f"bridge_status,bridge=b1,garden=g online=true,readings=5i,spool_depth=1i {NOW}"
    assert "rejects_noise=2i,rejects_crc_mismatch=1i,rejected=3i" in lines[1]


def test_events() -> None:
    payload = json.dumps({"ts": NOW, "bed": "bed-1", "who": "ana", "litres": 12, "text": 'said "hi"'}).encode()
    assert event_points("g", "watering", payload, NOW).lines == [
        f'event,bed=bed-1,garden=g,type=watering who="ana",text="said \\"hi\\"",litres=12.0 {NOW}'
    ]
    with pytest.raises(Refused):
        event_points("g", "watering", b'{"bed": "a,b"}', NOW)
    # No text given: the annotation still has one.
    assert event_points("g", "harvest", b'{"ts": %d, "kg": 2}' % NOW, NOW).lines == [
        f'event,garden=g,type=harvest kg=2.0,text="harvest" {NOW}'
    ]


def test_payloads_no_check_foresaw_are_refused_not_fatal() -> None:
    with pytest.raises(Refused) as caught:
        telemetry_points("g", "n1", b"[" * 60_000, NOW)
    assert caught.value.reason == "not_json"
    with pytest.raises(Refused) as caught:
        telemetry_points("g", "n1", telemetry().replace(b"400", b"1" * 400), NOW)
    assert caught.value.reason == "out_of_range"


@pytest.mark.parametrize(
    "text",
    [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1e400",
        "NaN",
        "-Infinity",
        '"\\ud800"',
        "[" * 2000 + "]" * 2000,
        "9223372036854775807",
        "-0.0",
        "0.1",
    ],
)
def test_payloads_parse_as_json_parses_them(text: str) -> None:
    """The hub parses with orjson where it can; what orjson reads differently or
    refuses must come out as json.loads makes it (or be refused as json refuses it)."""
    from garden.ingest import _load

    payload = ('{"x": ' + text + "}").encode()
    try:
        expected = json.loads(payload)
    except (ValueError, RecursionError):
        with pytest.raises(Refused, match="not_json"):
            _load(payload)
        return
    got = _load(payload)
    assert repr(got) == repr(expected)
    assert type(got["x"]) is type(expected["x"])
