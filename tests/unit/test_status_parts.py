"""The pure parts of ``garden status``, ``garden readings`` and ``garden doctor``."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garden.doctor import FAIL, OK, WARN, judge_newest_reading, judge_server_skew, server_skew_s
from garden.garden_status import BLOCKS, HOUR_MS, build_status, format_age, hour_slots, sparkline, water_need
from garden.influx import Series
from garden.readings import parse_duration

# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("24h", 86_400), ("7d", 604_800), ("2w", 1_209_600), ("90s", 90), (" 6H ", 21_600)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "1.5h", "-3h", "3 hours", "0m", "24h30m", "9999w", "1y"])
def test_parse_duration_refuses_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|more than zero|five years"):
        parse_duration(text)


@given(st.integers(1, 250), st.sampled_from("smhdw"))
def test_parse_duration_is_number_times_unit(n: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}[unit]
    assert parse_duration(f"{n}{unit}") == n * factor


# ------------------------------------------------------------------ need bands


@pytest.mark.parametrize(
    ("vwc", "need"),
    [
        (45.0, "ok"),
        (20.0, "ok"),
        (19.99, "soon"),
        (15.0, "soon"),
        (14.99, "needs water"),
        (10.0, "needs water"),
        (9.99, "critical"),
        (0.0, "critical"),
        (None, None),
    ],
)
def test_water_need_bands(vwc: float | None, need: str | None) -> None:
    assert water_need(vwc) == need


# ------------------------------------------------------------------ sparkline


def test_sparkline_rises_from_lowest_to_highest_block() -> None:
    line = sparkline([float(v) for v in range(8)], min_span=0)
    assert line == BLOCKS


def test_sparkline_gaps_are_spaces_and_flat_series_sit_in_the_middle() -> None:
    assert sparkline([None, None]) == "  "
    line = sparkline([22.0, None, 22.2, 21.9])
    assert line[1] == " "
    assert set(line.replace(" ", "")) <= set(BLOCKS[2:6])  # noise within 5 points draws flat


@given(st.lists(st.one_of(st.none(), st.floats(0, 100)), max_size=48))
def test_sparkline_has_one_character_per_value(values: list[float | None]) -> None:
    line = sparkline(values)
    assert len(line) == len(values)
    for value, char in zip(values, line, strict=True):
        assert (char == " ") == (value is None)
        assert char == " " or char in BLOCKS


# ------------------------------------------------------------------ ages, hours


def test_format_age() -> None:
    assert format_age(None) == "never"
    assert format_age(-5000) == "0 s"
    assert format_age(42_000) == "42 s"
    assert format_age(5 * 60_000) == "5 min"
    assert format_age(3 * HOUR_MS) == "3 h"
    assert format_age(3 * HOUR_MS + 10 * 60_000) == "3 h 10 min"
    assert format_age(50 * HOUR_MS) == "2 d"


def test_hour_slots_end_with_the_current_hour() -> None:
    now = 1_795_679_481_951
    slots = hour_slots(now, 24)
    assert len(slots) == 24
    assert slots[-1] <= now < slots[-1] + HOUR_MS
    assert all(b - a == HOUR_MS for a, b in itertools.pairwise(slots))


# ------------------------------------------------------------------ grouping


def test_rows_follow_each_node_to_the_bed_of_its_newest_reading() -> None:
    now = 100 * HOUR_MS
    slots = hour_slots(now, 3)
    # n1 in bed-1; n2 was in no bed, now in bed-2; n3 has no bed; bed-9's only node (n2) left it.
    seen = {
        ("bed-1", "n1", "sm0"): (now - 60_000, 1.0),
        ("", "n2", "sm0"): (now - 5 * HOUR_MS, 1.0),
        ("bed-9", "n2", "sm0"): (now - 9 * HOUR_MS, 1.0),
        ("bed-2", "n2", "sm0"): (now - 120_000, 1.0),
        ("", "n3", "sm0"): (now - 30_000, 1.0),
        ("", "n3", "bt0"): (now - 10_000, 1.0),
    }
    moisture = {
        ("bed-1", "n1", "sm0"): (now - 60_000, 25.0),
        ("bed-1", "n1", "sm1"): (now - 60_000, 21.0),
        ("", "n2", "sm0"): (now - 5 * HOUR_MS, 40.0),
        ("bed-2", "n2", "sm0"): (now - 120_000, 14.0),
        ("", "n3", "sm0"): (now - 30_000, 8.0),
    }
    tank = {("bed-1", "n1", "tk0"): (now - 60_000, 640.0)}
    hourly = [
        Series("soil_moisture", {"bed": "bed-1", "node": "n1"}, ("time", "mean"), ((slots[0], 30), (slots[2], 22))),
        Series("soil_moisture", {"bed": "", "node": "n2"}, ("time", "mean"), ((slots[1], 40),)),
        Series("soil_moisture", {"bed": "bed-2", "node": "n2"}, ("time", "mean"), ((slots[2], 14),)),
    ]
    status = build_status("g", now, slots, moisture, {}, {}, tank, seen, hourly)
    rows = {row.name: row for row in status.rows}
    assert [r.name for r in status.rows] == ["bed-1", "bed-2", "n3"]  # beds first, then lone nodes
    assert rows["bed-1"].vwc_pct == 23.0  # the mean of its probes' newest readings
    assert rows["bed-1"].need == "ok"
    assert rows["bed-1"].tank_litres == 640.0
    assert rows["bed-1"].hourly_vwc == (30.0, None, 22.0)
    assert rows["bed-2"].nodes == ("n2",)
    assert rows["bed-2"].vwc_pct == 14.0
    assert rows["bed-2"].need == "needs water"
    assert rows["bed-2"].hourly_vwc == (None, None, 14.0)  # not the hour it spent in no bed
    assert rows["n3"].bed is None
    assert rows["n3"].need == "critical"
    assert rows["n3"].last_seen_ms == now - 10_000
    assert "bed-9" not in rows
    body = status.to_json()
    assert body["rows"][2]["age_s"] == 10
    assert len(body["rows"][0]["sparkline"]) == 3


# ------------------------------------------------------------------ doctor


def test_server_skew_from_the_date_header() -> None:
    # Date: Thu, 01 Jan 2026 00:00:10 GMT is 1767225610.
    assert server_skew_s("Thu, 01 Jan 2026 00:00:10 GMT", 1767225610.0, 1767225610.2) == pytest.approx(0.4)
    assert judge_server_skew(0.4).state == OK
    late = judge_server_skew(-3600.0)
    assert late.state == FAIL
    assert "behind" in late.detail
    assert late.fix is not None and "timedatectl" in late.fix


def test_newest_reading_judgement() -> None:
    now = 1_800_000_000_000
    assert judge_newest_reading(now - 60_000, now, "g").state == OK
    assert judge_newest_reading(None, now, "g").state == WARN
    assert judge_newest_reading(now - 5 * HOUR_MS, now, "g").state == WARN
    ahead = judge_newest_reading(now + 600_000, now, "g")
    assert ahead.state == FAIL
    assert "future" in ahead.detail
