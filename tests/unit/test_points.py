"""Line protocol: escaping, types, and the points of a telemetry message."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garden.points import PointError, line, telemetry_lines


def test_escaping() -> None:
    text = line("soil_moisture", {"bed": 'bed 1,a=b"c', "node": None}, {"raw": 1.5, "note": 'a "b"\tc\\'}, 5)
    assert text == 'soil_moisture,bed=bed\\ 1\\,a\\=b"c raw=1.5,note="a \\"b\\"\tc\\\\" 5'


def test_types() -> None:
    assert line("m", {}, {"i": 3, "f": 3.0, "b": True}, 1) == "m i=3i,f=3.0,b=true 1"
    with pytest.raises(PointError):
        line("m", {}, {"f": math.nan}, 1)
    with pytest.raises(PointError):
        line("m", {}, {}, 1)


@given(st.text(min_size=1, max_size=40))
def test_user_text_never_breaks_a_line(text: str) -> None:
    # Either one line, or a PointError naming the part: never a changed value.
    for tags, fields in (({"bed": text}, {"v": 1}), ({}, {"text": text})):
        try:
            point = line("event", tags, fields, 1)
        except PointError as err:
            assert err.part in ("tag bed", "field text")
            continue
        assert "\n" not in point and "\r" not in point


def test_line_breaks_are_refused_not_changed() -> None:
    with pytest.raises(PointError, match="field note: a line break"):
        line("event", {}, {"note": "a\nb"}, 1)
    with pytest.raises(PointError, match="tag bed: a carriage return"):
        line("event", {"bed": "a\rb"}, {"v": 1}, 1)


def test_a_backslash_in_a_tag_is_refused() -> None:
    with pytest.raises(PointError, match="backslash"):
        line("event", {"bed": "a\\"}, {"v": 1}, 1)


def test_telemetry_points() -> None:
    message = {
        "ts": 1000,
        "node": "n1",
        "boot": 2,
        "seq": 9,
        "bed": "bed-1",
        "raw": {"sm0": 400, "st0": 85.0, "tk0": 40.0},
        "values": {"sm0": {"vwc_pct": 25.0}, "tk0": {"distance_cm": 40.0, "litres": 800.0}},
        "errors": {"st0": "sentinel"},
    }
    assert list(telemetry_lines("g", message)) == [
        "soil_moisture,bed=bed-1,garden=g,node=n1,sensor=sm0 raw=400.0,vwc_pct=25.0,seq=9i,boot=2i 1000",
        'soil_temperature,bed=bed-1,garden=g,node=n1,sensor=st0 raw=85.0,error="sentinel",seq=9i,boot=2i 1000',
        "tank,bed=bed-1,garden=g,node=n1,sensor=tk0 raw=40.0,distance_cm=40.0,litres=800.0,seq=9i,boot=2i 1000",
    ]


def test_the_fast_telemetry_path_writes_what_line_writes() -> None:
    message = {
        "ts": 7, "node": "n 1", "boot": 1, "seq": 2, "bed": "b,1",
        "raw": {"sm0": 400, "tk0": 40.5, "st0": 85.0},
        "values": {"sm0": {"vwc_pct": 25.0}, "tk0": {"distance_cm": 40.5, "litres": 795.0}},
        "errors": {"st0": "sentinel", "at0": 'n"c'},
    }  # fmt: skip
    expected = []
    for sensor, measurement in (("at0", "air_temperature"), ("sm0", "soil_moisture"),
                                ("st0", "soil_temperature"), ("tk0", "tank")):  # fmt: skip
        fields: dict[str, float | int | bool | str] = {}
        if sensor in message["raw"]:  # type: ignore[operator]
            fields["raw"] = float(message["raw"][sensor])  # type: ignore[index]
        fields.update(message["values"].get(sensor, {}))  # type: ignore[attr-defined]
        if sensor in message["errors"]:  # type: ignore[operator]
            fields["error"] = message["errors"][sensor]  # type: ignore[index]
        fields |= {"seq": 2, "boot": 1}
        tags = {"garden": "g", "bed": "b,1", "node": "n 1", "sensor": sensor}
        expected.append(line(measurement, tags, fields, 7))
    assert list(telemetry_lines("g", message)) == expected
