"""``garden readings`` over long ranges reads the rollups, against the real InfluxDB (1.6).

A bed with one node (moisture and tank) every 30 minutes for three days and today
so far, rolled up by the hub's own ``garden.rollups.roll_up`` (the last three
hours not yet, as on a hub that is behind). Then the raw readings before today
are overwritten with other values: a row that shows the first values can only
have come from a rollup. ``--since 365d`` must show daily means, ``--since 7d``
hourly means, each equal to the mean of the readings first written (the hours
not rolled up yet computed from the raw readings), and ``--resolution raw`` the
readings as they are now.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from garden.cli.app import app
from garden.influx import Influx, InfluxSettings
from garden.points import line
from garden.rollups import DAILY, HOURLY, roll_up
from garden.schema import ensure_schema
from tests.servers import Influxd

pytestmark = pytest.mark.integration

HOUR = 3_600_000
DAY = 24 * HOUR
STEP = 30 * 60_000
runner = CliRunner()


def vwc(t: int) -> float:
    return round(20.0 + (t // STEP) % 7 + 0.25 * ((t // HOUR) % 3), 2)


def litres(t: int) -> float:
    return round(500.0 - (t // STEP) % 11, 1)


@pytest.fixture
def history(running_influxd: Influxd, garden: str) -> Iterator[tuple[Influx, str, int, int]]:
    now = int(time.time() * 1000)
    midnight = now - now % DAY
    start = midnight - 3 * DAY
    influx = Influx(InfluxSettings(url=running_influxd.url, database=f"h{garden}"))
    ensure_schema(influx)
    times = list(range(start, now, STEP))

    def lines(offset: float, before: int) -> list[str]:
        out = []
        for t in times:
            if t >= before:
                break
            tags = {"garden": garden, "bed": "bed-1", "node": "n1"}
            v, lit = vwc(t) + offset, litres(t) + offset
            out.append(line("soil_moisture", tags | {"sensor": "sm0"}, {"raw": 900 - v, "vwc_pct": v, "seq": 1}, t))
            out.append(line("tank", tags | {"sensor": "tk0"}, {"raw": lit / 10, "litres": lit, "seq": 1}, t))
        return out

    influx.write_lines(lines(0.0, now))
    quiet = {"garden": garden, "bed": "bed-9", "node": "q1", "sensor": "sm0"}  # silent for two days
    influx.write_lines(
        [line("soil_moisture", quiet, {"raw": 1.0, "vwc_pct": vwc(t)}, t) for t in times if t < start + DAY]
    )
    other = {"garden": garden + "x", "bed": "bed-1", "node": "m1", "sensor": "sm0"}
    influx.write_lines([line("soil_moisture", other, {"raw": 1.0, "vwc_pct": 99.0}, t) for t in times])
    roll_up(influx, DAILY, start, midnight)
    roll_up(influx, HOURLY, start, now - 3 * HOUR)  # the hub is behind: the last hours are not rolled up
    influx.write_lines(lines(100.0, midnight))  # raw before today now says otherwise
    yield influx, garden, start, now
    influx.execute(f'DROP DATABASE "h{garden}"')
    influx.close()


def readings(influx: Influx, garden: str, *args: str) -> Result:
    env = {"GARDEN_CONFIG": "/dev/null", "GARDEN_INFLUX_DATABASE": influx.settings.database, "COLUMNS": "200"}
    return runner.invoke(app, ["readings", "bed-1", "--influx", influx.settings.url, "--garden", garden, *args],
                         env=env)  # fmt: skip


def means(start: int, end: int, period: int, value: object) -> dict[int, float]:
    groups: dict[int, list[float]] = defaultdict(list)
    for t in range(start, end, STEP):
        groups[t - t % period].append(value(t))  # type: ignore[operator]
    return {k: sum(v) / len(v) for k, v in groups.items()}


def test_a_year_of_readings_is_daily_means_from_the_rollups(history: tuple[Influx, str, int, int]) -> None:
    influx, garden, start, now = history
    result = readings(influx, garden, "--since", "365d", "--limit", "10000", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["resolution"] == "daily"
    rows = body["readings"]
    assert {(r["bed"], r["node"]) for r in rows} == {("bed-1", "n1")}  # not the other garden's bed-1
    assert [r["time_ms"] for r in rows] == sorted((r["time_ms"] for r in rows), reverse=True)
    expected = {"sm0": means(start, now, DAY, vwc), "tk0": means(start, now, DAY, litres)}
    got: dict[str, dict[int, float]] = {"sm0": {}, "tk0": {}}
    for r in rows:
        got[r["sensor"]][r["time_ms"]] = r["value"]
        assert r["seq"] is None and r["error"] is None
    for sensor in ("sm0", "tk0"):
        assert got[sensor].keys() == expected[sensor].keys()  # three rolled-up days and today from raw
        for t, value in expected[sensor].items():
            assert math.isclose(got[sensor][t], value, rel_tol=1e-9), (sensor, t)
    newest_day = rows[0]
    assert newest_day["fields"]["vwc_pct_min"] <= newest_day["fields"]["vwc_pct"] <= newest_day["fields"]["vwc_pct_max"]

    text = readings(influx, garden, "--since", "365d")
    assert text.exit_code == 0, text.output
    assert "daily means" in text.output and "daily rollups" in text.output


def test_a_week_is_hourly_means_and_raw_is_every_reading(history: tuple[Influx, str, int, int]) -> None:
    influx, garden, start, now = history
    result = readings(influx, garden, "--since", "7d", "--sensor", "sm0", "--limit", "10000", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["resolution"] == "hourly"
    got = {r["time_ms"]: r["value"] for r in body["readings"]}
    expected = means(start, now, HOUR, vwc)
    assert got.keys() == expected.keys()  # the last hours, not rolled up yet, from raw
    for t, value in expected.items():
        assert math.isclose(got[t], value, rel_tol=1e-9), t

    raw = readings(influx, garden, "--since", "7d", "--sensor", "sm0", "--resolution", "raw", "--limit", "10000",
                   "--json")  # fmt: skip
    rows = json.loads(raw.output)["readings"]
    midnight = now - now % DAY
    assert json.loads(raw.output)["resolution"] == "raw"
    assert len(rows) == len(range(start, now, STEP))
    assert all(r["value"] == vwc(r["time_ms"]) + (100.0 if r["time_ms"] < midnight else 0.0) for r in rows)
    assert readings(influx, garden, "--resolution", "weekly").exit_code == 2


# ------------------------------------------------------------------ status


def test_status_finds_silent_nodes_through_the_hourly_rollups(running_influxd: Influxd, garden: str) -> None:
    """``garden status`` reads only the last hours of raw readings, and finds the nodes silent for
    longer through the hourly rollups: the same rows as reading the whole 30 days of raw."""
    from garden.garden_status import RECENT_MS, collect_status

    now = int(time.time() * 1000)
    influx = Influx(InfluxSettings(url=running_influxd.url, database=f"s{garden}"))
    ensure_schema(influx)
    five = 300_000
    b_last = now - RECENT_MS - 24 * HOUR - 7 * five  # bed-2 went quiet a day and more ago

    def lines(g: str) -> list[str]:
        out = []

        def node(name: str, bed: str | None, start: int, end: int, vwc: float, litres: float | None) -> None:
            for i, t in enumerate(range(end, start - 1, -five)):  # back from the newest
                tags = {"garden": g, "bed": bed, "node": name}
                v = vwc + (end - t) / DAY  # drying: the newest is ``vwc``
                out.append(line("soil_moisture", tags | {"sensor": "sm0"}, {"raw": 900 - v, "vwc_pct": v, "seq": i}, t))
                out.append(
                    line("soil_temperature", tags | {"sensor": "st0"}, {"raw": 14.0, "temp_c": 14.0, "seq": i}, t)
                )
                if litres is not None:
                    out.append(line("tank", tags | {"sensor": "tk0"}, {"raw": 1.0, "litres": litres, "seq": i}, t))

        node("a1", "bed-1", now - 26 * HOUR, now - 60_000, 25.0, 600.0)
        node("b1", "bed-2", now - 3 * DAY, b_last, 11.0, 300.0)
        node("c1", "bed-3", now - 45 * DAY, now - 40 * DAY, 30.0, None)  # silent for 40 days: not shown
        node("d1", None, now - 10 * DAY, now - 9 * DAY, 8.0, None)
        return out

    influx.write_lines(lines(garden))
    roll_up(influx, HOURLY, now - 46 * DAY, now)
    influx.write_lines(lines(garden + "n"))  # the same garden, never rolled up: the 30 days of raw are read
    with_rollups = collect_status(influx, garden, now).to_json()
    without = collect_status(influx, garden + "n", now).to_json()
    influx.execute(f'DROP DATABASE "s{garden}"')
    influx.close()
    rows = {r["bed"] or r["nodes"][0]: r for r in with_rollups["rows"]}
    assert list(rows) == ["bed-1", "bed-2", "d1"]
    assert rows["bed-2"]["last_seen_ms"] == b_last and rows["bed-2"]["vwc_pct"] == 11.0
    assert rows["bed-2"]["tank_litres"] == 300.0 and rows["bed-2"]["soil_temp_c"] == 14.0
    assert rows["d1"]["vwc_pct"] == 8.0 and rows["d1"]["need"] == "critical"
    assert rows["bed-1"]["vwc_pct"] == 25.0 and rows["bed-1"]["last_seen_ms"] == now - 60_000
    assert with_rollups["rows"] == without["rows"]


def test_the_newest_rows_of_a_bed_gone_quiet_are_found_further_back(history: tuple[Influx, str, int, int]) -> None:
    """With a small --limit the rollups are first asked only for the last few periods; a bed whose
    readings stopped two days ago has none there, and its newest rows come from further back."""
    influx, garden, start, _now = history
    body = json.loads(readings(influx, garden, "--since", "7d", "--limit", "4", "--json").output)
    assert body["resolution"] == "hourly" and [r["node"] for r in body["readings"]] == ["n1"] * 4
    result = runner.invoke(
        app,
        ["readings", "bed-9", "--since", "7d", "--limit", "4", "--json", "--influx", influx.settings.url,
         "--garden", garden],
        env={"GARDEN_CONFIG": "/dev/null", "GARDEN_INFLUX_DATABASE": influx.settings.database},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = [(r["time_ms"], r["value"]) for r in json.loads(result.output)["readings"]]
    expected = sorted(means(start, start + DAY, HOUR, vwc).items(), reverse=True)[:4]
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert all(math.isclose(v, e, rel_tol=1e-9) for (_, v), (_, e) in zip(got, expected, strict=True))
