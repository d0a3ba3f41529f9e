"""Quiet hours: a daily window of local wall-clock time when nobody wants a ping.

Pure: the caller passes the instant and the time zone. The window is read on
the local clock, so on a DST change day the night is an hour shorter or longer
in real time, as the person living through it sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_WINDOW_RE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_FORMAT_HINT = 'give two 24-hour times as "HH:MM-HH:MM", like "22:00-07:00", or "off"'
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """From ``start`` (inclusive) to ``end`` (exclusive), local time; spans midnight when start > end."""

    start: time
    end: time

    def __post_init__(self) -> None:
        for which, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is not None:
                raise ValueError(f"quiet hours {which} {value} must be a local time without a zone")
        if self.start == self.end:
            # Empty or all day? Neither reading is safe to guess.
            raise ValueError(f"quiet hours start and end are both {self.start:%H:%M}; {_FORMAT_HINT}")

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """``"22:00-07:00"`` to a window. ValueError says what is wrong with the text."""
        match = _WINDOW_RE.fullmatch(text.strip())
        if not match:
            raise ValueError(f"quiet hours {text!r}: {_FORMAT_HINT}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        for hour, minute in ((h1, m1), (h2, m2)):
            if hour > 23 or minute > 59:
                raise ValueError(f"quiet hours {text!r}: {hour:02d}:{minute:02d} is not a time of day (00:00 to 23:59)")
        if (h1, m1) == (h2, m2):
            raise ValueError(f"quiet hours {text!r}: start and end are both {h1:02d}:{m1:02d}; {_FORMAT_HINT}")
        return cls(time(h1, m1), time(h2, m2))

    def contains(self, wall: time) -> bool:
        """Whether a local wall-clock time falls inside the window."""
        if self.start < self.end:
            return self.start <= wall < self.end
        return wall >= self.start or wall < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_quiet_hours(text: str) -> QuietHours | None:
    """Like :meth:`QuietHours.parse`, but ``""`` and ``"off"`` mean no quiet hours."""
    if text.strip().lower() in ("", "off"):
        return None
    return QuietHours.parse(text)


def release_at(quiet: QuietHours | None, now_ms: int, tz: str) -> int | None:
    """When quiet hours in force at ``now_ms`` end, in epoch ms; None when they are not in force.

    The end is the first instant after ``now_ms`` at which the local clock in ``tz``
    shows the window's end or later. When that wall time is skipped by a DST jump,
    that is the jump itself; when it happens twice, the first one still ahead.
    A clock that goes back to before the window's start (01:59 EDT to 01:00 EST for
    a window from 01:30) leaves the window only on paper: the spell runs on to its end
    rather than waking someone for half an hour.
    """
    if quiet is None:
        return None
    zone = ZoneInfo(tz)
    now_utc = _EPOCH + timedelta(milliseconds=now_ms)
    local = now_utc.astimezone(zone)
    if not quiet.contains(local.time()):
        return None
    end_day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day += timedelta(days=1)
    end = _first_instant_showing(end_day, quiet.end, zone, after=now_utc)
    end_ms = (end - _EPOCH) // timedelta(milliseconds=1)
    if quiet.contains(end.astimezone(zone).time()):
        # A jump skipped all the free time (02:00-02:15 for a 02:15-02:00 window on a day that skips
        # 02:00-03:00): still quiet until the window's next end.
        return release_at(quiet, end_ms, tz)
    return end_ms


def _first_instant_showing(day: date, wall: time, zone: ZoneInfo, *, after: datetime) -> datetime:
    """The first UTC instant later than ``after`` at which the clock in ``zone`` shows ``day wall`` or later."""
    naive = datetime.combine(day, wall)
    # fold picks which offset reads a wall time that happens twice (or never); try both.
    candidates = sorted(naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    for instant in candidates:
        shown = instant.astimezone(zone).replace(tzinfo=None)
        if shown == naive and instant > after:
            return instant
    # Skipped by a spring-forward jump: the clock never shows ``wall``; it passes it at the jump,
    # which lies between the two readings. Bisect to the second (zone offsets are whole seconds).
    early, late = candidates
    lo, hi = int(early.timestamp()), int(late.timestamp()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
