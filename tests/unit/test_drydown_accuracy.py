"""How good the drydown forecast is on its drying clock, against drydowns with a known answer.

The grid (tests/unit/drydown_cases.py): sand, loam and clay; winter, spring
and summer at 52°N (15 December, 21 March and 15 June: FAO-56 day lengths of
7.5, 11.9 and 16.5 h; noon drying rates 0.004, 0.010 and 0.020 per hour);
reading noise of SD 0, 0.5 and 1 % VWC; a morning and an evening watering;
forecasts after at least 12 h of drydown, 2 to 120 h before the noiseless
model reaches the trigger. Every forecast is made with the season's
``DryingClock(52.0, 0.0)``. ``benchmarks/drydown_accuracy.py`` prints the
same figures by soil, season, noise and horizon, with and without the clock.

Asserted, for true horizons over 24 h: the median of |error| / horizon is at
most 0.15 and the range holds the truth in at least 80 % of cases, overall
and within each soil, each season and each noise level. For 2 to 24 h the
range's coverage is asserted in the same way; the median error is asserted
overall only. Within a group it is not met everywhere: in winter (0.18) the
16-h nights make a crossing predicted for the night hours wide, and with
1 % VWC of noise (0.33) a short horizon is a fraction of the readings' own
scatter.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from garden.watering.detection import detect_waterings
from garden.watering.solar import daylight_hours
from tests.unit.drydown_cases import (
    BANDS,
    SEASONS,
    STEP_MS,
    Figures,
    Outcome,
    daylight_integral_h,
    drydowns,
    figures,
    outcomes,
)

DIMENSIONS = ("soil", "season", "noise_sd")


def _long(o: Outcome) -> bool:
    return o.true_hours > 24.0


def _short(o: Outcome) -> bool:
    return o.true_hours <= 24.0


@pytest.fixture(scope="module")
def grid() -> list[Outcome]:
    return outcomes(with_clock=True)


def _report(label: str, f: Figures) -> str:
    return (
        f"{label}: n={f.count} median |err|/h={f.median_relative_error:.3f} coverage={f.coverage:.1%} "
        f"no estimate={f.no_estimate} reached={f.reached}"
    )


def _parts(grid: list[Outcome], dimension: str, keep: Callable[[Outcome], bool]) -> list[tuple[str, Figures]]:
    values = sorted({getattr(o, dimension) for o in grid})
    return [
        (f"{dimension}={value}", figures([o for o in grid if getattr(o, dimension) == value and keep(o)]))
        for value in values
    ]


def test_long_horizons_meet_the_thresholds(grid: list[Outcome]) -> None:
    long = figures([o for o in grid if _long(o)])
    print(_report("> 24 h", long))
    for b in BANDS:
        print(_report(b, figures([o for o in grid if o.band == b])))
    assert long.count >= 300  # the grid is not accidentally empty
    assert long.median_relative_error <= 0.15, _report("> 24 h", long)
    assert long.coverage >= 0.80, _report("> 24 h", long)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_long_horizons_meet_the_thresholds_in_every_part_of_the_grid(grid: list[Outcome], dimension: str) -> None:
    """Over 24 h, within each soil, season and noise level: summer is not hidden by the rest."""
    for label, part in _parts(grid, dimension, _long):
        assert part.count >= 30, label
        assert part.median_relative_error <= 0.15, _report(f"{label}, > 24 h", part)
        assert part.coverage >= 0.80, _report(f"{label}, > 24 h", part)


def test_short_horizons(grid: list[Outcome]) -> None:
    short = figures([o for o in grid if _short(o)])
    print(_report("<= 24 h", short))
    assert short.count >= 300
    assert short.median_relative_error <= 0.15, _report("<= 24 h", short)
    assert short.coverage >= 0.80, _report("<= 24 h", short)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_short_horizons_range_holds_the_truth_in_every_part_of_the_grid(grid: list[Outcome], dimension: str) -> None:
    for label, part in _parts(grid, dimension, _short):
        print(_report(f"{label}, <= 24 h", part))
        assert part.coverage >= 0.80, _report(f"{label}, <= 24 h", part)


def test_the_truths_days_are_fao56s_day_lengths() -> None:
    """The truth's sun is up for FAO-56's N (Eq. 34) at 52°N on the season's date; its shape is its own."""
    hours = {s.name: round(s.day_length_h, 2) for s in SEASONS}
    assert hours == {"winter": 7.53, "spring": 11.95, "summer": 16.46}
    for s in SEASONS:
        assert s.day_length_h == daylight_hours(52.0, s.day.timetuple().tm_yday)
        lit = [
            h / 60
            for h in range(24 * 60)
            if daylight_integral_h((h + 1) / 60, s.day_length_h) > daylight_integral_h(h / 60, s.day_length_h)
        ]
        assert len(lit) / 60 == pytest.approx(s.day_length_h, abs=2 / 60)
        assert (lit[0] + lit[-1]) / 2 == pytest.approx(12.0, abs=1 / 60)  # noon at 12:00 UTC all season


def test_the_grids_drydowns_show_exactly_their_one_watering() -> None:
    """The noisy drydowns (up to 1 % SD, around and below the trigger) make no false waterings.

    Noise-free, the time is exact; with noise the first reading of the rise may
    be a neighbour of the true one.
    """
    for d in drydowns():
        found = detect_waterings(d.samples(d.trigger_ms), root_depth_mm=300.0)
        label = (d.soil.name, d.season.name, d.noise_sd, d.watering_hour)
        assert len(found) == 1, label
        slack = 0 if d.noise_sd == 0 else 2 * STEP_MS
        assert abs(found[0].t_ms - d.wetting_ms) <= slack, label
