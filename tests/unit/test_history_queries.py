"""Which resolution ``garden readings`` reads for which range (garden/readings.py)."""

from __future__ import annotations

import pytest

from garden.readings import (
    DAILY_MEANS,
    HOURLY_MAX_S,
    HOURLY_MEANS,
    RAW,
    RAW_MAX_S,
    RESOLUTIONS,
    choose_resolution,
    parse_duration,
)
from garden.rollups import DAILY, HOURLY
from garden.schema import RETENTION


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("90s", RAW),
        ("24h", RAW),
        ("2d", RAW),  # up to two days: every reading
        ("49h", HOURLY_MEANS),
        ("7d", HOURLY_MEANS),
        ("8w", HOURLY_MEANS),
        ("60d", HOURLY_MEANS),  # up to 60 days: the hourly rollups
        ("61d", DAILY_MEANS),
        ("365d", DAILY_MEANS),
        ("260w", DAILY_MEANS),  # beyond: the daily rollups
    ],
)
def test_the_range_picks_the_resolution(since: str, expected: object) -> None:
    assert choose_resolution(parse_duration(since)) is expected


def test_thresholds_are_inclusive_at_two_and_sixty_days() -> None:
    assert choose_resolution(RAW_MAX_S) is RAW and choose_resolution(RAW_MAX_S + 1) is HOURLY_MEANS
    assert choose_resolution(HOURLY_MAX_S) is HOURLY_MEANS and choose_resolution(HOURLY_MAX_S + 1) is DAILY_MEANS


def test_rolled_up_resolutions_read_the_retention_policies_the_rollups_write() -> None:
    policies = {name for name, _duration, _default in RETENTION}
    assert (HOURLY_MEANS.name, HOURLY_MEANS.period_ms) == (HOURLY.name, HOURLY.ms)
    assert (DAILY_MEANS.name, DAILY_MEANS.period_ms) == (DAILY.name, DAILY.ms)
    assert {HOURLY_MEANS.name, DAILY_MEANS.name} <= policies
    assert not RAW.rolled_up and HOURLY_MEANS.rolled_up and DAILY_MEANS.rolled_up
    assert set(RESOLUTIONS) == {"raw", "hourly", "daily"}


def test_the_hourly_rollups_outlive_the_longest_hourly_range() -> None:
    """The hourly policy must still hold what the hourly resolution asks for, and raw the raw one."""
    days = {name: duration for name, duration, _default in RETENTION}
    assert int(days["hourly"].removesuffix("d")) * 86_400 >= HOURLY_MAX_S
    assert int(days["raw"].removesuffix("d")) * 86_400 >= RAW_MAX_S
