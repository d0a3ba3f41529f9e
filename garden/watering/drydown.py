"""Hours until a bed dries to its trigger, from the drydown since the last wetting. Pure.

Samples are ``(t_ms, vwc_pct)`` from one soil-moisture probe, ascending by
time. Time comes in as arguments (``now_ms``, and the garden's
:class:`~garden.watering.solar.DryingClock`); nothing here reads a clock.

**The drydown.** :func:`since_last_wetting` keeps the readings from the top
of the last watering's step on. The step is found by
:mod:`garden.watering.detection`, the detector that logs waterings, on
medians, so one noisy reading is not a wetting. Water above field capacity
then drains within hours (physics.py: τ = 3 h) while the drydown takes days,
and would steepen the fit. Leading readings that stand above the fitted curve
by more than noise and the day/night wave allow (2 SD, averaged over an
hour) are that drainage, and the fit is repeated without them (at most a
third of the drydown). The wave allowed is the smaller of the floor in
correction 2 below and, when the drydown spans a day or more, the wave its
later two thirds show. On a drying clock the drainage is also fitted
("Drainage on the drying clock" below).

**The model.** Soil dries towards a residual water content θr, faster when
wetter::

    θ(t) = θr + (θ0 − θr)·exp(−k·t)

This is the simulator's model (firmware_bridge/simulator/physics.py) and what
FAO-56's water-stress coefficient Ks (eq. 84, ET falling linearly with
depletion) gives once the soil is past its readily available water. θr is
fixed by the caller (``residual_vwc``, e.g. 0.8·θWP as in the simulator), so
only θ0 and k are fitted, as a line in ``z = ln(θ − θr) = a − k·t``. The fit
is weighted least squares with weights ``(θ̂ − θr)²``, iterated
(Gauss–Newton): a reading's noise is the same in θ whatever the level, so in
z it is ``noise / (θ − θr)``. The working response ``ln ŷ + (θ − θr − ŷ)/ŷ``
equals ``ln(θ − θr)`` to first order and stays defined when a noisy reading
falls to or below θr. At convergence this is the least-squares fit of the
curve to the readings in θ.

**The drying clock.** Soil dries mostly by day and barely at night, so in
wall time the drydown is not one exponential but a staircase. Given a
:class:`~garden.watering.solar.DryingClock` (``clock``), ``t`` is the
clock's *drying hours* instead (wall hours weighted by the sun: 1 an hour
at solar noon, 0.1 at night), in which the drydown is an exponential day
and night. Everything in this docstring then reads with drying hours for
``t``; the crossing and the ends of the range, in drying hours, are mapped
back to wall time by ``clock.inverse``. A crossing predicted for the night
is then as wide as the night is long, which is right: the soil lingers at
the trigger till morning. Spans, the 2-hour bins and the 12-hour blocks of
the range stay in wall time (they are about readings and weather, which the
clock does not change). Without a clock, ``t`` is wall hours as before.

**Drainage on the drying clock.** Drainage runs in wall time, drying in
drying hours; on the drying axis a night's drainage is a steep fall within
one drying hour, which a fit takes for fast drying. So with a clock, once
the drydown spans ``DRAINAGE_MIN_SPAN_H`` = 12 h, the fit includes it::

    θ = θr + exp(a − k·τ) + E·exp(−w/τd)

with τ drying hours, w wall hours from the first reading and τd one of
``DRAINAGE_TAUS_H`` = 1, 2 or 4 h (the one that fits best, by least
squares in θ, Gauss–Newton; only E > 0 counts). Readings after the first
two days go in as 2-hour means, which changes nothing but the cost. The
readings less E·exp(−w/τd) are then fitted as above, and fitting E widens
the range: the rate's and the level's variances are multiplied by what the
third parameter costs them (the ratio of their linearised variances with
and without E). When the drydown is too short to tell drainage from
drying, so that with E the rate is no longer above noise, the forecast is
made from the readings as they are.

**The linear fallback** (θ against t, unweighted) is used when the
exponential is not usable:

- the trigger is at or below θr: the curve never reaches it;
- the fit fails to converge, or k is not above what noise could make
  (k ≤ t·SE, which includes k ≤ 0);
- θ is too near θr: the curve at the last reading is within two noise SDs
  of θr, where the log of a noisy difference means nothing;
- the curve fits worse than a line: residual SD over 1.25 × the line's.

The method is "reached" when both the fit at the last reading and the median
of the last three readings are at or below the trigger (either alone is
fooled: the fit by the time of day, the readings by noise), "not_drying"
when the line's fall is not above what noise could make (slope ≥ −t·SE) so
that the range has no upper end, "insufficient" with fewer than
``min_samples`` readings or ``min_span_h`` hours since the wetting. Noise is
never taken as less than ``MIN_NOISE_VWC``, the rounding of a probe's ADC
step, so flat or perfectly smooth readings are not treated as exact.

**The range** (``low_h`` to ``high_h``) aims at 90 %. Hours to the trigger
are ``u = D / k`` after the fit's weighted mean time t̄, where D is the
distance from the fitted level at t̄ to the trigger (in z). Two things are
uncertain, and they are added in quadrature on each side:

- *the rate k.* Reading noise shifts it, by ±t·SE (Student's t, n − 2 degrees
  of freedom); the day/night wave (below) scales it, by a factor
  exp(±1.645·rel), with rel its relative SE. The hours at the two ends of
  the rate's range bound u;
- *where the line is, and where the day is, at the crossing:* ±1.645 SDs of
  the level at t̄ and of the wave, divided by k.

Soil dries mostly by day, and the range must say so:

1. *The residuals are not independent.* A daily-modulated drydown leaves a
   slow day/night wave in them as well as reading noise. The noise
   variance comes from differences of successive residuals,
   σ_w² = Σ(r_i − r_{i−1})² / 2(n − 1); the wave's from 2-hour means of the
   residuals, less the noise left in them. Noise counts all n readings; the
   wave counts as one independent value per 12 h (half a cycle), so its
   share of the rate's variance is ``σ_s² · n / n_blocks / S_tt`` with
   ``n_blocks = max(1, span_h / 12)``.
2. *A fit shorter than a day cannot see the wave in its residuals* (a
   night-only stretch is a fine straight line, at a tenth of the day's
   rate). So the wave is never taken as smaller than a floor, in hours of
   drying on the fit's axis (k·floor in z): the SD by which the
   simulator's drydown (nights at 0.1 of the noon rate) runs ahead of or
   behind a straight line on that axis, measured over four days at 52°N
   with day lengths from FAO-56 Eq. 34:

   - in wall time, ``DIURNAL_LAG_H`` = 3 h: 3.3, 3.1 and 2.6 h for 7.5, 12
     and 16.5-h days (peak-to-peak 9 to 12 h);
   - on a drying clock, ``DRYING_LAG_H`` = 0.4 drying hours. With the
     garden's own longitude the stretched-sine days of the simulator leave
     only 0.02 to 0.05; with solar noon an hour off (a garden that gives
     only its time zone, :func:`~garden.watering.solar.longitude_from_utc_offset`)
     0.31 to 0.34, and with nights at 0.05 or 0.2 of noon instead of 0.1,
     0.12 to 0.30. The floor is the hour-off case, rounded up: the clock
     must stay honest where it is least exact.
3. *The crossing comes at some hour of the day.* Even with the rate known
   exactly the trigger is met on the wave, not on the mean line, so the
   wave's SD enters the crossing. Reading noise does not (the truth is the
   smooth curve).

tests/unit/test_drydown_accuracy.py and ``benchmarks/drydown_accuracy.py``
measure the errors and how often the range holds the truth, over sand, loam
and clay, winter to summer, and noise from 0 to 1 % VWC. On the drying
clock the median error is 5 % of the horizon for horizons over 24 h (11 %
in summer, the worst season) and 10 % from 2 to 24 h, and the range holds
the truth in 96 % and 95 % of those forecasts (91 % or more within every
soil, season and noise level). In wall time the medians are 10 % (36 % in
summer) and 47 %: a fit in wall time cannot know that the soil dries by
day. Coverage is above the 90 % aimed at in most of the grid, because every
day of it has the same weather, while the one-value-per-12-h wave allows
for days that differ (a cloudy day dries less), as a garden's do.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from operator import mul, sub
from typing import Literal

from garden.watering.detection import find_rises
from garden.watering.solar import DryingClock

HOUR_MS = 3_600_000

Method = Literal["exponential", "linear", "reached", "insufficient", "not_drying"]

Z90 = 1.645  # two-sided 90 %, the normal quantile: for the wave, which is not estimated from few readings
BLOCK_H = 12.0  # one independent value of the day/night wave per half day
BIN_H = 2.0  # residuals are averaged over this long to see the wave through the noise
DIURNAL_LAG_H = 3.0  # SD of the day/night wave, in hours of drying (see the module docstring)
DRYING_LAG_H = 0.4  # the same in drying hours, left over when fitting on a DryingClock (module docstring)
POOR_FIT_RATIO = 1.25  # exponential residual SD above this × the line's: use the line
SMOOTHING = 3  # readings in the median of the latest level
# No probe reads finer than its ADC step: the capacitive probe spans 40 % VWC in
# 260 counts (physics.py's probe, 520 dry to 260 wet), 0.15 % a count, so its
# rounding alone is 0.15/√12 ≈ 0.04 % VWC of noise. Flat readings are not "exact".
MIN_NOISE_VWC = 0.04
DRAINAGE_AVERAGE = 4  # readings averaged when looking for drainage (an hour at one per 15 min)
DRAINAGE_TAUS_H = (1.0, 2.0, 4.0)  # drainage time constants tried on a drying clock, wall hours (module docstring)
DRAINAGE_MIN_SPAN_H = 12.0  # shorter drydowns cannot tell drainage from drying: three of the slowest time constant
DRAINAGE_WINDOW_H = 48.0  # the drainage is fitted on the drydown's first two days: e^(−48/4) of it is left after

# Student's t, 95th percentile (two-sided 90 %), from any t table: 1 to 30
# degrees of freedom, then 40, 60, 120 and ∞. Interpolated linearly in 1/dof.
_T95 = (
    (1, 6.314), (2, 2.920), (3, 2.353), (4, 2.132), (5, 2.015), (6, 1.943), (7, 1.895), (8, 1.860),
    (9, 1.833), (10, 1.812), (11, 1.796), (12, 1.782), (13, 1.771), (14, 1.761), (15, 1.753),
    (16, 1.746), (17, 1.740), (18, 1.734), (19, 1.729), (20, 1.725), (21, 1.721), (22, 1.717),
    (23, 1.714), (24, 1.711), (25, 1.708), (26, 1.706), (27, 1.703), (28, 1.701), (29, 1.699),
    (30, 1.697), (40, 1.684), (60, 1.671), (120, 1.658), (math.inf, Z90),
)  # fmt: skip


def t95(dof: float) -> float:
    """Student's t 95th percentile for ``dof`` degrees of freedom (1 at least)."""
    if not dof > 1.0:
        return _T95[0][1]
    for (d0, t0), (d1, t1) in pairwise(_T95):
        if dof <= d1:
            x0, x1 = 1.0 / d0, 1.0 / d1
            return t0 + (t1 - t0) * (x0 - 1.0 / dof) / (x0 - x1)
    return Z90


@dataclass(frozen=True, slots=True)
class Forecast:
    """Hours from ``now_ms`` until the trigger, and how far to trust it.

    ``method`` is "exponential" or "linear" (the fit used), "reached" (already
    at or below the trigger: hours 0), "insufficient" (too few readings or
    too short a drydown) or "not_drying" (no fall distinguishable from
    noise). ``low_h``/``high_h`` are the range (aiming at 90 %), None when
    ``hours`` is; ``low_h ≤ hours ≤ high_h`` always.
    ``rate_per_h`` is the fitted k (per hour, > 0 when drying) for the
    exponential, the slope (% VWC per hour, < 0 when drying) for the line;
    per drying hour when the forecast was made on a drying clock.
    ``samples`` and ``span_h`` (wall hours) describe the drydown used;
    ``residual_sd`` is the fit's residual SD in % VWC (0 when there is no fit).
    """

    method: Method
    hours: float | None
    low_h: float | None
    high_h: float | None
    rate_per_h: float | None
    samples: int
    span_h: float
    residual_sd: float


def since_last_wetting(samples: Sequence[tuple[int, float]], *, min_rise_vwc: float = 2.5) -> list[tuple[int, float]]:
    """The readings from the top of the last watering's step on (all of them when none is seen).

    Uses the watering detector (:func:`garden.watering.detection.find_rises`),
    including a last rise too recent to be final, so a fresh watering cuts
    the drydown at once.
    """
    values = [v for _, v in samples]
    rises = find_rises(values, min_rise_vwc=min_rise_vwc, provisional=True)
    if not rises:
        return list(samples)
    return list(samples[rises[-1].peak :])


@dataclass(frozen=True, slots=True)
class _Fit:
    """A fitted line z = z_c − k·(t − t_c) and its errors; t in hours from the last reading.

    z is θ for the line (``residual_vwc`` None) and ln(θ − θr) for the curve.
    """

    residual_vwc: float | None
    t_c: float
    z_c: float
    k: float
    se_white: float  # SE of k from reading noise: noise shifts the rate
    rel_slow: float  # relative SE of k from the day/night wave: the wave scales the rate
    sd_level: float  # SD of z_c
    sd_day: float  # the day/night wave at the crossing, in z
    dof: float  # of the white part
    residual_sd: float  # % VWC
    white_sd: float  # % VWC
    lag_h: float  # the wave's floor, in hours of the fit's axis

    def z(self, t: float) -> float:
        return self.z_c - self.k * (t - self.t_c)

    def vwc(self, t: float) -> float:
        if self.residual_vwc is None:
            return self.z(t)
        return self.residual_vwc + math.exp(min(self.z(t), 700.0))

    def wave_vwc(self, t: float) -> float:
        """The day/night wave's floor at ``t``, in % VWC (``lag_h`` hours of drying)."""
        scale = 1.0 if self.residual_vwc is None else self.vwc(t) - self.residual_vwc
        return abs(self.k) * self.lag_h * scale


@dataclass(frozen=True, slots=True)
class _Axis:
    """The readings' times, in hours from the last reading (≤ 0).

    ``t`` is the axis the fit is made on: wall hours, or drying hours of a
    :class:`DryingClock`. ``wall`` is wall hours either way: the day/night
    wave's blocks and bins, and the spans asked for, are in wall time.
    ``lag_h`` is the wave's floor in hours of ``t``.
    """

    t: Sequence[float]
    wall: Sequence[float]
    lag_h: float

    @property
    def span_h(self) -> float:
        return -self.wall[0]

    def after(self, start: int) -> _Axis:
        return _Axis(self.t[start:], self.wall[start:], self.lag_h)


_LineFit = tuple[float, float, float, float, float]  # t_c, z_c, k, Σw, S_tt


def _wls(t: Sequence[float], z: Sequence[float], w: Sequence[float]) -> _LineFit | None:
    """Weighted least squares of z on t, as z = z_c − k·(t − t_c) with t_c the weighted mean time."""
    sw = sum(w)
    if not sw > 0.0:
        return None
    t_c = sum(map(mul, w, t)) / sw
    z_c = sum(map(mul, w, z)) / sw
    dt = [ti - t_c for ti in t]
    wdt = list(map(mul, w, dt))
    s_tt = sum(map(mul, wdt, dt))
    s_tz = sum(map(mul, wdt, z)) - z_c * sum(wdt)  # Σ w·dt is 0 but for rounding
    if not (s_tt > 0.0 and math.isfinite(s_tz)):
        return None
    return t_c, z_c, -s_tz / s_tt, sw, s_tt


def _slow_variance(t: Sequence[float], residuals: Sequence[float], white2: float) -> float:
    """The slow part of the residual variance: 2-hour means of the residuals, less what noise leaves in them."""
    total, bins = 0.0, 0
    current, acc, count = math.nan, 0.0, 0
    for ti, r in zip(t, residuals, strict=True):
        b = (ti - t[0]) // BIN_H
        if b != current:
            if count:
                mean = acc / count
                total += mean * mean - white2 / count
                bins += 1
            current, acc, count = b, 0.0, 0
        acc += r
        count += 1
    if count:
        mean = acc / count
        total += mean * mean - white2 / count
        bins += 1
    return max(0.0, total / bins) if bins else 0.0


def _with_errors(
    fit: _LineFit, axis: _Axis, residuals: Sequence[float], level2: float, residual_vwc: float | None
) -> _Fit | None:
    """The fit's errors: corrections 1 and 2 of the module docstring.

    ``residuals`` are in % VWC. ``level2`` is the weights' mean, (θ̂ − θr)²
    for the curve and 1 for the line: it turns % VWC into z.
    """
    t_c, z_c, k, sw, s_tt = fit
    n = len(residuals)
    sigma2 = sum(map(mul, residuals, residuals)) / max(1, n - 2)
    steps = list(map(sub, residuals[1:], residuals[:-1]))
    white2 = sum(map(mul, steps, steps)) / (2.0 * max(1, n - 1))
    white2 = max(min(white2, sigma2), MIN_NOISE_VWC * MIN_NOISE_VWC)
    # The slow part: what the residuals show beyond reading noise, and never
    # less than a drydown's day/night wave, which a fit over less than a day
    # cannot show in its residuals.
    wave = k * axis.lag_h
    slow2 = max(_slow_variance(axis.wall, residuals, white2), wave * wave * level2)
    per_block = n / max(1.0, axis.span_h / BLOCK_H)  # readings per independent value of the wave
    values = (sigma2, white2, slow2, s_tt, sw, level2)
    if not all(math.isfinite(x) for x in values) or not level2 > 0.0:
        return None
    return _Fit(
        residual_vwc=residual_vwc,
        t_c=t_c,
        z_c=z_c,
        k=k,
        se_white=math.sqrt(white2 / s_tt),
        rel_slow=math.sqrt(slow2 * per_block / s_tt) / abs(k) if k else math.inf,
        sd_level=math.sqrt((white2 + slow2 * per_block) / sw),
        sd_day=math.sqrt(slow2 / level2),
        dof=max(1.0, n - 2.0),
        residual_sd=math.sqrt(sigma2),
        white_sd=math.sqrt(white2),
        lag_h=axis.lag_h,
    )


def _fit_line(axis: _Axis, v: Sequence[float]) -> _Fit | None:
    t = axis.t
    fit = _wls(t, v, [1.0] * len(t))
    if fit is None:
        return None
    t_c, z_c, k, _, _ = fit
    residuals = [vi - (z_c - k * (ti - t_c)) for ti, vi in zip(t, v, strict=True)]
    return _with_errors(fit, axis, residuals, 1.0, None)


def _fit_curve(axis: _Axis, v: Sequence[float], residual_vwc: float) -> _Fit | None:
    """θ = θr + exp(a − k·t) by Gauss–Newton: weighted regressions of the working response on t."""
    t, span = axis.t, -axis.t[0]
    y = [vi - residual_vwc for vi in v]
    start = _wls(t, y, [1.0] * len(t))  # a line through the readings gives the first weights
    if start is None:
        return None
    t_c, y_c, slope, _, _ = start
    yhat = [y_c - slope * (ti - t_c) for ti in t]
    if min(yhat) <= 0.0:
        return None  # the drydown runs into θr: the log is no use
    exponents = [math.log(h) for h in yhat]
    a, k = math.inf, math.inf
    for _ in range(50):
        z = [e + yi / h - 1.0 for e, yi, h in zip(exponents, y, yhat, strict=True)]  # ln ŷ + (y − ŷ)/ŷ
        fit = _wls(t, z, [h * h for h in yhat])
        if fit is None:
            return None
        t_c, z_c, k_new, _, _ = fit
        a_new = z_c + k_new * t_c  # z at the last reading
        exponents = [a_new - k_new * ti for ti in t]
        if not (math.isfinite(a_new) and math.isfinite(k_new)) or max(exponents) > 700.0:
            return None
        step = max(abs(a_new - a), abs(k_new - k) * max(1.0, span))
        a, k = a_new, k_new
        yhat = [math.exp(e) for e in exponents]
        if min(yhat) <= 0.0:
            return None
        if step < 1e-7:
            break
    else:
        return None  # did not converge
    fit = _wls(t, [a - k * ti for ti in t], [h * h for h in yhat])
    if fit is None:
        return None
    residuals = [yi - h for yi, h in zip(y, yhat, strict=True)]
    return _with_errors(fit, axis, residuals, fit[3] / len(t), residual_vwc)


@dataclass(frozen=True, slots=True)
class _Drainage:
    """Water draining from above field capacity: ``excess·exp(−w/tau_h)``, w wall hours from the first reading.

    ``rate_inflation`` and ``level_inflation`` are the variances of the
    curve's rate and level with the drainage fitted, over those without it.
    """

    excess: float
    tau_h: float
    rate_inflation: float
    level_inflation: float

    def at(self, wall_from_first_h: float) -> float:
        return self.excess * math.exp(-wall_from_first_h / self.tau_h)


def _solve(m: list[list[float]], r: list[float]) -> list[float] | None:
    """m·x = r by Gaussian elimination with partial pivoting; None when m is singular."""
    n = len(r)
    a = [[*row, ri] for row, ri in zip(m, r, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda i: abs(a[i][col]))
        if not abs(a[pivot][col]) > 1e-300:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for i in range(col + 1, n):
            f = a[i][col] / a[col][col]
            for j in range(col, n + 1):
                a[i][j] -= f * a[col][j]
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (a[i][n] - sum(a[i][j] * x[j] for j in range(i + 1, n))) / a[i][i]
    return x if all(math.isfinite(xi) for xi in x) else None


def _inverse_diagonal(m: list[list[float]], index: int) -> float | None:
    """Element (index, index) of m⁻¹."""
    unit = [1.0 if i == index else 0.0 for i in range(len(m))]
    x = _solve(m, unit)
    return None if x is None else x[index]


_Points = tuple[list[float], list[float], list[float]]  # x, y, counts


def _drainage_fit(points: _Points, g: Sequence[float], a: float, k: float) -> tuple[float, float, float, float] | None:
    """(a, k, E, SSE) of y = exp(a − k·x) + E·g, least squares in θ by Gauss–Newton from (a, k, 0).

    Each point is weighted by its count (rows scaled by √count; the scale rides in the exponent).
    """
    x, y, counts = points
    neg_x = [-xi for xi in x]
    offsets = [0.5 * math.log(c) for c in counts]
    roots = [math.sqrt(c) for c in counts]
    y = list(map(mul, roots, y))
    g = list(map(mul, roots, g))
    gg = sum(map(mul, g, g))

    def evaluate(a: float, k: float, e: float) -> tuple[list[float], list[float], float]:
        try:
            ex = [math.exp(a + k * nx + o) for nx, o in zip(neg_x, offsets, strict=True)]
        except OverflowError:
            return [], [], math.inf
        r = [yi - ei - e * gi for yi, ei, gi in zip(y, ex, g, strict=True)]
        return ex, r, sum(map(mul, r, r))

    e = 0.0
    ex, r, current = evaluate(a, k, e)
    if not math.isfinite(current):
        return None
    for _ in range(30):
        xe = list(map(mul, neg_x, ex))
        m = [
            [sum(map(mul, ex, ex)), sum(map(mul, ex, xe)), sum(map(mul, ex, g))],
            [0.0, sum(map(mul, xe, xe)), sum(map(mul, xe, g))],
            [0.0, 0.0, gg],
        ]
        m[1][0], m[2][0], m[2][1] = m[0][1], m[0][2], m[1][2]
        step = _solve(m, [sum(map(mul, ex, r)), sum(map(mul, xe, r)), sum(map(mul, g, r))])
        if step is None:
            return None
        scale = 1.0
        while scale > 1e-4:  # halve the step until the fit improves
            trial = (a + scale * step[0], k + scale * step[1], e + scale * step[2])
            ex_t, r_t, value = evaluate(*trial)
            if value <= current:
                break
            scale *= 0.5
        else:
            break  # no step improves: at the minimum
        improvement = current - value
        (a, k, e), ex, r, current = trial, ex_t, r_t, value
        if improvement <= 1e-6 * current:
            break
    return (a, k, e, current) if all(math.isfinite(p) for p in (a, k, e, current)) else None


def _thinned(x: Sequence[float], w: Sequence[float], y: Sequence[float]) -> tuple[_Points, list[float]]:
    """The readings of the first ``DRAINAGE_WINDOW_H`` as they are, later ones as ``BIN_H`` means; and their w.

    Drainage is over by then, and over two hours the curve is as good as
    straight (k·2 h is a few hundredths), so the means fit as their readings
    would, at a fraction of the cost.
    """
    n = bisect.bisect_right(w, DRAINAGE_WINDOW_H)  # readings ascend in time
    xs, ys, ws, counts = list(x[:n]), list(y[:n]), list(w[:n]), [1.0] * n
    while n < len(w):
        edge = DRAINAGE_WINDOW_H + BIN_H * (math.floor((w[n] - DRAINAGE_WINDOW_H) / BIN_H) + 1)  # w[n]'s bin ends
        end = max(n + 1, bisect.bisect_right(w, edge, lo=n))
        count = float(end - n)
        xs.append(sum(x[n:end]) / count)
        ws.append(sum(w[n:end]) / count)
        ys.append(sum(y[n:end]) / count)
        counts.append(count)
        n = end
    return (xs, ys, counts), ws


def _drainage(axis: _Axis, v: Sequence[float], residual_vwc: float) -> _Drainage | None:
    """The drainage that fits best among ``DRAINAGE_TAUS_H``; None when none adds water (see the module docstring)."""
    if axis.span_h < DRAINAGE_MIN_SPAN_H:
        return None
    w_all = [wi - axis.wall[0] for wi in axis.wall]
    points, w = _thinned(axis.t, w_all, [vi - residual_vwc for vi in v])
    x, y, counts = points
    kept = [i for i, yi in enumerate(y) if yi > 0.0]
    start = _wls([x[i] for i in kept], [math.log(y[i]) for i in kept], [counts[i] for i in kept])  # ln(θ − θr) on t
    if start is None or not start[2] > 0.0:
        return None
    t_c, z_c, k_start, _, _ = start
    best: tuple[float, float, float, float, float] | None = None  # SSE, τ, a, k, E
    for tau in DRAINAGE_TAUS_H:
        fitted = _drainage_fit(points, [math.exp(-wi / tau) for wi in w], z_c + k_start * t_c, k_start)
        if fitted is None:
            continue
        a, k, e, total = fitted
        if e > 0.0 and k > 0.0 and (best is None or total < best[0]):
            best = (total, tau, a, k, e)
    if best is None:
        return None
    _, tau, a, k, e = best
    inflation = _inflation(axis.t, [math.exp(-wi / tau) for wi in w_all], a, k)
    if inflation is None:
        return None
    return _Drainage(e, tau, *inflation)


def _inflation(x: Sequence[float], g: Sequence[float], a: float, k: float) -> tuple[float, float] | None:
    """How much fitting the drainage widens the rate's and the level's variances (the curve's, linearised)."""
    try:
        ex = [math.exp(a - k * xi) for xi in x]
    except OverflowError:
        return None
    xe = [-xi * ei for xi, ei in zip(x, ex, strict=True)]
    m = [
        [sum(map(mul, ex, ex)), sum(map(mul, ex, xe)), sum(map(mul, ex, g))],
        [0.0, sum(map(mul, xe, xe)), sum(map(mul, xe, g))],
        [0.0, 0.0, sum(map(mul, g, g))],
    ]
    m[1][0], m[2][0], m[2][1] = m[0][1], m[0][2], m[1][2]
    # The level is z at the weighted mean time, a − k·x̄: gradient (1, −x̄, 0); the weights are exp(a − k·x)².
    x_bar = -m[0][1] / m[0][0] if m[0][0] > 0.0 else 0.0
    c = [1.0, -x_bar, 0.0]
    two = [row[:2] for row in m[:2]]
    rate3, rate2 = _inverse_diagonal(m, 1), _inverse_diagonal(two, 1)
    solved3, solved2 = _solve(m, c), _solve(two, c[:2])
    if rate3 is None or rate2 is None or solved3 is None or solved2 is None:
        return None
    level3, level2 = sum(map(mul, c, solved3)), sum(map(mul, c[:2], solved2))
    if not (rate2 > 0.0 and level2 > 0.0):
        return None
    return max(1.0, rate3 / rate2), max(1.0, level3 / level2)


def _significant(fit: _Fit) -> bool:
    """The fall is more than reading noise could make: k > t·SE."""
    return fit.k > t95(fit.dof) * fit.se_white


def _choose(axis: _Axis, v: Sequence[float], *, trigger_vwc: float, residual_vwc: float) -> _Fit | None:
    """The exponential when usable (see the module docstring), else the line; None if neither fits."""
    line = _fit_line(axis, v)
    if trigger_vwc <= residual_vwc:
        return line  # the curve never reaches the trigger
    curve = _fit_curve(axis, v, residual_vwc)
    if curve is None or not _significant(curve):
        return line
    if curve.vwc(0.0) - residual_vwc < 2.0 * curve.white_sd:
        return line  # θ too near θr: the log of a noisy difference means nothing
    if line is not None and curve.residual_sd > POOR_FIT_RATIO * line.residual_sd:
        return line
    return curve


def _drainage_end(axis: _Axis, v: Sequence[float], fit: _Fit) -> int:
    """How many leading readings are drainage (see "The drydown" in the module docstring)."""
    t, n = axis.t, len(axis.t)
    later_wave = math.inf
    if axis.span_h >= 24.0:  # long enough for the later readings to show the day/night wave they have
        rest = range(n // 3, n)
        residuals = [v[i] - fit.vwc(t[i]) for i in rest]
        later_wave = math.sqrt(_slow_variance([axis.wall[i] for i in rest], residuals, fit.white_sd * fit.white_sd))
    end = 0
    while end < n // 3:
        window = range(end, min(n, end + DRAINAGE_AVERAGE))
        excess = sum(v[i] - fit.vwc(t[i]) for i in window) / len(window)
        wave = min(fit.wave_vwc(t[end]), later_wave)
        if not excess > 2.0 * math.hypot(fit.white_sd / math.sqrt(len(window)), wave):
            break
        end += 1
    return end


def _crossing(fit: _Fit, z_trigger: float) -> tuple[float, float, float] | None:
    """(u, u_low, u_high): hours after t_c when the fit meets ``z_trigger``, and the range; None if not drying.

    See "The range" in the module docstring.
    """
    k = fit.k
    q = t95(fit.dof)
    if not k > q * fit.se_white:
        return None
    scale = Z90 * fit.rel_slow
    shift = q * fit.se_white
    k_low = k - math.hypot(k - k * math.exp(-scale), shift)
    if not k_low > 0.0:
        k_low = (k - shift) * math.exp(-scale)  # the two together at their worst: still above 0
    if not k_low > 0.0:
        return None  # the wave could scale the rate to nothing
    k_high = k + math.hypot(k * math.exp(min(scale, 700.0)) - k, shift)
    d = fit.z_c - z_trigger
    u = d / k
    spread = q * math.hypot(fit.sd_level, fit.sd_day) / k
    low = u - math.hypot(u - d / k_high, spread)
    high = u + math.hypot(d / k_low - u, spread)
    if not all(math.isfinite(x) for x in (u, low, high)):
        return None
    return u, low, high


@dataclass(frozen=True, slots=True)
class _Need:
    """How much drydown a fit needs: ``samples`` readings over ``span_h`` wall hours."""

    samples: int
    span_h: float

    def met(self, axis: _Axis) -> bool:
        return len(axis.t) >= self.samples and axis.span_h >= self.span_h


@dataclass(frozen=True, slots=True)
class _Levels:
    trigger_vwc: float
    residual_vwc: float

    def z_trigger(self, fit: _Fit) -> float:
        """The trigger on the fit's scale: θ for the line, ln(θ − θr) for the curve."""
        if fit.residual_vwc is None:
            return self.trigger_vwc
        return math.log(self.trigger_vwc - self.residual_vwc)


def _fit_drydown(
    axis: _Axis, values: Sequence[float], drainage: _Drainage | None, levels: _Levels, need: _Need
) -> tuple[_Axis, _Fit | None]:
    """The fit, less the drainage (when given) and the leading readings that are drainage still; and its readings."""
    if drainage is not None:
        values = [v - drainage.at(w - axis.wall[0]) for v, w in zip(values, axis.wall, strict=True)]
    fit = _choose(axis, values, trigger_vwc=levels.trigger_vwc, residual_vwc=levels.residual_vwc)
    if fit is not None:
        drained = _drainage_end(axis, values, fit)
        if drained and need.met(axis.after(drained)):
            axis, values = axis.after(drained), values[drained:]
            fit = _choose(axis, values, trigger_vwc=levels.trigger_vwc, residual_vwc=levels.residual_vwc)
    if fit is not None and drainage is not None:  # the drainage's share of the rate's and the level's errors
        root_rate = math.sqrt(drainage.rate_inflation)
        fit = replace(
            fit,
            se_white=fit.se_white * root_rate,
            rel_slow=fit.rel_slow * root_rate,
            sd_level=fit.sd_level * math.sqrt(drainage.level_inflation),
        )
    return axis, fit


def forecast(
    samples: Sequence[tuple[int, float]],
    *,
    trigger_vwc: float,
    residual_vwc: float,
    now_ms: int,
    min_span_h: float = 3.0,
    min_samples: int = 6,
    clock: DryingClock | None = None,
) -> Forecast:
    """Hours from ``now_ms`` until the drydown since the last wetting reaches ``trigger_vwc``.

    With a ``clock`` the drydown is fitted in its drying hours and the
    crossing mapped back to wall time ("The drying clock" in the module
    docstring). See the module docstring for the model, the fallback and the range.
    """
    tail = [(t, v) for t, v in since_last_wetting(samples) if math.isfinite(v)]
    if not tail:
        return Forecast("insufficient", None, None, None, None, 0, 0.0, 0.0)
    t_last = tail[-1][0]
    values = [v for _, v in tail]
    latest = statistics.median(values[-SMOOTHING:])
    wall = [(ti - t_last) / HOUR_MS for ti, _ in tail]  # hours, ≤ 0
    if clock is None:
        tau_last, axis = 0.0, _Axis(wall, wall, DIURNAL_LAG_H)
    else:
        tau_last = clock.at(t_last)
        axis = _Axis([tau - tau_last for tau in clock.at_many(ti for ti, _ in tail)], wall, DRYING_LAG_H)
    need = _Need(max(3, min_samples), min_span_h)
    if not need.met(axis):
        if latest <= trigger_vwc:
            return Forecast("reached", 0.0, 0.0, 0.0, None, len(wall), axis.span_h, 0.0)
        return Forecast("insufficient", None, None, None, None, len(wall), axis.span_h, 0.0)
    levels = _Levels(trigger_vwc, residual_vwc)
    drainage = None
    if clock is not None and trigger_vwc > residual_vwc:  # drainage runs in wall time, drying in drying hours
        drainage = _drainage(axis, values, residual_vwc)
    axis, fit = _fit_drydown(axis, values, drainage, levels, need)
    if drainage is not None and (fit is None or _crossing(fit, levels.z_trigger(fit)) is None):
        axis, fit = _fit_drydown(axis, values, None, levels, need)  # too short to tell drainage from drying
    n, span_h = len(axis.t), axis.span_h
    if fit is None:
        return Forecast("insufficient", None, None, None, None, n, span_h, 0.0)
    curve = fit.residual_vwc is not None
    method: Method = "exponential" if curve else "linear"
    rate = fit.k if curve else -fit.k
    if fit.vwc(0.0) <= trigger_vwc and latest <= trigger_vwc:  # the fit and the latest readings agree
        return Forecast("reached", 0.0, 0.0, 0.0, rate, n, span_h, fit.residual_sd)
    crossing = _crossing(fit, levels.z_trigger(fit))
    if crossing is None:
        return Forecast("not_drying", None, None, None, rate, n, span_h, fit.residual_sd)
    if clock is None:
        now_h = (now_ms - t_last) / HOUR_MS
        ahead = [fit.t_c + u - now_h for u in crossing]
    else:  # drying hours after the last reading, to wall hours after now
        ahead = [(clock.inverse(tau_last + fit.t_c + u) - now_ms) / HOUR_MS for u in crossing]
        if not all(math.isfinite(h) for h in ahead):
            return Forecast("not_drying", None, None, None, rate, n, span_h, fit.residual_sd)  # beyond any date
    hours, low, high = (max(0.0, h) for h in ahead)
    return Forecast(method, hours, min(low, hours), max(high, hours), rate, n, span_h, fit.residual_sd)


def hours_text(f: Forecast, *, min_span_h: float = 3.0) -> str:
    """The forecast for people: "~14 h (10–20 h)", "now", "no estimate yet (needs 3 h of drydown)"."""
    if f.method == "reached" or (f.hours is not None and f.hours < 0.5):
        return "now"
    if f.method == "not_drying":
        return "not drying"
    if f.hours is None:
        return f"no estimate yet (needs {min_span_h:g} h of drydown)"
    low = _duration(f.low_h if f.low_h is not None else f.hours)
    high = _duration(f.high_h if f.high_h is not None else f.hours)
    if low[1] == high[1]:
        return f"~{''.join(_duration(f.hours))} ({low[0]}–{''.join(high)})"
    return f"~{''.join(_duration(f.hours))} ({''.join(low)}–{''.join(high)})"


def _duration(hours: float) -> tuple[str, str]:
    """(number, unit): hours up to three days, then days."""
    if hours >= 72.0:
        return f"{hours / 24.0:.0f}", " d"
    if hours >= 10.0:
        return f"{hours:.0f}", " h"
    return f"{hours:.1f}".removesuffix(".0"), " h"
