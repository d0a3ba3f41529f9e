"""The sun and the drying clock: FAO-56's own examples, almanac noons, and the clock's invariants."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garden.watering.fao56 import SOLAR_CONSTANT, extraterrestrial_radiation
from garden.watering.solar import (
    NIGHT_SHARE,
    DryingClock,
    daylight_hours,
    longitude_from_utc_offset,
    seasonal_correction_h,
    solar_declination,
    sunset_hour_angle,
)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000


def midnight_ms(day: date) -> int:
    return round(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def day_of_year(day: date) -> int:
    return day.timetuple().tm_yday


# ------------------------------------------------------------ FAO-56 equations


def test_fao56_examples_8_and_9() -> None:
    # Example 8: 20°S on 3 September (J = 246): δ = 0.120 rad, ωs = 1.527 rad.
    # Example 9: the same place and day: N = 24/π × 1.527 = 11.7 hours.
    assert day_of_year(date(2026, 9, 3)) == 246
    assert solar_declination(246) == pytest.approx(0.120, abs=0.001)
    assert sunset_hour_angle(-20.0, 246) == pytest.approx(1.527, abs=0.001)
    assert daylight_hours(-20.0, 246) == pytest.approx(11.7, abs=0.05)


@pytest.mark.parametrize(
    ("latitude", "day", "hours"),
    [
        (52.0, date(2026, 12, 15), 7.53),  # the accuracy grid's winter
        (52.0, date(2026, 3, 21), 11.95),  # its spring
        (52.0, date(2026, 6, 15), 16.46),  # its summer
        (0.0, date(2026, 1, 15), 12.0),  # the equator: 12 h all year
        (0.0, date(2026, 7, 15), 12.0),
        (70.0, date(2026, 6, 21), 24.0),  # midnight sun (Eq. 25 clipped)
        (70.0, date(2026, 12, 21), 0.0),  # polar night
    ],
)
def test_daylight_hours_eq_34(latitude: float, day: date, hours: float) -> None:
    assert daylight_hours(latitude, day_of_year(day)) == pytest.approx(hours, abs=0.01)


@given(st.floats(-66.0, 66.0), st.integers(1, 365))
def test_the_hemispheres_mirror_each_other(latitude: float, day: int) -> None:
    """tan(−φ) = −tan φ in Eq. 25, so ωs(−φ) = π − ωs(φ): the days at −φ are the nights at φ."""
    assert daylight_hours(-latitude, day) == pytest.approx(24.0 - daylight_hours(latitude, day), abs=1e-9)


def test_seasonal_correction_against_the_almanac() -> None:
    """Eq. 32 is the equation of time: the sun is 16 min fast in early November and 14 min slow in mid-February."""
    assert seasonal_correction_h(day_of_year(date(2026, 11, 3))) * 60 == pytest.approx(16.4, abs=0.5)
    assert seasonal_correction_h(day_of_year(date(2026, 2, 11))) * 60 == pytest.approx(-14.2, abs=0.5)


# ------------------------------------------------------------ the sun's weight


def sunlit_hours_and_noon(clock: DryingClock, day: date) -> tuple[float, float]:
    """Minutes of the UTC day with the sun up, in hours, and the UTC hour of the highest sun (scanned)."""
    start = midnight_ms(day)
    weights = [clock.sun_weight(start + m * MINUTE_MS + MINUTE_MS // 2) for m in range(24 * 60)]
    noon = max(range(len(weights)), key=weights.__getitem__)
    return sum(w > 0.0 for w in weights) / 60.0, (noon + 0.5) / 60.0


@pytest.mark.parametrize("latitude", [-35.0, 0.0, 40.0, 52.0, 60.0])
@pytest.mark.parametrize("day", [date(2026, 1, 10), date(2026, 3, 21), date(2026, 6, 15), date(2026, 10, 1)])
def test_the_sun_is_up_for_fao56s_day_length(latitude: float, day: date) -> None:
    clock = DryingClock(latitude, 0.0)
    sunlit, _ = sunlit_hours_and_noon(clock, day)
    assert sunlit == pytest.approx(daylight_hours(latitude, day_of_year(day)), abs=2.5 / 60)


@pytest.mark.parametrize(
    ("longitude", "day", "noon_utc_h"),
    [
        (0.0, date(2026, 11, 3), 11 + 44 / 60),  # Greenwich: the almanac's 11:44 UTC
        (0.0, date(2026, 2, 11), 12 + 14 / 60),  # and 12:14 UTC
        (15.0, date(2026, 11, 3), 10 + 44 / 60),  # 15° east: an hour earlier
        (-75.0, date(2026, 6, 15), 17.0),  # New York's longitude: 17:00 UTC give or take a minute
    ],
)
def test_solar_noon_follows_longitude_and_the_equation_of_time(longitude: float, day: date, noon_utc_h: float) -> None:
    clock = DryingClock(40.0, longitude)
    _, noon = sunlit_hours_and_noon(clock, day)
    assert noon == pytest.approx(noon_utc_h, abs=1.5 / 60)
    assert clock.sun_weight(midnight_ms(day) + noon * HOUR_MS) == pytest.approx(1.0, abs=1e-4)  # 1 at noon


def test_longitude_from_utc_offset() -> None:
    assert longitude_from_utc_offset(1.0) == 15.0
    assert longitude_from_utc_offset(-5.0) == -75.0
    assert longitude_from_utc_offset(5.5) == 82.5
    with pytest.raises(ValueError):
        longitude_from_utc_offset(math.nan)


# ------------------------------------------------------------ the clock


@pytest.mark.parametrize("latitude", [-20.0, 0.0, 35.0, 52.0, 65.0])
@pytest.mark.parametrize("day", [date(2026, 1, 15), date(2026, 3, 21), date(2026, 6, 21), date(2026, 9, 3)])
def test_a_days_drying_hours_against_fao56_ra(latitude: float, day: date) -> None:
    """24·n + (1 − n)·∫s dt, the integral both by quadrature and from FAO-56's Ra.

    Ra (Eq. 21) is (24·60/π)·Gsc·dr·[ωs sin φ sin δ + cos φ cos δ sin ωs]; the
    sun's weight is sin α over its noon value cos(φ − δ), so a day's ∫s dt is
    Ra / (60·Gsc·dr·cos(φ − δ)) hours.
    """
    clock = DryingClock(latitude, 0.0)
    start = midnight_ms(day)
    increment = clock.at(start + DAY_MS) - clock.at(start)
    j = day_of_year(day)
    dr = 1.0 + 0.033 * math.cos(2.0 * math.pi * j / 365.0)  # Eq. 23
    noon = math.cos(math.radians(latitude) - solar_declination(j))
    from_ra = extraterrestrial_radiation(latitude, j) / (60.0 * SOLAR_CONSTANT * dr * noon)
    quadrature = sum(clock.sun_weight(start + m * MINUTE_MS + MINUTE_MS // 2) for m in range(24 * 60)) / 60.0
    assert quadrature == pytest.approx(from_ra, rel=1e-4)
    assert increment == pytest.approx(24.0 * NIGHT_SHARE + (1.0 - NIGHT_SHARE) * from_ra, rel=1e-9)
    # About 24·n + (1 − n)·0.64·N: the weight's daylight mean is close to a sine's 2/π
    # (0.54 in the 22-h days of 65°N in June: the sun lingers low).
    rough = 24.0 * NIGHT_SHARE + (1.0 - NIGHT_SHARE) * 2.0 / math.pi * daylight_hours(latitude, j)
    assert increment == pytest.approx(rough, rel=0.05 if daylight_hours(latitude, j) < 18.0 else 0.15)


def test_the_epoch_and_the_polar_days() -> None:
    assert DryingClock(52.0, 0.0).at(0) == 0.0
    polar_night = DryingClock(80.0, 0.0)
    start = midnight_ms(date(2026, 12, 21))
    assert polar_night.at(start + DAY_MS) - polar_night.at(start) == pytest.approx(24.0 * NIGHT_SHARE)
    midnight_sun = DryingClock(80.0, 0.0)
    start = midnight_ms(date(2026, 6, 21))
    assert min(midnight_sun.sun_weight(start + h * HOUR_MS) for h in range(24)) > 0.0


def test_a_year_of_ten_minute_steps_is_monotone_and_at_most_one_drying_hour_an_hour() -> None:
    clock = DryingClock(52.0, 0.0)
    start = midnight_ms(date(2027, 12, 30))  # across a new year
    step = 10 * MINUTE_MS
    taus = clock.at_many(start + i * step for i in range(6 * 24 * 4))
    rates = [(b - a) / (step / HOUR_MS) for a, b in itertools.pairwise(taus)]
    assert min(rates) >= NIGHT_SHARE - 1e-7  # rounding: drying hours since 1970 are ~10⁵
    assert max(rates) <= 1.0 + 1e-7
    assert taus == [clock.at(start + i * step) for i in range(len(taus))]


def test_midnight_does_not_jump() -> None:
    """δ and Sc step to the next day's values at 00:00 UTC; the count of drying hours does not."""
    clock = DryingClock(-33.9, 151.2)  # Sydney: midnight UTC is mid-morning there, with the sun up
    for day in (date(2026, 1, 1), date(2026, 3, 1), date(2028, 2, 29), date(2028, 3, 1)):
        t = midnight_ms(day)
        assert clock.rate(t) > 0.5
        across = clock.at(t + MINUTE_MS) - clock.at(t - MINUTE_MS)
        assert across == pytest.approx(clock.rate(t) * 2 * MINUTE_MS / HOUR_MS, rel=0.01)


times = st.floats(-2.2e12, 7.3e12)  # 1900 to 2200: two leap-year rules and the 2100 exception
latitudes = st.floats(-89.0, 89.0)
longitudes = st.floats(-180.0, 180.0)


@given(latitudes, longitudes, times)
@settings(max_examples=300)
def test_inverse_undoes_at_within_a_second(latitude: float, longitude: float, t_ms: float) -> None:
    clock = DryingClock(latitude, longitude)
    assert clock.inverse(clock.at(t_ms)) == pytest.approx(t_ms, abs=1000.0)


@given(latitudes, longitudes, times, st.floats(1.0, 1e9))
@settings(max_examples=300)
def test_at_is_strictly_increasing(latitude: float, longitude: float, t_ms: float, step_ms: float) -> None:
    clock = DryingClock(latitude, longitude)
    gained = clock.at(t_ms + step_ms) - clock.at(t_ms)
    hours = step_ms / HOUR_MS
    assert NIGHT_SHARE * hours * (1 - 1e-6) - 1e-9 <= gained <= hours * (1 + 1e-6) + 1e-9


def test_leap_days_and_century_years_count() -> None:
    """A year's drying hours differ by one day's between a leap year and the next."""
    clock = DryingClock(45.0, 7.0)

    def year(y: int) -> float:
        return clock.at(midnight_ms(date(y + 1, 1, 1))) - clock.at(midnight_ms(date(y, 1, 1)))

    assert year(2028) - year(2027) == pytest.approx(
        clock.at(midnight_ms(date(2028, 12, 31)) + DAY_MS) - clock.at(midnight_ms(date(2028, 12, 31))), rel=0.2
    )
    assert year(2100) == pytest.approx(year(2101), rel=1e-3)  # 2100 is not a leap year
    assert year(2000) == pytest.approx(year(2028), rel=1e-3)  # 2000 is
    t = midnight_ms(date(2028, 2, 29)) + 5 * HOUR_MS
    assert clock.inverse(clock.at(t)) == pytest.approx(t, abs=1.0)
    later = midnight_ms(date(2028, 2, 28)) + timedelta(days=400).total_seconds() * 1000
    assert clock.inverse(clock.at(later)) == pytest.approx(later, abs=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latitude_deg": 91.0, "longitude_deg": 0.0},
        {"latitude_deg": math.nan, "longitude_deg": 0.0},
        {"latitude_deg": 0.0, "longitude_deg": 181.0},
        {"latitude_deg": 0.0, "longitude_deg": 0.0, "night_share": 0.0},
        {"latitude_deg": 0.0, "longitude_deg": 0.0, "night_share": 1.5},
    ],
)
def test_bad_places_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DryingClock(**kwargs)


def test_non_finite_times_are_refused() -> None:
    clock = DryingClock(52.0, 0.0)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            clock.at(bad)
        with pytest.raises(ValueError):
            clock.inverse(bad)
