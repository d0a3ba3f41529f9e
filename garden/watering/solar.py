"""Where the sun is, and a clock that runs at the soil's drying pace. Pure.

Equations from FAO Irrigation and Drainage Paper 56 (Allen et al., 1998;
"FAO-56", as in :mod:`garden.watering.fao56`): the solar declination (Eq. 24),
the sunset hour angle (Eq. 25), the solar time angle (Eq. 31) with the
seasonal correction for solar time (Eqs. 32–33), the daylight hours (Eq. 34)
and, for the integral of the sun over an interval of hour angles, the
bracket of Eq. 28. ``fao56.extraterrestrial_radiation`` computes Eqs. 24–25
inline and exposes no function for them, so they are written here once, as
functions; tests/unit/test_solar.py checks that the daily integral below
gives back its Ra.

**The drying clock.** Soil dries mostly by day: evaporative demand follows
the sun, and at night it is a small share of noon's. A :class:`DryingClock`
counts *drying hours*: wall hours weighted by that demand,

    τ(t) = ∫ (n + (1 − n)·s(t′)) dt′    from the Unix epoch to t,

with ``n`` the night share (``NIGHT_SHARE``) and ``s`` the sun's weight. A
drydown that is exponential in τ runs at the same pace day and night, so
the forecast (:mod:`garden.watering.drydown`) fits it in τ, not in wall time.

**The sun's weight** is the sine of the solar elevation, ``sin α = sin φ sin δ
+ cos φ cos δ cos ω`` (0 when the sun is down: |ω| > ωs, Eq. 25), divided by
its value at that day's solar noon, ``cos(φ − δ)``. So ``s`` is 1 at every
solar noon, like the simulator's daylight curve
(firmware_bridge/simulator/physics.py), and ``n`` is the ratio of night to
*noon* demand whatever the season. Its mean over the daylight hours is
``(sin ωs − ωs cos ωs) / (ωs (1 − cos ωs))``: 2/π = 0.64 at 12-h days, 0.61
at 16-h days, 2/3 for the shortest, 0.54 at 22-h days near the polar circle:
close to a sine's 2/π, so a day's drying hours are about
``24 n + (1 − n)·0.64·N`` for ``N`` daylight hours (FAO-56 Eq. 34). The
absolute height of the sun (winter's low noon) is left to the fitted rate,
which the drydown measures: within the few days of a drydown it changes
little.

**Time** is UTC. Eq. 31 wants the clock time of the longitude ``Lz`` of the
time zone's centre; with UTC, ``Lz`` = 0 and the hour angle at UTC hour
``h`` is ``ω = π/12·(h + λ/15 + Sc − 12)`` with λ the longitude, degrees east
(Eq. 31's ``Lm`` is degrees west, so ``−Lm = λ``). δ and Sc are taken for the
UTC calendar day (Eq. 24 and 33's ``J``); at UTC midnight they step to the
next day's values, which moves the sun by under a minute.

**Exact and fast.** Within a day δ and Sc are constant, so the integral of
``s`` over any interval is in closed form (Eq. 28's bracket, clipped to the
sunlit hour angles ±ωs). The clock precomputes each day of the year's
constants once per place (366 days, a few milliseconds, cached), so ``at``
costs a few microseconds at any time, ``at_many`` less per reading, and
``inverse`` a few tens (a bisection within the one day the answer lies
in). Nothing is sampled on a grid.

**Without the longitude**, :func:`longitude_from_utc_offset` takes the
centre of the garden's standard time zone (15° per hour). Solar noon is then
off by the garden's distance from that centre, typically under half an
hour, up to about an hour (and more where a country keeps a zone far from
its longitude, as Spain does).

Errors: :class:`ValueError` for a latitude outside −90…90°, a longitude
outside −180…180°, a night share outside (0, 1], or a non-finite time.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Night-time evaporative demand as a share of noon's: the simulator's drying
# model (firmware_bridge/simulator/physics.py, ``dry_rate_per_h × (0.1 + 0.9 ×
# daylight)``: "nights are ~10 % of it"). A model constant, not an FAO-56 one:
# FAO-56's hourly ETo (Eq. 53) is small at night, with no sun and only the
# air's drying power left.
NIGHT_SHARE = 0.1

_TURN = 2.0 * math.pi
_RAD_PER_HOUR = math.pi / 12.0  # the hour angle turns 15° an hour (FAO-56 Eq. 31)
_UNIX_ORDINAL = date(1970, 1, 1).toordinal()  # proleptic Gregorian day number of the epoch
_CYCLE_DAYS = 146_097  # days in 400 Gregorian years: the calendar repeats after them
_CYCLE_LEAP_YEARS = 97


def solar_declination(day_of_year: int) -> float:
    """δ, radians: FAO-56 Eq. 24, ``0.409 sin(2πJ/365 − 1.39)``."""
    return 0.409 * math.sin(2.0 * math.pi * day_of_year / 365.0 - 1.39)


def sunset_hour_angle(latitude_deg: float, day_of_year: int) -> float:
    """ωs, radians: FAO-56 Eq. 25, ``arccos(−tan φ tan δ)``.

    Clipped (``fao56.extraterrestrial_radiation`` uses this): 0 in polar night
    (no sunrise), π in polar day (no sunset).
    """
    phi = math.radians(latitude_deg)  # Eq. 22
    return math.acos(min(max(-math.tan(phi) * math.tan(solar_declination(day_of_year)), -1.0), 1.0))


def daylight_hours(latitude_deg: float, day_of_year: int) -> float:
    """N, the daylight hours: FAO-56 Eq. 34, ``24/π · ωs``."""
    return 24.0 / math.pi * sunset_hour_angle(latitude_deg, day_of_year)


def seasonal_correction_h(day_of_year: int) -> float:
    """Sc, hours, the seasonal correction for solar time (the equation of time): FAO-56 Eqs. 32–33."""
    b = 2.0 * math.pi * (day_of_year - 81) / 364.0  # Eq. 33
    return 0.1645 * math.sin(2.0 * b) - 0.1255 * math.cos(b) - 0.025 * math.sin(b)  # Eq. 32


def longitude_from_utc_offset(offset_h: float) -> float:
    """The longitude, degrees east, of the centre of a standard time zone ``offset_h`` hours from UTC.

    For gardens that give only their time zone: solar noon is then off by the
    garden's distance from the zone's centre, typically under half an hour
    and up to about an hour. Use the standard (winter) offset, not summer time.
    """
    if not math.isfinite(offset_h):
        raise ValueError(f"UTC offset must be a finite number of hours, got {offset_h!r}")
    return 15.0 * offset_h


@dataclass(frozen=True, slots=True)
class _Day:
    """One day of the year's sun, for the closed-form integral of its weight.

    The weight is ``a + b·cos ω`` for |ω| ≤ ωs and 0 beyond (``a``, ``b`` are
    sin φ sin δ and cos φ cos δ over the noon value); ``omega0`` is the hour
    angle at 00:00 UTC, ``period`` the integral over one turn (2π) of ω and
    ``f0`` the antiderivative at ``omega0``.
    """

    a: float
    b: float
    omega_s: float
    sin_omega_s: float
    omega0: float
    period: float
    f0: float = 0.0

    def antiderivative(self, omega: float) -> float:
        """∫ weight dω from a fixed origin: Eq. 28's bracket clipped to ±ωs, plus ``period`` per turn."""
        turns = math.floor((omega + math.pi) / _TURN)
        y = omega - _TURN * turns  # in [−π, π)
        if y <= -self.omega_s:
            return turns * self.period
        top = y if y < self.omega_s else self.omega_s
        return turns * self.period + self.a * (top + self.omega_s) + self.b * (math.sin(top) + self.sin_omega_s)

    def sun_hours(self, hour: float) -> float:
        """∫ weight dt from 00:00 UTC to ``hour`` (0–24), in hours."""
        return (self.antiderivative(self.omega0 + _RAD_PER_HOUR * hour) - self.f0) / _RAD_PER_HOUR

    def weight(self, hour: float) -> float:
        """The sun's weight at ``hour`` UTC: sin α over its noon value, 0 while the sun is down."""
        if not self.omega_s > 0.0:
            return 0.0
        return max(0.0, self.a + self.b * math.cos(self.omega0 + _RAD_PER_HOUR * hour))


def _day(latitude_deg: float, longitude_deg: float, day_of_year: int) -> _Day:
    phi = math.radians(latitude_deg)  # Eq. 22
    delta = solar_declination(day_of_year)
    noon = math.cos(phi - delta)  # sin α at solar noon
    omega0 = _RAD_PER_HOUR * (longitude_deg / 15.0 + seasonal_correction_h(day_of_year) - 12.0)  # Eq. 31 at 00:00
    omega_s = sunset_hour_angle(latitude_deg, day_of_year)
    if not (noon > 1e-12 and omega_s > 0.0):  # polar night: the sun does not rise
        return _Day(0.0, 0.0, 0.0, 0.0, omega0, 0.0)
    a = math.sin(phi) * math.sin(delta) / noon
    b = math.cos(phi) * math.cos(delta) / noon
    sin_omega_s = math.sin(omega_s)
    day = _Day(a, b, omega_s, sin_omega_s, omega0, 2.0 * (a * omega_s + b * sin_omega_s))
    return replace(day, f0=day.antiderivative(omega0))


def _within(day: _Day, hour: float, night_share: float) -> float:
    """Drying hours from 00:00 UTC to ``hour`` of ``day``."""
    return night_share * hour + (1.0 - night_share) * day.sun_hours(hour)


@functools.lru_cache(maxsize=64)
def _year(latitude_deg: float, longitude_deg: float, night_share: float) -> tuple[tuple[_Day, ...], tuple[float, ...]]:
    """Days 1–366 of the sun at one place, and the drying hours before each: once per place (a few ms)."""
    days = tuple(_day(latitude_deg, longitude_deg, j) for j in range(1, 367))
    cumulative = [0.0]
    for d in days:
        cumulative.append(cumulative[-1] + _within(d, 24.0, night_share))
    return days, tuple(cumulative)


def _year_and_day(days: int) -> tuple[int, int, int]:
    """(400-year cycles, year within the cycle 1–400, day of year 1–366) of a day counted from 1970-01-01."""
    cycles, rest = divmod(days + _UNIX_ORDINAL - 1, _CYCLE_DAYS)
    d = date.fromordinal(rest + 1)
    return cycles, d.year, rest + 1 - date(d.year, 1, 1).toordinal() + 1


def _leap_years_before(year: int) -> int:
    """Leap years among years 1 … year − 1 of the proleptic Gregorian calendar."""
    y = year - 1
    return y // 4 - y // 100 + y // 400


@dataclass(frozen=True, slots=True)
class DryingClock:
    """Drying hours (see the module docstring) at a garden's latitude and longitude.

    ``latitude_deg`` is positive north, ``longitude_deg`` positive east.
    ``at(t_ms)`` is the drying hours from the Unix epoch to ``t_ms`` (UTC
    milliseconds); ``inverse`` is its inverse. Both are strictly increasing
    (at least ``night_share`` drying hours per hour). Build one per garden
    and keep it: construction computes 366 days of sun (under a millisecond).
    """

    latitude_deg: float
    longitude_deg: float
    night_share: float = NIGHT_SHARE
    _days: tuple[_Day, ...] = field(init=False, repr=False, compare=False)
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)  # drying hours before day J
    _origin: float = field(init=False, repr=False, compare=False)  # at() of the Unix epoch from 0001-01-01

    def __post_init__(self) -> None:
        if not -90.0 <= self.latitude_deg <= 90.0:
            raise ValueError(f"latitude must be within -90..90 degrees, got {self.latitude_deg!r}")
        if not -180.0 <= self.longitude_deg <= 180.0:
            raise ValueError(f"longitude must be within -180..180 degrees, got {self.longitude_deg!r}")
        if not 0.0 < self.night_share <= 1.0:
            raise ValueError(f"night share must be within (0, 1], got {self.night_share!r}")
        days, cumulative = _year(float(self.latitude_deg), float(self.longitude_deg), float(self.night_share))
        object.__setattr__(self, "_days", days)
        object.__setattr__(self, "_cumulative", cumulative)
        object.__setattr__(self, "_origin", 0.0)
        object.__setattr__(self, "_origin", self.at(0.0))

    def _year_start(self, year: int) -> float:
        """Drying hours from 0001-01-01 to 1 January of ``year`` (1–401) in the same 400-year cycle."""
        common = self._cumulative[365]
        return (year - 1) * common + _leap_years_before(year) * (self._cumulative[366] - common)

    @property
    def _cycle(self) -> float:
        """Drying hours in 400 Gregorian years."""
        return 400 * self._cumulative[365] + _CYCLE_LEAP_YEARS * (self._cumulative[366] - self._cumulative[365])

    def at(self, t_ms: float) -> float:
        """Drying hours from 1970-01-01 00:00 UTC to ``t_ms`` (negative before it)."""
        return self.at_many((t_ms,))[0]

    def at_many(self, times_ms: Iterable[float]) -> list[float]:
        """``at`` of each time; the day's part is computed once for readings of the same UTC day."""
        out = []
        current, start, sun_hours = None, 0.0, self._days[0].sun_hours
        night, sun = self.night_share, 1.0 - self.night_share
        for t_ms in times_ms:
            if not math.isfinite(t_ms):
                raise ValueError(f"time must be finite, got {t_ms!r}")
            days = math.floor(t_ms / DAY_MS)
            if days != current:
                cycles, year, day_of_year = _year_and_day(days)
                sun_hours = self._days[day_of_year - 1].sun_hours
                start = cycles * self._cycle + self._year_start(year) + self._cumulative[day_of_year - 1] - self._origin
                current = days
            hour = min((t_ms - days * DAY_MS) / HOUR_MS, 24.0)
            out.append(start + night * hour + sun * sun_hours(hour))
        return out

    def inverse(self, tau: float) -> float:
        """The time, UTC milliseconds, at which ``at`` reaches ``tau``: ``at(inverse(tau)) == tau``."""
        if not math.isfinite(tau):
            raise ValueError(f"drying hours must be finite, got {tau!r}")
        cycle = self._cycle
        rest = tau + self._origin
        cycles = math.floor(rest / cycle)
        rest -= cycles * cycle
        year = min(400, max(1, 1 + int(rest / cycle * 400)))  # nearly right: the years differ by under 0.1 %
        while year > 1 and self._year_start(year) > rest:
            year -= 1
        while year < 400 and self._year_start(year + 1) <= rest:
            year += 1
        rest -= self._year_start(year)
        leap = (year % 4 == 0 and year % 100 != 0) or year % 400 == 0
        day_of_year = min(max(1, bisect.bisect_right(self._cumulative, rest)), 366 if leap else 365)
        rest -= self._cumulative[day_of_year - 1]
        day = self._days[day_of_year - 1]
        lo, hi = 0.0, 24.0  # hours into the day; bisection to well under a millisecond
        while hi - lo > 1e-8:
            mid = 0.5 * (lo + hi)
            if _within(day, mid, self.night_share) < rest:
                lo = mid
            else:
                hi = mid
        # In floats: a drying-hour count beyond any date gives inf, not an OverflowError.
        days = float(cycles) * _CYCLE_DAYS + (date(year, 1, 1).toordinal() + day_of_year - 1 - _UNIX_ORDINAL)
        return days * DAY_MS + 0.5 * (lo + hi) * HOUR_MS

    def sun_weight(self, t_ms: float) -> float:
        """The sun's weight ``s`` at ``t_ms``: 1 at solar noon, 0 while the sun is down."""
        if not math.isfinite(t_ms):
            raise ValueError(f"time must be finite, got {t_ms!r}")
        days = math.floor(t_ms / DAY_MS)
        _, _, day_of_year = _year_and_day(days)
        return self._days[day_of_year - 1].weight((t_ms - days * DAY_MS) / HOUR_MS)

    def rate(self, t_ms: float) -> float:
        """Drying hours per hour at ``t_ms``: ``night_share + (1 − night_share)·s``."""
        return self.night_share + (1.0 - self.night_share) * self.sun_weight(t_ms)
