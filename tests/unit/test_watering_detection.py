"""Watering detection: steps up found once, noise and spikes ignored, stable as readings arrive."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garden.watering.detection import Watering, detect_waterings, find_rises

STEP_MS = 15 * 60_000
T0 = 1_780_272_000_000
ROOT_MM = 300.0

Noise = Callable[[random.Random], float]


def uniform(rng: random.Random) -> float:
    return rng.uniform(-1.5, 1.5)


def gaussian(rng: random.Random) -> float:
    return rng.gauss(0.0, 0.75)


NOISES = pytest.mark.parametrize("noise", [uniform, gaussian], ids=["uniform ±1.5", "gaussian sd 0.75"])


def series(values: list[float]) -> list[tuple[int, float]]:
    return [(T0 + i * STEP_MS, v) for i, v in enumerate(values)]


def drying(n: int, start: float = 22.0, per_reading: float = 0.02) -> list[float]:
    return [start - per_reading * i for i in range(n)]


def test_a_clean_step_is_one_watering_at_its_first_high_reading() -> None:
    values = [20.0] * 30 + [26.0] * 30
    (w,) = detect_waterings(series(values), root_depth_mm=ROOT_MM)
    assert w == Watering(T0 + 30 * STEP_MS, 20.0, 26.0, 6.0, 6.0 / 100.0 * 300.0)


def test_a_slow_soak_over_three_readings_is_one_watering_at_its_start() -> None:
    values = [20.0] * 30 + [22.0, 24.0, 26.0] + [26.0] * 30
    (w,) = detect_waterings(series(values), root_depth_mm=ROOT_MM)
    assert w.t_ms == T0 + 30 * STEP_MS
    assert w.rise_vwc == 6.0
    assert w.mm == pytest.approx(18.0)  # 6 % of 300 mm


def test_a_drydown_around_a_watering_is_measured_from_its_levels() -> None:
    values = drying(40, 20.0) + drying(40, 27.0)
    (w,) = detect_waterings(series(values), root_depth_mm=200.0)
    assert w.t_ms == T0 + 40 * STEP_MS
    assert w.before_vwc == pytest.approx(20.0 - 0.02 * 36, abs=0.05)  # the 6 readings before the rise
    assert w.rise_vwc == pytest.approx(27.0 - (20.0 - 0.02 * 36), abs=0.1)
    assert w.mm == pytest.approx(w.rise_vwc * 2.0)


@pytest.mark.parametrize("spike", [+10.0, -10.0])
def test_a_single_spike_is_not_a_watering(spike: float) -> None:
    values = drying(60)
    values[30] += spike
    assert detect_waterings(series(values), root_depth_mm=ROOT_MM) == []


def test_a_two_reading_spike_does_not_stay_up_so_is_not_a_watering() -> None:
    values = drying(60)
    values[30] += 8.0
    values[31] += 8.0
    assert detect_waterings(series(values), root_depth_mm=ROOT_MM) == []


def test_two_waterings_a_day_apart_are_two() -> None:
    values = [20.0] * 30 + [26.0] * 96 + [21.0] * 40 + [27.0] * 30
    found = detect_waterings(series(values), root_depth_mm=ROOT_MM)
    assert [w.t_ms for w in found] == [T0 + 30 * STEP_MS, T0 + 166 * STEP_MS]


def test_a_watering_is_reported_only_once_final() -> None:
    values = [20.0] * 30 + [26.0] * 30
    # Final 4·window − 1 = 11 readings after the last candidate (31): at 42 readings.
    assert detect_waterings(series(values[:41]), root_depth_mm=ROOT_MM) == []
    assert len(detect_waterings(series(values[:42]), root_depth_mm=ROOT_MM)) == 1
    # The drydown forecast sees it at once, unconfirmed, when it is large.
    (rise,) = find_rises(values[:33], provisional=True)
    assert not rise.confirmed
    assert rise.start == 30


def test_a_rise_at_the_very_start_is_left_to_a_call_that_sees_its_beginning() -> None:
    values = [20.0] * 5 + [26.0] * 30
    assert detect_waterings(series(values), root_depth_mm=ROOT_MM) == []


@NOISES
def test_noise_around_the_trigger_makes_no_false_watering(noise: Noise) -> None:
    """Three days at the trigger of a loam bed (21 % VWC), drying slowly, 50 noisy series."""
    for seed in range(50):
        rng = random.Random(seed)
        values = [21.0 - 0.005 * i + noise(rng) for i in range(288)]
        assert detect_waterings(series(values), root_depth_mm=ROOT_MM) == [], seed


@NOISES
def test_a_real_watering_in_noise_is_found_once(noise: Noise) -> None:
    for seed in range(50):
        rng = random.Random(seed)
        values = [21.0 - 0.005 * i + (6.0 if i >= 100 else 0.0) + noise(rng) for i in range(200)]
        found = detect_waterings(series(values), root_depth_mm=ROOT_MM)
        assert len(found) == 1, seed
        assert abs(found[0].t_ms - (T0 + 100 * STEP_MS)) <= STEP_MS, seed
        assert found[0].mm == pytest.approx(18.0, abs=8.0)  # 6 % of 300 mm; SD about 2.6 mm


@pytest.mark.parametrize(("noise", "rise"), [(uniform, 4.5), (gaussian, 4.0)], ids=["uniform", "gaussian"])
def test_the_smallest_watering_documented_is_seen_95_percent_of_the_time(noise: Noise, rise: float) -> None:
    """The module docstring's figure: 4.5 % VWC (13.5 mm in 300 mm) with ±1.5 noise, 4 % with sd 0.75."""
    hits = 0
    for seed in range(200):
        rng = random.Random(1000 + seed)
        values = [20.0 + (rise if i >= 40 else 0.0) + noise(rng) for i in range(80)]
        hits += len(detect_waterings(series(values), root_depth_mm=ROOT_MM)) == 1
    assert hits / 200 >= 0.95


def test_an_overlapping_caller_gets_the_same_watering_each_time() -> None:
    """Evaluated every reading over the last day, each watering keeps its t_ms (so dedupe by t_ms works)."""
    rng = random.Random(7)
    n = 600
    steps = {150: 5.0, 330: 7.0, 480: 4.5}
    level, values = 19.0, []
    for i in range(n):
        level += steps.get(i, 0.0) - 0.01
        values.append(level + uniform(rng))
    samples = series(values)
    full = {w.t_ms: w for w in detect_waterings(samples, root_depth_mm=ROOT_MM)}
    assert len(full) == 3
    seen: set[int] = set()
    for end in range(1, n + 1):
        for w in detect_waterings(samples[max(0, end - 96) : end], root_depth_mm=ROOT_MM):
            assert w == full[w.t_ms]  # same time, same levels, whatever the window
            seen.add(w.t_ms)
    assert seen == set(full)


def test_appending_readings_never_changes_a_reported_watering() -> None:
    rng = random.Random(11)
    values = [20.0 + (5.0 if i >= 50 else 0.0) + (5.0 if i >= 130 else 0.0) + gaussian(rng) for i in range(200)]
    samples = series(values)
    final = detect_waterings(samples, root_depth_mm=ROOT_MM)
    for end in range(len(samples)):
        prefix = detect_waterings(samples[:end], root_depth_mm=ROOT_MM)
        assert prefix == final[: len(prefix)]


@st.composite
def stepped(draw: st.DrawFn) -> tuple[list[float], int]:
    """Noise-free drydowns with some real steps up (some too small to count)."""
    n = draw(st.integers(20, 300))
    positions = sorted(draw(st.sets(st.integers(0, n - 1), max_size=6)))
    sizes = draw(st.lists(st.floats(0.0, 15.0), min_size=len(positions), max_size=len(positions)))
    rate = draw(st.floats(0.0, 0.2))
    level = draw(st.floats(5.0, 40.0))
    jumps = dict(zip(positions, sizes, strict=True))
    values = []
    for i in range(n):
        level += jumps.get(i, 0.0) - rate
        values.append(level)
    return values, len(positions)


@given(stepped())
@settings(max_examples=200, deadline=None)
def test_never_more_waterings_than_real_steps(case: tuple[list[float], int]) -> None:
    values, steps = case
    assert len(detect_waterings(series(values), root_depth_mm=ROOT_MM)) <= steps


@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=80),
    st.integers(1, 6),
    st.floats(0.0, 10.0),
)
@settings(max_examples=200, deadline=None)
def test_never_raises_and_times_are_readings(values: list[float], window: int, min_rise: float) -> None:
    samples = series(values)
    found = detect_waterings(samples, root_depth_mm=ROOT_MM, window=window, min_rise_vwc=min_rise)
    times = {t for t, _ in samples}
    assert all(w.t_ms in times for w in found)
    assert [w.t_ms for w in found] == sorted({w.t_ms for w in found})
