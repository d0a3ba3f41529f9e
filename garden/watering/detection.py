"""Watering events found in a soil-moisture series: a step up. Pure.

A capacitive probe reads with about ±1.5 % VWC of noise and the odd spike,
so a watering is judged on medians, never on single readings. With ``v`` the
readings in time order, ``w = window`` and ``m[j]`` the median of
``v[j : j + w]``:

1. Sample ``i`` is a *candidate* when the median of the ``w`` readings from
   ``i`` on is at least ``min_rise_vwc`` above the median of the ``w``
   readings before it: ``m[i] − m[i − w] ≥ min_rise_vwc``. One spike is
   outvoted in both medians.
2. Candidates less than ``3·w`` samples apart are one rise. A slow soak over
   several readings, or noise that breaks a run, is still one watering; so
   is a chance candidate just before a real step, which would otherwise be
   confirmed by the real step.
3. The rise is *confirmed* when the ``2·w`` readings after its windows,
   ``v[last + w : last + 3·w]``, have a median at least ``min_rise_vwc``
   above the median of the ``2·w`` readings before it. Noise that lifts one
   window by chance must then do it again, independently, and against a
   steadier baseline. Over 1,000 series of 1,000 readings each, ±1.5 %
   uniform noise and gaussian noise of SD 0.75 gave no false watering
   (measured once; tests/unit/test_watering_detection.py checks 50 series of
   three days at the trigger for each). A real watering stays up for the
   hour or two this needs.
4. Its time is the first reading of the rise: the first reading from the
   first candidate on that stands, with the next one, above the level before
   by half of ``min_rise_vwc`` (or by the spread of the readings before, when
   noise is wider, so that one high reading is not taken for the start).
   ``before_vwc`` is that level, the median of the ``2·w`` readings before
   the first candidate; ``after_vwc`` is the median of the ``w`` readings
   from the last candidate on, the top of the step; ``rise_vwc`` is their
   difference and ``mm = rise_vwc / 100 × root_depth_mm``, the depth of
   water the jump put in the root zone (1 % VWC over 100 mm is 1 mm, as in
   FAO-56 eq. 82, TAW = 1000·(θFC − θWP)·Zr). With ±1.5 % noise the time is
   the true one in about 97 % of waterings and one reading early otherwise,
   and ``mm`` is within about ±2.6 mm (1 SD) for a 300 mm root zone.

**Deterministic over overlapping windows.** A rise is reported only when it
is final, ``4·w − 1`` readings after its last candidate: by then no later
candidate can join it and its confirmation is complete. Nothing it depends on
changes when readings are appended, so a caller that runs this every minute
over the last N hours gets the same ``t_ms`` each time and can de-duplicate
on it. A rise whose first candidate comes within ``4·w − 1`` readings of the
start is not reported: part of it may lie before the readings given, and a
call whose readings start earlier reports it whole. The price is latency: a
watering is reported about ``4·w`` readings after it (3 h at one reading
every 15 minutes, with ``window=3``).

**The smallest watering it sees.** Noise-free, any step of ``min_rise_vwc``:
2.5 % VWC, which is **7.5 mm** in a 300 mm root zone. With noise the rise
must clear the threshold in two independent comparisons. Measured in
tests/unit/test_watering_detection.py: a step of 4.5 % VWC (**13.5 mm** in
300 mm) is found at least 95 % of the time under ±1.5 % uniform noise, and
4 % (12 mm) under gaussian noise of SD 0.75; a 2.5 % step (7.5 mm) only
about a third of the time. A rise spread over more than about ``w``
readings (a trickle over hours) is not a step and is not reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Watering:
    """A detected watering: when, the levels before and after, and the water it put in the root zone."""

    t_ms: int
    before_vwc: float
    after_vwc: float
    rise_vwc: float
    mm: float


@dataclass(frozen=True, slots=True)
class Rise:
    """A step up, by index into the readings it was found in.

    ``start`` is the first reading of the rise, ``peak`` the highest reading
    within it (where a drydown begins), ``first``/``last`` the span of
    candidate samples. ``confirmed`` is False only for a rise still too close
    to the end of the readings to be final (see :func:`find_rises`).
    """

    start: int
    peak: int
    first: int
    last: int
    before_vwc: float
    after_vwc: float
    confirmed: bool

    @property
    def rise_vwc(self) -> float:
        return self.after_vwc - self.before_vwc


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


def _first_high(
    values: Sequence[float], span: range, before: float, half_rise: float, baseline: Sequence[float]
) -> int:
    """The first reading of a rise: it and the next are above the level before by half the minimum rise,
    or by the spread of the readings before when noise is wider (so one noisy reading is not the start)."""
    threshold = before + max(half_rise, max(baseline) - min(baseline))
    high = [j for j in span if values[j] >= threshold]
    for j in high:
        if j + 1 >= len(values) or values[j + 1] >= threshold:
            return j
    return high[0] if high else span.start


def find_rises(
    values: Sequence[float], *, min_rise_vwc: float = 2.5, window: int = 3, provisional: bool = False
) -> list[Rise]:
    """The steps up in ``values`` (readings in time order), as in the module docstring.

    With ``provisional``, a last rise that is not final yet is included too,
    unconfirmed, if it is at least twice ``min_rise_vwc`` (a chance rise from
    noise is rarely that large): a drydown forecast wants to know about a
    watering as soon as it shows, and has no de-duplication to keep stable.
    """
    w = max(1, int(window))
    n = len(values)
    if n < 2 * w:
        return []
    medians = [_median(values[j : j + w]) for j in range(n - w + 1)]
    # A candidate at i needs m[i - w] and m[i]: i runs over [w, n - w].
    candidates = [i for i in range(w, n - w + 1) if medians[i] - medians[i - w] >= min_rise_vwc]
    groups: list[list[int]] = []
    for i in candidates:
        if groups and i - groups[-1][-1] < 3 * w:
            groups[-1].append(i)
        else:
            groups.append([i])
    rises = []
    for group in groups:
        first, last = group[0], group[-1]
        if first < 4 * w - 1:
            continue  # may have begun, or have a part, before these readings: see the module docstring
        final = last + 4 * w - 1 <= n
        if not final and not provisional:
            continue
        before = _median(values[first - 2 * w : first])
        after = medians[last]  # the readings from the last candidate on: the top of the step
        if final and _median(values[last + w : last + 3 * w]) - before < min_rise_vwc:
            continue  # did not stay up: noise, or a spike wider than the median
        if not final and after - before < 2.0 * min_rise_vwc:
            continue  # unconfirmed, so only a large rise: a chance one is rarely twice the threshold
        rise_end = min(n, last + w)  # the readings inside the rise's after-windows
        start = _first_high(values, range(first, rise_end), before, min_rise_vwc / 2.0, values[first - 2 * w : first])
        peak = max(range(start, rise_end), key=lambda j: values[j])
        rises.append(Rise(start, peak, first, last, before, after, final))
    return rises


def detect_waterings(
    samples: Sequence[tuple[int, float]], *, root_depth_mm: float, min_rise_vwc: float = 2.5, window: int = 3
) -> list[Watering]:
    """The waterings in ``samples`` ((t_ms, vwc_pct), ascending by time), final ones only.

    See the module docstring for the method, the smallest watering it sees
    and why ``t_ms`` is stable as readings are appended.
    """
    values = [v for _, v in samples]
    out = []
    for r in find_rises(values, min_rise_vwc=min_rise_vwc, window=window):
        rise = r.rise_vwc
        out.append(Watering(samples[r.start][0], r.before_vwc, r.after_vwc, rise, rise / 100.0 * root_depth_mm))
    return out
