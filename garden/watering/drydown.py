"""Hours until a bed dries to its trigger, from the drydown since the last wetting. Pure.

Samples are ``(t_ms, vwc_pct)`` from one soil-moisture probe, ascending by
time. Time comes in as arguments (``now_ms``); nothing here reads a clock.

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
later two thirds show.

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
   rate). So the wave is never taken as smaller than ``DIURNAL_LAG_H`` = 3 h
   of drying (k·3 h in z): the SD, in hours, by which the simulator's
   drydown (nights at 0.1 of the noon rate, 9 to 16 h days) runs ahead of or
   behind its daily-mean line; its peak-to-peak is 8 to 11 h.
3. *The crossing comes at some hour of the day.* Even with the rate known
   exactly the trigger is met on the wave, not on the mean line, so the
   wave's SD enters the crossing. Reading noise does not (the truth is the
   smooth curve).

tests/unit/test_drydown_accuracy.py and ``benchmarks/drydown_accuracy.py``
measure the errors and how often the range holds the truth, over sand, loam
and clay, winter to summer, and noise from 0 to 1 % VWC. There the range
holds the truth in 99 % of forecasts 24 to 120 h ahead and 96 % of those 2 to
24 h ahead: more than the 90 % aimed at, because every day of that grid has
the same weather, while the one-value-per-12-h wave allows for days that
differ (a cloudy day dries less), as a garden's do.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import mul, sub
from typing import Literal

from garden.watering.detection import find_rises

HOUR_MS = 3_600_000

Method = Literal["exponential", "linear", "reached", "insufficient", "not_drying"]

Z90 = 1.645  # two-sided 90 %, the normal quantile: for the wave, which is not estimated from few readings
BLOCK_H = 12.0  # one independent value of the day/night wave per half day
BIN_H = 2.0  # residuals are averaged over this long to see the wave through the noise
DIURNAL_LAG_H = 3.0  # SD of the day/night wave, in hours of drying (see the module docstring)
POOR_FIT_RATIO = 1.25  # exponential residual SD above this × the line's: use the line
SMOOTHING = 3  # readings in the median of the latest level
# No probe reads finer than its ADC step: the capacitive probe spans 40 % VWC in
# 260 counts (physics.py's probe, 520 dry to 260 wet), 0.15 % a count, so its
# rounding alone is 0.15/√12 ≈ 0.04 % VWC of noise. Flat readings are not "exact".
MIN_NOISE_VWC = 0.04
DRAINAGE_AVERAGE = 4  # readings averaged when looking for drainage (an hour at one per 15 min)

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
    exponential, the slope (% VWC per hour, < 0 when drying) for the line.
    ``samples`` and ``span_h`` describe the drydown used; ``residual_sd``
    is the fit's residual SD in % VWC (0 when there is no fit).
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

    def z(self, t: float) -> float:
        return self.z_c - self.k * (t - self.t_c)

    def vwc(self, t: float) -> float:
        if self.residual_vwc is None:
            return self.z(t)
        return self.residual_vwc + math.exp(min(self.z(t), 700.0))

    def wave_vwc(self, t: float) -> float:
        """The day/night wave's SD at ``t``, in % VWC (``DIURNAL_LAG_H`` hours of drying)."""
        scale = 1.0 if self.residual_vwc is None else self.vwc(t) - self.residual_vwc
        return abs(self.k) * DIURNAL_LAG_H * scale


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
    fit: _LineFit,
    t: Sequence[float],
    residuals: Sequence[float],
    span_h: float,
    level2: float,
    residual_vwc: float | None,
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
    wave = k * DIURNAL_LAG_H
    slow2 = max(_slow_variance(t, residuals, white2), wave * wave * level2)
    per_block = n / max(1.0, span_h / BLOCK_H)  # readings per independent value of the wave
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
    )


def _fit_line(t: Sequence[float], v: Sequence[float], span_h: float) -> _Fit | None:
    fit = _wls(t, v, [1.0] * len(t))
    if fit is None:
        return None
    t_c, z_c, k, _, _ = fit
    residuals = [vi - (z_c - k * (ti - t_c)) for ti, vi in zip(t, v, strict=True)]
    return _with_errors(fit, t, residuals, span_h, 1.0, None)


def _fit_curve(t: Sequence[float], v: Sequence[float], residual_vwc: float, span_h: float) -> _Fit | None:
    """θ = θr + exp(a − k·t) by Gauss–Newton: weighted regressions of the working response on t."""
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
        step = max(abs(a_new - a), abs(k_new - k) * max(1.0, span_h))
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
    return _with_errors(fit, t, residuals, span_h, fit[3] / len(t), residual_vwc)


def _significant(fit: _Fit) -> bool:
    """The fall is more than reading noise could make: k > t·SE."""
    return fit.k > t95(fit.dof) * fit.se_white


def _choose(
    t: Sequence[float], v: Sequence[float], *, trigger_vwc: float, residual_vwc: float, span_h: float
) -> _Fit | None:
    """The exponential when usable (see the module docstring), else the line; None if neither fits."""
    line = _fit_line(t, v, span_h)
    if trigger_vwc <= residual_vwc:
        return line  # the curve never reaches the trigger
    curve = _fit_curve(t, v, residual_vwc, span_h)
    if curve is None or not _significant(curve):
        return line
    if curve.vwc(0.0) - residual_vwc < 2.0 * curve.white_sd:
        return line  # θ too near θr: the log of a noisy difference means nothing
    if line is not None and curve.residual_sd > POOR_FIT_RATIO * line.residual_sd:
        return line
    return curve


def _drainage_end(t: Sequence[float], v: Sequence[float], fit: _Fit) -> int:
    """How many leading readings are drainage (see "The drydown" in the module docstring)."""
    n = len(t)
    later_wave = math.inf
    if -t[0] >= 24.0:  # long enough for the later readings to show the day/night wave they have
        rest = range(n // 3, n)
        residuals = [v[i] - fit.vwc(t[i]) for i in rest]
        later_wave = math.sqrt(_slow_variance([t[i] for i in rest], residuals, fit.white_sd * fit.white_sd))
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


def forecast(
    samples: Sequence[tuple[int, float]],
    *,
    trigger_vwc: float,
    residual_vwc: float,
    now_ms: int,
    min_span_h: float = 3.0,
    min_samples: int = 6,
) -> Forecast:
    """Hours from ``now_ms`` until the drydown since the last wetting reaches ``trigger_vwc``.

    See the module docstring for the model, the fallback and the range.
    """
    tail = [(t, v) for t, v in since_last_wetting(samples) if math.isfinite(v)]
    if not tail:
        return Forecast("insufficient", None, None, None, None, 0, 0.0, 0.0)
    t_last = tail[-1][0]
    values = [v for _, v in tail]
    latest = statistics.median(values[-SMOOTHING:])
    t = [(ti - t_last) / HOUR_MS for ti, _ in tail]  # hours, ≤ 0

    def enough(hours: Sequence[float]) -> bool:
        return len(hours) >= max(3, min_samples) and -hours[0] >= min_span_h

    if not enough(t):
        if latest <= trigger_vwc:
            return Forecast("reached", 0.0, 0.0, 0.0, None, len(t), -t[0], 0.0)
        return Forecast("insufficient", None, None, None, None, len(t), -t[0], 0.0)
    fit = _choose(t, values, trigger_vwc=trigger_vwc, residual_vwc=residual_vwc, span_h=-t[0])
    if fit is not None:
        drained = _drainage_end(t, values, fit)
        if drained and enough(t[drained:]):
            t, values = t[drained:], values[drained:]
            fit = _choose(t, values, trigger_vwc=trigger_vwc, residual_vwc=residual_vwc, span_h=-t[0])
    n, span_h = len(t), -t[0]
    if fit is None:
        return Forecast("insufficient", None, None, None, None, n, span_h, 0.0)
    curve = fit.residual_vwc is not None
    method: Method = "exponential" if curve else "linear"
    rate = fit.k if curve else -fit.k
    if fit.vwc(0.0) <= trigger_vwc and latest <= trigger_vwc:  # the fit and the latest readings agree
        return Forecast("reached", 0.0, 0.0, 0.0, rate, n, span_h, fit.residual_sd)
    z_trigger = math.log(trigger_vwc - residual_vwc) if curve else trigger_vwc
    crossing = _crossing(fit, z_trigger)
    if crossing is None:
        return Forecast("not_drying", None, None, None, rate, n, span_h, fit.residual_sd)
    now_h = (now_ms - t_last) / HOUR_MS
    hours, low, high = (max(0.0, fit.t_c + u - now_h) for u in crossing)
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
