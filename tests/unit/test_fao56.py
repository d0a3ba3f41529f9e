"""FAO-56 tables and equations: hand-worked numbers, the paper's own examples, invariants."""

from __future__ import annotations

import math
from datetime import date, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garden.watering.fao56 import (
    CROPS,
    SOILS,
    extraterrestrial_radiation,
    growth_stage,
    hargreaves_et0,
    kc_on,
    p_adjusted,
    raw_mm,
    taw_mm,
    trigger_vwc,
    water_balance_hours,
)


def test_lettuce_on_loam_by_hand() -> None:
    # Loam, FAO-56 Table 19: θFC 0.20-0.30 -> mid-point 25 %; θWP 0.07-0.17 -> 12 %.
    # Lettuce, FAO-56 Table 22: Zr 0.3-0.5 m -> lower end 0.3 m = 300 mm; p = 0.30.
    # TAW (Eq. 82) = 1000 (0.25 - 0.12) 0.3 = (25 - 12) / 100 × 300 = 39 mm
    # RAW (Eq. 83) = 0.30 × 39 = 11.7 mm
    # trigger      = 25 - 0.30 (25 - 12) = 25 - 3.9 = 21.1 %
    loam, lettuce = SOILS["loam"], CROPS["lettuce"]
    assert (loam.theta_fc, loam.theta_wp) == (25.0, 12.0)
    assert lettuce.root_depth_m == (0.3, 0.5)
    assert lettuce.p == 0.30
    taw = taw_mm(loam.theta_fc, loam.theta_wp, lettuce.root_depth_m[0] * 1000)
    assert taw == pytest.approx(39.0, abs=1e-6)
    assert raw_mm(lettuce.p, taw) == pytest.approx(11.7, abs=1e-6)
    assert trigger_vwc(loam.theta_fc, loam.theta_wp, lettuce.p) == pytest.approx(21.1, abs=1e-6)


def test_table_19_mid_points() -> None:
    assert {name: (s.theta_fc, s.theta_wp) for name, s in SOILS.items()} == {
        "sand": (12.0, 4.5),
        "loamy_sand": (15.0, 6.5),
        "sandy_loam": (23.0, 11.0),
        "loam": (25.0, 12.0),
        "silt_loam": (29.0, 15.0),
        "silt": (32.0, 17.0),
        "silty_clay_loam": (33.5, 20.5),
        "silty_clay": (36.0, 23.0),
        "clay": (36.0, 22.0),
    }


def test_every_crop_is_sane() -> None:
    assert set(CROPS) >= {"tomato", "lettuce", "beans", "courgette", "squash", "potato", "onion", "carrot", "herbs"}
    for crop in CROPS.values():
        assert 0 < crop.kc_ini <= crop.kc_mid < 1.3
        assert 0 < crop.kc_end <= crop.kc_mid
        assert all(days > 0 for days in crop.stage_days)
        assert 0 < crop.root_depth_m[0] <= crop.root_depth_m[1]
        assert 0.1 <= crop.p <= 0.8


@pytest.mark.parametrize(
    ("p_table", "etc", "expected"),
    [
        (0.30, 3.0, 0.38),  # 0.30 + 0.04 (5 - 3) = 0.38
        (0.30, 8.0, 0.18),  # 0.30 + 0.04 (5 - 8) = 0.18
        (0.30, 5.0, 0.30),  # the table's own ETc
        (0.70, 1.0, 0.80),  # 0.86, clamped to 0.8
        (0.20, 10.0, 0.10),  # 0.00, clamped to 0.1
    ],
)
def test_p_adjusted_for_etc(p_table: float, etc: float, expected: float) -> None:
    assert p_adjusted(p_table, etc) == pytest.approx(expected, abs=1e-9)


# Lettuce: Table 11 (April, Mediterranean) 20/30/15/10 days; Table 12 Kc 0.7/1.00/0.95.
PLANTED = date(2026, 4, 1)


@pytest.mark.parametrize(
    ("day", "stage", "kc"),
    [
        (date(2026, 3, 31), "not_planted", 0.7),  # before planting: Kc_ini, bare soil
        (date(2026, 4, 1), "initial", 0.7),  # day 0
        (date(2026, 4, 10), "initial", 0.7),  # day 9
        (date(2026, 4, 21), "development", 0.7),  # day 20: development starts at Kc_ini
        (date(2026, 5, 6), "development", 0.85),  # day 35: 0.7 + 15/30 × (1.00 - 0.7)
        (date(2026, 5, 21), "mid", 1.00),  # day 50
        (date(2026, 6, 4), "mid", 1.00),  # day 64
        (date(2026, 6, 10), "late", 0.975),  # day 70: 1.00 + 5/10 × (0.95 - 1.00)
        (date(2026, 6, 15), "after_harvest", 0.7),  # day 75 = end of the 75-day season
    ],
)
def test_lettuce_kc_curve(day: date, stage: str, kc: float) -> None:
    lettuce = CROPS["lettuce"]
    assert growth_stage(lettuce, PLANTED, day) == stage
    assert kc_on(lettuce, PLANTED, day) == pytest.approx(kc, abs=1e-9)


def test_kc_curve_is_continuous_over_the_season() -> None:
    for crop in CROPS.values():
        kcs = [kc_on(crop, PLANTED, PLANTED + timedelta(days=d)) for d in range(crop.season_days)]
        steps = [abs(b - a) for a, b in pairwise(kcs)]
        assert max(steps) < 0.05, crop.name


def test_ra_fao56_example_8() -> None:
    # FAO-56 Example 8: 20°S on 3 September (J = 246): dr 0.985, δ 0.120 rad,
    # ωs 1.527 rad, Ra = 32.2 MJ m-2 day-1.
    assert date(2026, 9, 3).timetuple().tm_yday == 246
    assert extraterrestrial_radiation(-20.0, 246) == pytest.approx(32.2, abs=0.1)


def test_ra_of_fao56_example_17() -> None:
    # FAO-56 Example 17, Bangkok (13°44'N) in April (J = 105): Ra = 38.06.
    assert extraterrestrial_radiation(13 + 44 / 60, 105) == pytest.approx(38.06, abs=0.01)


def test_hargreaves_et0_with_fao56_example_17_data() -> None:
    # FAO-56 Example 17 (Bangkok, April): Tmax 34.8 °C, Tmin 25.6 °C, Ra 38.06 MJ m-2 day-1.
    # Eq. 52 by hand:
    #   Tmean            = (34.8 + 25.6) / 2 = 30.2 °C;  Tmean + 17.8 = 48.0
    #   (Tmax - Tmin)^0.5 = 9.2^0.5 = 3.0332
    #   Ra               = 0.408 × 38.06 = 15.528 mm/day
    #   ET0              = 0.0023 × 48.0 × 3.0332 × 15.528 = 5.20 mm/day
    # (The example's Penman-Monteith ET0 is 5.72 mm/day; Hargreaves is the rougher estimate.)
    assert hargreaves_et0(25.6, 34.8, 38.06) == pytest.approx(5.20, abs=0.1)
    assert hargreaves_et0(25.6, 34.8, 38.06) == pytest.approx(0.0023 * 48.0 * math.sqrt(9.2) * 0.408 * 38.06)


@pytest.mark.parametrize(
    ("tmin", "tmax", "ra"),
    [(30.0, 20.0, 30.0), (math.nan, 20.0, 30.0), (10.0, math.inf, 30.0), (10.0, 20.0, math.nan), (10.0, 20.0, -1.0)],
)
def test_hargreaves_rejects_bad_input(tmin: float, tmax: float, ra: float) -> None:
    with pytest.raises(ValueError):
        hargreaves_et0(tmin, tmax, ra)


def test_water_balance_hours() -> None:
    # 25 % -> 21.1 % over 300 mm is 3.9 / 100 × 300 = 11.7 mm; at 3 mm/day that is 3.9 days = 93.6 h.
    assert water_balance_hours(25.0, 21.1, 300.0, 3.0) == pytest.approx(93.6)
    assert water_balance_hours(20.0, 21.1, 300.0, 3.0) == 0.0
    assert water_balance_hours(25.0, 21.1, 300.0, 0.0) is None
    assert water_balance_hours(25.0, 21.1, 300.0, -0.5) is None


def test_polar_latitudes_do_not_fail() -> None:
    assert extraterrestrial_radiation(80.0, 355) == 0.0  # polar night
    assert extraterrestrial_radiation(80.0, 172) > extraterrestrial_radiation(0.0, 172)  # midnight sun
    with pytest.raises(ValueError):
        extraterrestrial_radiation(91.0, 1)
    with pytest.raises(ValueError):
        extraterrestrial_radiation(10.0, 0)


percent = st.floats(min_value=0.0, max_value=100.0)


@given(a=percent, b=percent, p=st.floats(min_value=0.0, max_value=1.0))
def test_trigger_lies_between_wilting_point_and_field_capacity(a: float, b: float, p: float) -> None:
    wp, fc = min(a, b), max(a, b)
    trigger = trigger_vwc(fc, wp, p)
    assert wp - 1e-9 <= trigger <= fc + 1e-9


@given(p=st.floats(min_value=0.0, max_value=1.0), etc=st.floats(min_value=-50.0, max_value=50.0))
def test_p_adjusted_stays_within_its_limits(p: float, etc: float) -> None:
    assert 0.1 <= p_adjusted(p, etc) <= 0.8


@given(latitude=st.floats(min_value=-66.0, max_value=66.0), day=st.integers(min_value=1, max_value=366))
def test_ra_is_never_negative(latitude: float, day: int) -> None:
    assert extraterrestrial_radiation(latitude, day) >= 0.0
