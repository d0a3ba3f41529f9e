"""Line protocol: escaping, types, and the points of a telemetry message."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garden.points import PointError, line, telemetry_lines


def test_escaping() -> None:
    text = line("soil_moisture", {"bed": 'bed 1,a=b"c', "node": None}, {"raw": 1.5, "note": 'a "b"\nc'}, 5)
    assert text == 'soil_moisture,bed=bed\\ 1\\,a\\=b"c raw=1.5,note="a \\"b\\"\\nc" 5'


def test_types() -> None:
    assert line("m", {}, {"i": 3, "f": 3.0, "b": True}, 1) == "m i=3i,f=3.0,b=true 1"
    with pytest.raises(PointError):
        line("m", {}, {"f": math.nan}, 1)
    with pytest.raises(PointError):
        line("m", {}, {}, 1)


@given(st.text(min_size=1, max_size=40))
def test_user_text_never_breaks_a_line(text: str) -> None:
    tag = text.replace("\\", "/")
    point = line("event", {"bed": tag}, {"text": text}, 1)
    assert "\n" not in point and "\r" not in point


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
