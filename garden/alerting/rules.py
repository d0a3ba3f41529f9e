"""The rules that notice trouble with nodes, sensors and the tank. Pure.

Each takes what the hub has seen (times, values) and the policy, and says
whether a condition holds. None calls the clock: ``now_ms`` is an argument.

- **Liveness** understands sleep: a node announces its reading interval, and
  is *late* only after ``interval × late_tolerance`` without a reading, *lost*
  after ``interval × lost_tolerance``. A node that sleeps between readings
  is never flagged.
- **Gaps** in a boot's sequence numbers are readings lost on the way.
- **Stuck**: a sensor that repeats the identical raw value ``stuck_samples``
  times running (a live soil probe or thermometer always wobbles).
- **Faults**: the bridge flagged the value (failed, sentinel, out of range) in
  each of the last ``fault_samples`` readings, or the calibrated moisture is
  outside what soil can hold.
- **Battery** below ``battery_low_v`` (critical below ``battery_critical_v``).
- **Tank** with fewer than ``tank_min_days`` of water at the recent use.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Sensors that always wobble when alive (see firmware_bridge/calibration.py for
# the kinds): soil moisture, soil and air temperature, humidity. Light reads a
# steady 0 all night and a tank can stand still for days, so they are not checked.
STUCK_KINDS = ("sm", "st", "at", "rh")
# A capacitive probe's volumetric water content can't leave 0..60 % in soil
# (saturated clay holds about 50-55 %, FAO-56 Table 19 gives θFC ≤ 0.49).
VWC_PHYSICAL = (0.0, 60.0)


@dataclass(frozen=True, slots=True)
class RulePolicy:
    late_tolerance: float = 1.5
    lost_tolerance: float = 3.0
    min_late_s: float = 120.0  # a node reading every 10 s is not late after 15 s
    gap_threshold: int = 3  # missing readings in the window before it is worth saying
    stuck_samples: int = 12
    fault_samples: int = 3
    battery_low_v: float = 3.4
    battery_critical_v: float = 3.2
    tank_min_days: float = 3.0
    tank_use_window_ms: int = 3 * DAY_MS


class Liveness(StrEnum):
    OK = "ok"
    LATE = "late"
    LOST = "lost"


def liveness(last_seen_ms: int, interval_s: float, now_ms: int, policy: RulePolicy = RulePolicy()) -> Liveness:
    """Whether a node that announced ``interval_s`` and was last heard at ``last_seen_ms`` is late or lost."""
    silent_s = (now_ms - last_seen_ms) / 1000
    if silent_s >= max(interval_s * policy.lost_tolerance, policy.min_late_s * 2):
        return Liveness.LOST
    if silent_s >= max(interval_s * policy.late_tolerance, policy.min_late_s):
        return Liveness.LATE
    return Liveness.OK


def missing_readings(names: Iterable[tuple[int, int]]) -> int:
    """How many sequence numbers are missing between the first and last seen of each boot."""
    by_boot: dict[int, set[int]] = {}
    for boot, seq in names:
        by_boot.setdefault(boot, set()).add(seq)
    return sum(max(seqs) - min(seqs) + 1 - len(seqs) for seqs in by_boot.values())


def stuck_sensors(raw: Mapping[str, Sequence[float]], samples: int) -> list[str]:
    """The sensors whose last ``samples`` raw values are all identical."""
    out = []
    for key, values in sorted(raw.items()):
        if not key.startswith(STUCK_KINDS) or len(values) < samples:
            continue
        tail = values[-samples:]
        if all(v == tail[0] for v in tail):
            out.append(key)
    return out


def faulty_sensors(
    errors: Mapping[str, Sequence[str | None]], vwc: Mapping[str, Sequence[float]], samples: int
) -> dict[str, str]:
    """Sensor → reason, for the sensors whose last ``samples`` readings were all bad."""
    out: dict[str, str] = {}
    for key, codes in errors.items():
        tail = codes[-samples:]
        if len(tail) == samples and all(tail):
            out[key] = str(tail[-1])
    low, high = VWC_PHYSICAL
    for key, values in vwc.items():
        recent = values[-samples:]
        if len(recent) == samples and all(not low <= v <= high for v in recent):
            out.setdefault(key, "impossible_vwc")
    return dict(sorted(out.items()))


def battery_state(volts: Sequence[float], policy: RulePolicy = RulePolicy()) -> str | None:
    """None when fine, else "warning" or "critical", on the median of the last three readings."""
    if not volts:
        return None
    v = statistics.median(volts[-3:])
    if v < policy.battery_critical_v:
        return "critical"
    if v < policy.battery_low_v:
        return "warning"
    return None


def tank_days_left(samples: Sequence[tuple[int, float]], now_ms: int, window_ms: int = 3 * DAY_MS) -> float | None:
    """Days of water left at the use of the last ``window_ms``; None when no use is seen.

    Use is the sum of the falls between readings; rises (a refill, rain) are
    not use. Readings wobble by a litre or two, so falls under 2 l between
    consecutive readings only count when they add up over the window.
    """
    recent = [(t, v) for t, v in samples if t >= now_ms - window_ms]
    if len(recent) < 2:
        return None
    span_ms = recent[-1][0] - recent[0][0]
    if span_ms < 6 * HOUR_MS:
        return None
    used = sum(max(0.0, a - b) for (_, a), (_, b) in itertools.pairwise(recent))
    noise = sum(max(0.0, b - a) for (_, a), (_, b) in itertools.pairwise(recent) if b - a < 2.0)
    used = max(0.0, used - noise)  # falls and rises of the wobble cancel; real use does not
    per_day = used / (span_ms / DAY_MS)
    if per_day <= 0.5:
        return None
    litres_now = statistics.median(v for _, v in recent[-3:])
    return max(0.0, litres_now) / per_day
