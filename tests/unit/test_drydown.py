"""The drydown forecast: since the last wetting, each method, the range and the text."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garden.watering.drydown import Forecast, forecast, hours_text, since_last_wetting, t95
from garden.watering.solar import DryingClock

HOUR_MS = 3_600_000
STEP_MS = 15 * 60_000
T0 = 1_780_272_000_000  # 2026-06-01 00:00 UTC
# Loam as in the accuracy grid: θFC 29, θWP 13, trigger halfway, θr = 0.8·θWP.
TRIGGER = 21.0
RESIDUAL = 10.4


def exponential(
    hours: float, *, theta0: float = 29.0, k: float = 0.01, start_h: float = 0.0
) -> list[tuple[int, float]]:
    """A noise-free exponential drydown, one reading per 15 min, from ``start_h``."""
    n = int(hours * 4) + 1
    return [
        (T0 + round((start_h + i / 4) * HOUR_MS), RESIDUAL + (theta0 - RESIDUAL) * math.exp(-k * i / 4))
        for i in range(n)
    ]


def true_hours(theta_now: float, k: float = 0.01) -> float:
    return math.log((theta_now - RESIDUAL) / (TRIGGER - RESIDUAL)) / k


def run(samples: list[tuple[int, float]], **kw: float) -> Forecast:
    return forecast(samples, trigger_vwc=TRIGGER, residual_vwc=RESIDUAL, now_ms=samples[-1][0], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------ since the last wetting


def test_since_last_wetting_starts_at_the_top_of_the_last_step() -> None:
    before = [(T0 + i * STEP_MS, 20.0 - 0.01 * i) for i in range(40)]
    after = [(T0 + (40 + i) * STEP_MS, 28.0 - 0.02 * i) for i in range(40)]
    after[1] = (after[1][0], 28.5)  # the peak comes a reading after the step
    tail = since_last_wetting(before + after)
    assert tail[0] == after[1]
    assert tail[-1] == after[-1]


def test_since_last_wetting_keeps_everything_when_there_was_none() -> None:
    samples = exponential(24)
    assert since_last_wetting(samples) == samples


def test_one_noisy_reading_is_not_a_wetting() -> None:
    samples = exponential(24)
    t, v = samples[40]
    samples[40] = (t, v + 8.0)
    assert since_last_wetting(samples) == samples


def test_a_fresh_large_watering_cuts_the_drydown_at_once() -> None:
    samples = exponential(24)
    t_last = samples[-1][0]
    samples += [(t_last + (i + 1) * STEP_MS, 33.0) for i in range(3)]  # +8 %: not final for the detector yet
    assert since_last_wetting(samples) == samples[-3:]
    assert run(samples).method == "insufficient"


# ------------------------------------------------------------ methods


def test_an_exponential_drydown_is_forecast_from_its_rate() -> None:
    samples = exponential(48)
    f = run(samples)
    assert f.method == "exponential"
    assert f.rate_per_h == pytest.approx(0.01, rel=1e-6)
    assert f.hours == pytest.approx(true_hours(samples[-1][1]), rel=1e-3)
    assert f.hours is not None and f.low_h is not None and f.high_h is not None
    assert f.low_h < f.hours < f.high_h
    assert f.samples == len(samples)
    assert f.span_h == 48.0


def test_drainage_after_a_big_watering_is_left_out_of_the_fit() -> None:
    """5 % VWC above field capacity draining away with τ = 3 h (physics.py) on top of a 48 h drydown.

    The readings that stand out above the curve by more than the day/night
    wave allows are dropped; what drainage is left within that allowance
    still steepens the fit a little, and the range says so.
    """
    clean = exponential(48, theta0=32.0)
    wet = [(t, v + 5.0 * math.exp(-(t - T0) / (3.0 * HOUR_MS))) for t, v in clean]
    truth = true_hours(clean[-1][1])
    f = run(wet)
    assert f.method == "exponential"
    assert 0 < len(wet) - f.samples <= len(wet) // 3  # the drainage, and never more than a third
    assert f.hours is not None and f.low_h is not None and f.high_h is not None
    assert f.hours == pytest.approx(truth, rel=0.15)
    assert f.low_h <= truth <= f.high_h


def test_hours_count_from_now_not_from_the_last_reading() -> None:
    samples = exponential(48)
    at_last = run(samples)
    later = forecast(samples, trigger_vwc=TRIGGER, residual_vwc=RESIDUAL, now_ms=samples[-1][0] + 5 * HOUR_MS)
    assert at_last.hours is not None and later.hours is not None
    assert later.hours == pytest.approx(at_last.hours - 5.0)


def test_the_range_narrows_as_the_drydown_lengthens() -> None:
    """Same moment, same truth: the last 12 h of a drydown against all 40 h of it."""
    long = run(exponential(40))
    short = run(exponential(12, theta0=RESIDUAL + (29.0 - RESIDUAL) * math.exp(-0.28), start_h=28.0))
    assert long.method == short.method == "exponential"
    assert long.hours == pytest.approx(short.hours, rel=1e-3)
    assert long.low_h is not None and long.high_h is not None
    assert short.low_h is not None and short.high_h is not None
    assert long.high_h - long.low_h < short.high_h - short.low_h


def test_noise_widens_the_range_and_it_still_holds_the_truth() -> None:
    clean = exponential(48)
    rng = random.Random(3)
    noisy = [(t, v + rng.gauss(0.0, 1.0)) for t, v in clean]
    a, b = run(clean), run(noisy)
    assert a.high_h is not None and a.low_h is not None and b.high_h is not None and b.low_h is not None
    assert b.high_h - b.low_h > a.high_h - a.low_h
    assert b.low_h <= true_hours(clean[-1][1]) <= b.high_h
    assert b.residual_sd == pytest.approx(1.0, abs=0.15)


def test_reached_when_the_fit_and_the_readings_are_at_the_trigger() -> None:
    samples = exponential(100)  # 29 → 17.4 % VWC: past the trigger at 100 h
    f = run(samples)
    assert (f.method, f.hours, f.low_h, f.high_h) == ("reached", 0.0, 0.0, 0.0)
    assert hours_text(f) == "now"


def test_reached_with_only_a_few_readings() -> None:
    samples = [(T0 + i * STEP_MS, 19.0) for i in range(3)]
    assert run(samples).method == "reached"


@pytest.mark.parametrize(("hours", "readings"), [(2.0, 9), (48.0, 4)])
def test_insufficient_with_too_short_a_drydown_or_too_few_readings(hours: float, readings: int) -> None:
    step = round(hours * HOUR_MS / (readings - 1))
    samples = [(T0 + i * step, 28.0 - 0.05 * i) for i in range(readings)]
    f = run(samples)
    assert f.method == "insufficient"
    assert (f.hours, f.low_h, f.high_h) == (None, None, None)
    assert hours_text(f) == "no estimate yet (needs 3 h of drydown)"


def test_not_drying_when_the_fall_is_within_the_noise() -> None:
    rng = random.Random(5)
    samples = [(T0 + i * STEP_MS, 25.0 + rng.uniform(-1.5, 1.5)) for i in range(96)]
    f = run(samples)
    assert f.method == "not_drying"
    assert f.hours is None
    assert hours_text(f) == "not drying"


def test_not_drying_when_it_is_getting_wetter() -> None:
    samples = [(T0 + i * STEP_MS, 22.0 + 0.01 * i) for i in range(96)]
    assert run(samples).method == "not_drying"


def test_linear_when_the_trigger_is_below_the_residual() -> None:
    """The curve never reaches a trigger under θr: the line does, at its slope."""
    samples = [(T0 + i * STEP_MS, 12.0 - 0.05 * i / 4) for i in range(97)]  # 0.05 %/h for 24 h
    f = forecast(samples, trigger_vwc=10.0, residual_vwc=10.5, now_ms=samples[-1][0])
    assert f.method == "linear"
    assert f.rate_per_h == pytest.approx(-0.05)
    assert f.hours == pytest.approx((12.0 - 1.2 - 10.0) / 0.05)


def test_linear_when_the_readings_are_a_line_the_curve_cannot_follow() -> None:
    """A straight fall that would cross θr inside the readings: the log is no use."""
    samples = [(T0 + i * STEP_MS, 14.0 - 0.2 * i / 4) for i in range(49)]  # to 11.6, θr 10.4, then below
    f = forecast(samples, trigger_vwc=11.0, residual_vwc=RESIDUAL, now_ms=samples[-1][0])
    assert f.method in ("linear", "exponential")
    assert f.hours == pytest.approx((11.6 - 11.0) / 0.2, abs=1.0)


def test_the_curve_gives_way_to_the_line_when_it_fits_worse() -> None:
    """A straight fall from 28 to 22 % towards a θr of 20: the curve must bend, the readings do not."""
    samples = [(T0 + i * STEP_MS, 28.0 - 0.25 * i / 4) for i in range(97)]
    f = forecast(samples, trigger_vwc=21.0, residual_vwc=20.0, now_ms=samples[-1][0])
    assert f.method == "linear"
    assert f.hours == pytest.approx(4.0)


# ------------------------------------------------------------ the drying clock

CLOCK = DryingClock(52.0, 0.0)  # June at 52°N: 16-h days


def sunlit(
    hours: float, *, start_h: float, k: float = 0.02, theta0: float = 29.0, drainage: float = 0.0
) -> list[tuple[int, float]]:
    """A drydown exponential in the clock's drying hours, from ``start_h`` UTC on 1 June, one reading per 15 min.

    ``drainage`` % VWC above it drain away in wall time, with physics.py's τ = 3 h.
    """
    start = T0 + round(start_h * HOUR_MS)
    tau0 = CLOCK.at(start)
    out = []
    for i in range(int(hours * 4) + 1):
        t = start + i * STEP_MS
        dry = RESIDUAL + (theta0 - RESIDUAL) * math.exp(-k * (CLOCK.at(t) - tau0))
        out.append((t, dry + drainage * math.exp(-i / 4 / 3.0)))
    return out


def sunlit_truth(samples: list[tuple[int, float]], *, k: float = 0.02, theta0: float = 29.0) -> float:
    """Hours from the last reading until ``sunlit`` reaches the trigger."""
    tau = CLOCK.at(samples[0][0]) + math.log((theta0 - RESIDUAL) / (TRIGGER - RESIDUAL)) / k
    return (CLOCK.inverse(tau) - samples[-1][0]) / HOUR_MS


def test_a_drydown_that_follows_the_sun_is_forecast_on_the_drying_clock() -> None:
    """Watered at 19:00, forecast at 01:00 the night after next: the crossing is in the afternoon."""
    samples = sunlit(30, start_h=19.0)
    truth = sunlit_truth(samples)
    on_clock = forecast(samples, trigger_vwc=TRIGGER, residual_vwc=RESIDUAL, now_ms=samples[-1][0], clock=CLOCK)
    assert on_clock.method == "exponential"
    assert on_clock.rate_per_h == pytest.approx(0.02, rel=1e-4)  # per drying hour
    assert on_clock.hours == pytest.approx(truth, abs=0.05)
    assert on_clock.low_h is not None and on_clock.high_h is not None
    assert on_clock.low_h < truth < on_clock.high_h
    assert on_clock.span_h == 30.0  # wall hours
    in_wall_time = run(samples)
    assert in_wall_time.hours is not None
    assert abs(in_wall_time.hours - truth) > 3.0  # what the clock is for


@pytest.mark.parametrize(("start_h", "tolerance"), [(19.0, 0.05), (7.0, 0.10)])
def test_drainage_is_fitted_on_the_drying_clock(start_h: float, tolerance: float) -> None:
    """2.5 % VWC above field capacity draining in wall time, at night (19:00) or by day (07:00)."""
    samples = sunlit(30, start_h=start_h, drainage=2.5)
    truth = sunlit_truth(samples)
    f = forecast(samples, trigger_vwc=TRIGGER, residual_vwc=RESIDUAL, now_ms=samples[-1][0], clock=CLOCK)
    assert f.method == "exponential"
    assert f.hours == pytest.approx(truth, rel=tolerance)
    assert f.low_h is not None and f.high_h is not None
    assert f.low_h <= truth <= f.high_h


def test_hours_on_the_clock_count_from_now() -> None:
    samples = sunlit(30, start_h=19.0)
    at_last = forecast(samples, trigger_vwc=TRIGGER, residual_vwc=RESIDUAL, now_ms=samples[-1][0], clock=CLOCK)
    later = forecast(
        samples, trigger_vwc=TRIGGER, residual_vwc=RESIDUAL, now_ms=samples[-1][0] + 5 * HOUR_MS, clock=CLOCK
    )
    assert at_last.hours is not None and later.hours is not None
    assert later.hours == pytest.approx(at_last.hours - 5.0)


# ------------------------------------------------------------ text and helpers


@pytest.mark.parametrize(
    ("hours", "low", "high", "text"),
    [
        (14.2, 10.0, 20.4, "~14 h (10–20 h)"),
        (2.4, 1.2, 4.0, "~2.4 h (1.2–4 h)"),
        (60.0, 40.0, 100.0, "~60 h (40 h–4 d)"),
        (200.0, 150.0, 300.0, "~8 d (6–12 d)"),
        (0.2, 0.0, 1.0, "now"),
    ],
)
def test_hours_text(hours: float, low: float, high: float, text: str) -> None:
    assert hours_text(Forecast("exponential", hours, low, high, 0.01, 100, 24.0, 0.2)) == text


def test_hours_text_names_the_span_it_needs() -> None:
    f = Forecast("insufficient", None, None, None, None, 4, 1.0, 0.0)
    assert hours_text(f, min_span_h=6) == "no estimate yet (needs 6 h of drydown)"


def test_t_quantiles() -> None:
    assert t95(1) == 6.314
    assert t95(10) == 1.812
    assert t95(1e12) == pytest.approx(1.645, abs=1e-6)
    assert t95(0.0) == 6.314
    assert t95(35) == pytest.approx(1.690, abs=0.002)


# ------------------------------------------------------------ properties

finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def any_samples(draw: st.DrawFn) -> list[tuple[int, float]]:
    """Any finite readings at ascending (or repeated) times within int64 epoch ms."""
    n = draw(st.integers(0, 60))
    gaps = draw(st.lists(st.integers(0, 6 * HOUR_MS), min_size=n, max_size=n))
    start = draw(st.integers(0, 4_000_000_000_000))
    values = draw(st.lists(st.one_of(finite, st.floats(-10.0, 60.0)), min_size=n, max_size=n))
    times, t = [], start
    for g in gaps:
        t += g
        times.append(t)
    return list(zip(times, values, strict=True))


def check(f: Forecast) -> None:
    if f.hours is None:
        assert (f.low_h, f.high_h) == (None, None)
        assert f.method in ("insufficient", "not_drying")
    else:
        assert f.low_h is not None and f.high_h is not None
        assert 0.0 <= f.low_h <= f.hours <= f.high_h
        assert math.isfinite(f.high_h)
    assert f.samples >= 0 and f.span_h >= 0.0


@given(any_samples(), finite, finite, st.integers(-(2**62), 2**62))
@settings(max_examples=300, deadline=None)
def test_forecast_never_raises_and_orders_its_range(
    samples: list[tuple[int, float]], trigger: float, residual: float, now_ms: int
) -> None:
    check(forecast(samples, trigger_vwc=trigger, residual_vwc=residual, now_ms=now_ms))


@given(any_samples(), finite, finite, st.integers(-(2**62), 2**62), st.floats(-90.0, 90.0), st.floats(-180.0, 180.0))
@settings(max_examples=200, deadline=None)
def test_forecast_on_a_clock_never_raises_and_orders_its_range(
    samples: list[tuple[int, float]], trigger: float, residual: float, now_ms: int, latitude: float, longitude: float
) -> None:
    clock = DryingClock(latitude, longitude)
    check(forecast(samples, trigger_vwc=trigger, residual_vwc=residual, now_ms=now_ms, clock=clock))


@st.composite
def noisy_drydowns(draw: st.DrawFn) -> tuple[list[tuple[int, float]], float, float]:
    """Plausible drydowns: a level, a rate, noise, a trigger and θr near them."""
    theta0 = draw(st.floats(8.0, 45.0))
    residual = draw(st.floats(0.0, theta0 - 1.0))
    k = draw(st.floats(0.0, 0.05))
    sd = draw(st.floats(0.0, 2.0))
    hours = draw(st.integers(1, 200))
    seed = draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    samples = [
        (T0 + i * STEP_MS, residual + (theta0 - residual) * math.exp(-k * i / 4) + rng.gauss(0.0, sd))
        for i in range(hours * 4)
    ]
    trigger = draw(st.floats(0.0, theta0))
    return samples, trigger, residual


@given(noisy_drydowns(), st.booleans())
@settings(max_examples=100, deadline=None)
def test_forecast_on_plausible_drydowns_orders_its_range(
    case: tuple[list[tuple[int, float]], float, float], on_clock: bool
) -> None:
    samples, trigger, residual = case
    clock = CLOCK if on_clock else None
    check(forecast(samples, trigger_vwc=trigger, residual_vwc=residual, now_ms=samples[-1][0], clock=clock))
