"""A bed's watering need: ok, soon, needs water or critical. Pure.

The state follows the smoothed soil moisture against the bed's trigger
(θ_trig = θFC − p·(θFC − θWP), garden/watering/bed_profile.py) and critical
level, with hysteresis so that noise around a line never flaps it:

- the moisture used is the median of the last few readings, so one
  noisy or spiking reading is not believed;
- a state is entered when that median falls to its line, and left only when
  it rises ``hysteresis_vwc`` above it (or a watering is detected). The band
  is the noise's full swing: with readings within ±1.5 % VWC of the truth, a
  median at or under the line means the truth is at most 1.5 above it, and
  leaving needs a median 3 above it, so the truth would have to rise. A
  drying bed (or one sitting on its trigger) cannot leave and re-enter: one
  crossing gives one alert. A watering (+5 to +10 % VWC) clears it easily;
- "soon" is entered when the drydown forecast reaches the trigger within
  ``soon_h`` hours and left when it moves beyond ``soon_h × 1.5``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Need(StrEnum):
    UNKNOWN = "unknown"
    OK = "ok"
    SOON = "soon"
    NEEDS_WATER = "needs_water"
    CRITICAL = "critical"

    @property
    def level(self) -> int:
        return _LEVELS[self]

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


_LEVELS = {Need.UNKNOWN: -1, Need.OK: 0, Need.SOON: 1, Need.NEEDS_WATER: 2, Need.CRITICAL: 3}


@dataclass(frozen=True, slots=True)
class NeedPolicy:
    hysteresis_vwc: float = 3.0
    soon_h: float = 24.0
    smoothing: int = 3  # readings in the median


def smoothed(values: Sequence[float], n: int) -> float | None:
    """The median of the last ``n`` values (fewer when there are fewer)."""
    if not values:
        return None
    return statistics.median(values[-n:])


def next_need(
    previous: Need,
    vwc: float | None,
    *,
    trigger_vwc: float,
    critical_vwc: float,
    hours_to_trigger: float | None,
    policy: NeedPolicy = NeedPolicy(),
) -> Need:
    """The state after ``previous`` given the smoothed moisture ``vwc`` now."""
    if vwc is None:
        return Need.UNKNOWN
    band = policy.hysteresis_vwc
    if vwc <= critical_vwc or (previous is Need.CRITICAL and vwc <= critical_vwc + band):
        return Need.CRITICAL
    if vwc <= trigger_vwc or (previous in (Need.CRITICAL, Need.NEEDS_WATER) and vwc <= trigger_vwc + band):
        return Need.NEEDS_WATER
    if hours_to_trigger is not None:
        if hours_to_trigger <= policy.soon_h:
            return Need.SOON
        if previous is Need.SOON and hours_to_trigger <= policy.soon_h * 1.5:
            return Need.SOON
    return Need.OK
