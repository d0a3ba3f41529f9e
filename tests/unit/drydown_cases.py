"""Drydowns with a known answer, for the forecast's accuracy test and benchmark.

The model is the simulator's (firmware_bridge/simulator/physics.py), in
closed form so that the truth is exact:

- after a watering at ``t_w`` the soil sits ``excess`` above field capacity
  and that excess drains away with a time constant of 3 h (physics.py's
  ``drainage_tau_h``);
- the rest dries exponentially towards θr = 0.8·θWP at a rate
  ``peak_rate × (0.1 + 0.9·daylight)``: nights dry at a tenth of the noon rate;
- daylight is 0 at night and ``sin(π·(h − sunrise)/day_length)`` by day, with
  solar noon at 12:00 UTC (physics.py's curve, stretched to the season's day
  length). Its integral has a closed form, so
  ``θ(t) = θr + (θFC − θr)·exp(−C(t)) + excess·exp(−(t − t_w)/3 h)`` with
  ``C(t) = peak_rate·(0.1·Δt + 0.9·∫daylight)``.

Each season is a garden at 52°N, longitude 0, on a date: 15 December, 21
March and 15 June 2026. Its day length is FAO-56's for that latitude and
date (Eq. 34, N = 24/π·ωs): 7.5, 11.9 and 16.5 h (they were a fixed 9, 12
and 16 h; Eq. 34 is geometric, an almanac's sunrise to sunset is some
15 minutes longer). The day length is all the truth takes from the sun: its shape
stays the stretched sine, with noon at 12:00 UTC all season long, so the
forecast's :class:`~garden.watering.solar.DryingClock` (solar elevation,
day lengths that change day by day, the equation of time) does not
describe it exactly. The forecast gets ``DryingClock(52.0, 0.0)``.

Before the watering the bed sits a quarter of the available water below the
trigger for 12 h, so that ``since_last_wetting`` has a real step to find.
Readings come every 15 minutes with gaussian noise; the truth is the time
the noiseless model crosses the trigger θFC − 0.5·(θFC − θWP), found by
bisection to the millisecond.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from garden.watering.drydown import Forecast, forecast
from garden.watering.solar import DryingClock, daylight_hours

HOUR_MS = 3_600_000
STEP_MS = 15 * 60_000
DRAINAGE_TAU_H = 3.0  # physics.py BedParams.drainage_tau_h
PRE_WETTING_H = 12.0
MIN_DRYDOWN_H = 12.0  # forecasts are made after at least this much drydown
LATITUDE_DEG = 52.0  # a garden in northern Europe; longitude 0, so solar noon is at 12:00 UTC


@dataclass(frozen=True, slots=True)
class Soil:
    """Field capacity and wilting point in % VWC.

    Sand, loam and a heavy clay, from the issue: they span FAO-56 Table 19
    from its sandiest to its most clayey rows (Table 19's mid-points are in
    ``garden.watering.fao56.SOILS``). Test inputs, not reference data.
    """

    name: str
    theta_fc: float
    theta_wp: float

    @property
    def trigger(self) -> float:
        return self.theta_fc - 0.5 * (self.theta_fc - self.theta_wp)  # p = 0.5, FAO-56 Table 22's common value

    @property
    def residual(self) -> float:
        return 0.8 * self.theta_wp  # physics.py dries towards 0.8·θWP

    @property
    def excess(self) -> float:
        return 0.15 * (self.theta_fc - self.theta_wp)  # how far above FC a watering leaves it


@dataclass(frozen=True, slots=True)
class Season:
    """A latitude and the day of the watering; the drydown runs on from it."""

    name: str
    latitude_deg: float
    day: date
    peak_rate_per_h: float  # the noon drying rate; nights are a tenth of it

    @property
    def day_length_h(self) -> float:
        """FAO-56 Eq. 34 for the latitude and the watering day, kept for the whole drydown."""
        return daylight_hours(self.latitude_deg, self.day.timetuple().tm_yday)

    @property
    def midnight_ms(self) -> int:
        """00:00 UTC of the watering day: the truth's days are counted from it."""
        return round(datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC).timestamp() * 1000)

    @property
    def clock(self) -> DryingClock:
        """The forecast's clock for this garden: its latitude, and longitude 0, where the truth's noon is."""
        return DryingClock(self.latitude_deg, 0.0)


SOILS = (Soil("sand", 10.0, 5.0), Soil("loam", 29.0, 13.0), Soil("clay", 42.0, 28.0))
SEASONS = (
    Season("winter", LATITUDE_DEG, date(2026, 12, 15), 0.004),
    Season("spring", LATITUDE_DEG, date(2026, 3, 21), 0.010),
    Season("summer", LATITUDE_DEG, date(2026, 6, 15), 0.020),
)
NOISES = (0.0, 0.5, 1.0)  # gaussian sd, % VWC
WATERING_HOURS = (7.0, 19.0)  # UTC hour of the watering: a morning and an evening drydown
HORIZONS_H = (2, 3, 4, 6, 8, 12, 16, 20, 24, 30, 36, 48, 60, 72, 96, 120)


def daylight_integral_h(t_h: float, day_length_h: float) -> float:
    """∫ daylight dt from a midnight (UTC) to ``t_h`` hours after it, in hours of full sun."""
    sunrise = 12.0 - day_length_h / 2.0
    per_day = 2.0 * day_length_h / math.pi
    days = math.floor(t_h / 24.0)
    h = t_h - 24.0 * days
    if h <= sunrise:
        part = 0.0
    elif h >= sunrise + day_length_h:
        part = per_day
    else:
        part = day_length_h / math.pi * (1.0 - math.cos(math.pi * (h - sunrise) / day_length_h))
    return days * per_day + part


@dataclass(frozen=True, slots=True)
class Drydown:
    soil: Soil
    season: Season
    noise_sd: float
    watering_hour: float
    seed: int

    @property
    def wetting_ms(self) -> int:
        return self.season.midnight_ms + round(self.watering_hour * HOUR_MS)

    @property
    def pre_wetting_vwc(self) -> float:
        return self.soil.trigger - 0.25 * (self.soil.theta_fc - self.soil.theta_wp)

    def true_vwc(self, t_ms: int) -> float:
        """The noiseless model at ``t_ms``."""
        if t_ms < self.wetting_ms:
            return self.pre_wetting_vwc
        s, season = self.soil, self.season
        t_h = (t_ms - season.midnight_ms) / HOUR_MS
        tw_h = (self.wetting_ms - season.midnight_ms) / HOUR_MS
        dt_h = t_h - tw_h
        sun = daylight_integral_h(t_h, season.day_length_h) - daylight_integral_h(tw_h, season.day_length_h)
        exponent = season.peak_rate_per_h * (0.1 * dt_h + 0.9 * sun)
        drydown = s.residual + (s.theta_fc - s.residual) * math.exp(-exponent)
        return drydown + s.excess * math.exp(-dt_h / DRAINAGE_TAU_H)

    @property
    def trigger_ms(self) -> int:
        """When the noiseless model crosses the trigger (it only falls after the watering)."""
        lo, hi = self.wetting_ms, self.wetting_ms + 24 * HOUR_MS
        while self.true_vwc(hi) > self.soil.trigger:
            hi += 24 * HOUR_MS
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.true_vwc(mid) > self.soil.trigger:
                lo = mid
            else:
                hi = mid
        return hi

    def samples(self, until_ms: int) -> list[tuple[int, float]]:
        """Readings every 15 min from 12 h before the watering to ``until_ms``; noise from ``seed``."""
        rng = random.Random(self.seed)
        out = []
        t = self.wetting_ms - round(PRE_WETTING_H * HOUR_MS)
        while t <= until_ms:
            noise = rng.gauss(0.0, self.noise_sd) if self.noise_sd else 0.0
            out.append((t, self.true_vwc(t) + noise))
            t += STEP_MS
        return out


@dataclass(frozen=True, slots=True)
class Case:
    """One forecast to make: the readings up to ``now_ms`` and the true hours to the trigger."""

    drydown: Drydown
    now_ms: int
    true_hours: float
    samples: tuple[tuple[int, float], ...]


def drydowns() -> Iterator[Drydown]:
    seed = 0
    for soil in SOILS:
        for season in SEASONS:
            for hour in WATERING_HOURS:
                seed += 1
                for noise in NOISES:
                    yield Drydown(soil, season, noise, hour, seed)


def cases(drydown: Drydown) -> Iterator[Case]:
    """Forecast points along one drydown: at each horizon that leaves 12 h of drydown before it."""
    trigger_ms = drydown.trigger_ms
    all_samples = drydown.samples(trigger_ms)
    for horizon in HORIZONS_H:
        target = trigger_ms - horizon * HOUR_MS
        if target - drydown.wetting_ms < MIN_DRYDOWN_H * HOUR_MS:
            continue
        upto = [s for s in all_samples if s[0] <= target]
        now_ms = upto[-1][0]  # a forecast is made when a reading arrives
        yield Case(drydown, now_ms, (trigger_ms - now_ms) / HOUR_MS, tuple(upto))


def all_cases() -> Iterator[Case]:
    for d in drydowns():
        yield from cases(d)


BANDS = ("2-24 h", "24-72 h", "72-120 h")


def band(true_hours: float) -> str:
    """The horizon band the figures are reported in."""
    if true_hours <= 24.0:
        return BANDS[0]
    if true_hours <= 72.0:
        return BANDS[1]
    return BANDS[2]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One forecast against its truth."""

    soil: str
    season: str
    noise_sd: float
    watering_hour: float
    true_hours: float
    forecast: Forecast

    @property
    def band(self) -> str:
        return band(self.true_hours)

    @property
    def relative_error(self) -> float:
        """|hours − truth| / truth; infinite when there is no estimate."""
        if self.forecast.hours is None:
            return math.inf
        return abs(self.forecast.hours - self.true_hours) / self.true_hours

    @property
    def covered(self) -> bool:
        f = self.forecast
        return f.low_h is not None and f.high_h is not None and f.low_h <= self.true_hours <= f.high_h


def outcomes(*, with_clock: bool = True) -> list[Outcome]:
    """Every case of the grid, forecast with the season's drying clock or (``with_clock`` False) in wall time."""
    out = []
    clocks = {season.name: season.clock for season in SEASONS}
    for case in all_cases():
        d = case.drydown
        f = forecast(
            case.samples,
            trigger_vwc=d.soil.trigger,
            residual_vwc=d.soil.residual,
            now_ms=case.now_ms,
            clock=clocks[d.season.name] if with_clock else None,
        )
        out.append(Outcome(d.soil.name, d.season.name, d.noise_sd, d.watering_hour, case.true_hours, f))
    return out


@dataclass(frozen=True, slots=True)
class Figures:
    count: int
    median_relative_error: float
    coverage: float  # share of cases whose range holds the truth
    no_estimate: int  # cases with hours None (insufficient, not drying)
    reached: int  # cases called "reached" though the truth is hours away


def figures(selected: Sequence[Outcome]) -> Figures:
    if not selected:
        return Figures(0, math.nan, math.nan, 0, 0)
    return Figures(
        count=len(selected),
        median_relative_error=statistics.median(o.relative_error for o in selected),
        coverage=sum(o.covered for o in selected) / len(selected),
        no_estimate=sum(o.forecast.hours is None for o in selected),
        reached=sum(o.forecast.method == "reached" for o in selected),
    )
