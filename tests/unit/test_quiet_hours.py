"""Quiet hours: parsing, and when they end, on ordinary days and on DST change days."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from garden.notify.quiet_hours import QuietHours, parse_quiet_hours, release_at

NIGHT = QuietHours(time(22, 0), time(7, 0))
BERLIN = "Europe/Berlin"


def ms(text: str, tz: str = "UTC") -> int:
    """``"2024-03-31 01:30"`` on the local clock of ``tz`` (first occurrence) to epoch ms."""
    local = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))
    return int(local.timestamp()) * 1000


def utc(epoch_ms: int | None) -> str:
    assert epoch_ms is not None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- parsing ------------------------------------------------------------------------------


def test_parse_a_window_that_spans_midnight() -> None:
    assert QuietHours.parse("22:00-07:00") == NIGHT
    assert QuietHours.parse(" 22:00 - 07:00 ") == NIGHT
    assert str(QuietHours.parse("7:05-9:30")) == "07:05-09:30"


@pytest.mark.parametrize("text", ["", "off", "OFF", "  off  "])
def test_empty_or_off_means_no_quiet_hours(text: str) -> None:
    assert parse_quiet_hours(text) is None


def test_parse_quiet_hours_parses_a_window() -> None:
    assert parse_quiet_hours("22:00-07:00") == NIGHT


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("22-07", "HH:MM-HH:MM"),
        ("22:00", "HH:MM-HH:MM"),
        ("22:00-07:00-08:00", "HH:MM-HH:MM"),
        ("ten to seven", "HH:MM-HH:MM"),
        ("22.00-07.00", "HH:MM-HH:MM"),
        ("25:00-07:00", "25:00 is not a time of day"),
        ("22:00-07:60", "07:60 is not a time of day"),
        ("24:00-07:00", "24:00 is not a time of day"),
        ("22:00-22:00", "start and end are both 22:00"),
        ("on", "HH:MM-HH:MM"),
    ],
)
def test_bad_text_is_refused_with_a_clear_message(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_quiet_hours(text)
    assert repr(text) in str(caught.value)


# --- when quiet hours end -----------------------------------------------------------------


def test_no_quiet_hours_never_hold() -> None:
    assert release_at(None, ms("2024-06-01 03:00"), "UTC") is None


@pytest.mark.parametrize(
    ("now", "release"),
    [
        ("2024-06-01 21:59", None),
        ("2024-06-01 22:00", "2024-06-02 07:00:00"),  # start is inside
        ("2024-06-01 23:30", "2024-06-02 07:00:00"),  # before midnight: ends tomorrow
        ("2024-06-02 00:00", "2024-06-02 07:00:00"),
        ("2024-06-02 03:00", "2024-06-02 07:00:00"),  # after midnight: ends today
        ("2024-06-02 06:59", "2024-06-02 07:00:00"),
        ("2024-06-02 07:00", None),  # end is outside
        ("2024-06-02 12:00", None),
        ("2024-12-31 23:00", "2025-01-01 07:00:00"),  # across a year end
    ],
)
def test_a_window_across_midnight(now: str, release: str | None) -> None:
    got = release_at(NIGHT, ms(now), "UTC")
    assert (None if got is None else utc(got)) == release


@pytest.mark.parametrize(
    ("now", "release"),
    [
        ("2024-06-01 12:59", None),
        ("2024-06-01 13:00", "2024-06-01 15:00:00"),
        ("2024-06-01 14:30", "2024-06-01 15:00:00"),
        ("2024-06-01 15:00", None),
    ],
)
def test_a_window_within_one_day(now: str, release: str | None) -> None:
    got = release_at(QuietHours(time(13, 0), time(15, 0)), ms(now), "UTC")
    assert (None if got is None else utc(got)) == release


def test_release_keeps_the_milliseconds_exact() -> None:
    now = ms("2024-06-01 23:30") + 123
    assert release_at(NIGHT, now, "UTC") == ms("2024-06-02 07:00")


def test_the_window_is_read_on_the_recipients_clock() -> None:
    # 21:30 UTC in January is 22:30 in Berlin (CET, UTC+1): quiet until 07:00 CET = 06:00 UTC.
    assert utc(release_at(NIGHT, ms("2024-01-15 21:30"), BERLIN)) == "2024-01-16 06:00:00"
    assert release_at(NIGHT, ms("2024-01-15 21:30"), "UTC") is None
    # 20:30 UTC is 21:30 in Berlin: not yet quiet there.
    assert release_at(NIGHT, ms("2024-01-15 20:30"), BERLIN) is None


def test_spring_forward_night_is_an_hour_shorter() -> None:
    # 2024-03-31: Berlin's clocks jump from 02:00 CET to 03:00 CEST (01:00 UTC).
    now = ms("2024-03-30 23:00", BERLIN)  # 22:00 UTC
    assert utc(release_at(NIGHT, now, BERLIN)) == "2024-03-31 05:00:00"  # 07:00 CEST
    assert utc(release_at(NIGHT, ms("2024-03-31 04:00", BERLIN), BERLIN)) == "2024-03-31 05:00:00"


def test_fall_back_night_is_an_hour_longer() -> None:
    # 2024-10-27: Berlin's clocks go back from 03:00 CEST to 02:00 CET (01:00 UTC).
    now = ms("2024-10-26 23:00", BERLIN)  # 21:00 UTC
    assert utc(release_at(NIGHT, now, BERLIN)) == "2024-10-27 06:00:00"  # 07:00 CET


def test_an_end_skipped_by_the_jump_releases_at_the_jump() -> None:
    # 02:30 never happens on 2024-03-31 in Berlin: the clock passes it when it jumps to 03:00 CEST.
    early_night = QuietHours(time(1, 0), time(2, 30))
    now = ms("2024-03-31 01:30", BERLIN)  # 00:30 UTC
    assert utc(release_at(early_night, now, BERLIN)) == "2024-03-31 01:00:00"
    # After the jump the local clock shows 03:00 or later: not quiet.
    assert release_at(early_night, ms("2024-03-31 01:00"), BERLIN) is None


def test_a_clock_going_back_before_the_start_does_not_end_the_spell() -> None:
    # 2024-11-03: New York goes from 01:59:59 EDT back to 01:00 EST (06:00 UTC).
    from_half_past_one = QuietHours(time(1, 30), time(6, 0))
    now = ms("2024-11-03 05:45")  # 01:45 EDT
    assert utc(release_at(from_half_past_one, now, "America/New_York")) == "2024-11-03 11:00:00"  # 06:00 EST
    # Between 01:00 and 01:30 EST the clock is outside the window: a new notice then is not held.
    assert release_at(from_half_past_one, ms("2024-11-03 06:10"), "America/New_York") is None


def test_an_end_that_happens_twice_releases_at_the_next_one() -> None:
    # 02:30 happens twice on 2024-10-27 in Berlin: 00:30 UTC (CEST) and 01:30 UTC (CET).
    early_night = QuietHours(time(1, 0), time(2, 30))
    first_pass = ms("2024-10-26 23:30")  # 01:30 CEST
    assert utc(release_at(early_night, first_pass, BERLIN)) == "2024-10-27 00:30:00"
    # Once the clock goes back to 02:00, it is quiet again until 02:30 comes round once more.
    second_pass = ms("2024-10-27 01:10")  # 02:10 CET
    assert utc(release_at(early_night, second_pass, BERLIN)) == "2024-10-27 01:30:00"


# --- invariants ---------------------------------------------------------------------------

ZONES = ["UTC", BERLIN, "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"]
times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
windows = st.tuples(times, times).filter(lambda pair: pair[0] != pair[1]).map(lambda pair: QuietHours(*pair))
instants = st.integers(ms("2023-01-01 00:00"), ms("2026-12-31 00:00"))


def check_release(quiet: QuietHours, now_ms: int, tz: str, fraction: float) -> None:
    """The release is when the local clock first leaves the window; every moment before it agrees."""
    release = release_at(quiet, now_ms, tz)
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz)).time()
    assert (release is not None) == quiet.contains(local)
    if release is None:
        return
    # At most a day and a bit, or two when a clock change skips all the free time in between.
    assert now_ms < release <= now_ms + 48 * 3_600_000
    assert release_at(quiet, release, tz) is None
    between = now_ms + int((release - now_ms - 1) * fraction)
    if offset(now_ms, tz) <= offset(release, tz):
        assert release_at(quiet, between, tz) == release
        assert release_at(quiet, release - 1, tz) == release
    else:
        # A clock going back can step out of the window on paper: the spell still ends at the release.
        assert release_at(quiet, between, tz) in (None, release)


def offset(epoch_ms: int, tz: str) -> timedelta:
    utc_offset = datetime.fromtimestamp(epoch_ms / 1000, ZoneInfo(tz)).utcoffset()
    assert utc_offset is not None
    return utc_offset


@given(quiet=windows, now_ms=instants, tz=st.sampled_from(ZONES), fraction=st.floats(0.0, 1.0))
def test_release_is_when_the_local_clock_first_leaves_the_window(
    quiet: QuietHours, now_ms: int, tz: str, fraction: float
) -> None:
    check_release(quiet, now_ms, tz, fraction)


def _transitions(year: int) -> list[tuple[str, int]]:
    """(zone, epoch ms) of each UTC-offset change in ``year``, found hour by hour."""
    found = []
    start = ms(f"{year}-01-01 00:00")
    for tz in ZONES:
        zone = ZoneInfo(tz)
        before = None
        for hour in range(366 * 24):
            instant = start + hour * 3_600_000
            offset = datetime.fromtimestamp(instant / 1000, zone).utcoffset()
            if before is not None and offset != before:
                found.append((tz, instant))
            before = offset
    return found


TRANSITIONS = _transitions(2024)


def test_the_zones_do_change_clocks() -> None:
    assert {tz for tz, _ in TRANSITIONS} == {BERLIN, "America/New_York", "Australia/Lord_Howe", "America/St_Johns"}


@given(
    quiet=windows,
    change=st.sampled_from(TRANSITIONS),
    offset_ms=st.integers(-26 * 3_600_000, 26 * 3_600_000),
    fraction=st.floats(0.0, 1.0),
)
def test_release_around_clock_changes(
    quiet: QuietHours, change: tuple[str, int], offset_ms: int, fraction: float
) -> None:
    tz, instant = change
    check_release(quiet, instant + offset_ms, tz, fraction)
