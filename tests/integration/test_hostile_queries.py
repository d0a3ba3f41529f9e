"""InfluxQL injection through every CLI argument that reaches a query, against the real InfluxDB.

Every value a volunteer types reaches InfluxDB only as a bound parameter
(garden/influx.py); names are checked first. Each hostile value must give a
clear refusal (exit 2, naming the argument) or an empty answer, never another
bed's rows, and must change nothing: the databases and every point stay as they were.
"""

from __future__ import annotations

import json
import time

import pytest

from garden.influx import Influx, InfluxSettings
from tests.servers import Influxd

from .test_garden_commands import DB, invoke, seed

pytestmark = pytest.mark.integration

HOSTILE = [
    "x' OR 1=1",
    "bed-1' OR ''='",
    '"; DROP DATABASE garden',
    "bed-1; DROP MEASUREMENT soil_moisture",
    "/.*/",
    "bed-1\\",
    "$garden",
    "",
]


def snapshot(influx: Influx) -> tuple[set[str], dict[str, int]]:
    databases = {row[0] for s in influx.query("SHOW DATABASES", database="") for row in s.values}
    counts = {}
    for s in influx.query("SHOW MEASUREMENTS"):
        for (m,) in s.values:
            rows = influx.query(f'SELECT count("seq") FROM "{m}"')
            counts[m] = rows[0].values[0][1] if rows else 0
    return databases, counts


def test_hostile_arguments_are_refused_or_match_nothing_and_change_nothing(
    running_influxd: Influxd, garden: str
) -> None:
    seed(running_influxd.url, garden, int(time.time() * 1000))
    influx = Influx(InfluxSettings(url=running_influxd.url, database=DB))
    before = snapshot(influx)
    assert DB in before[0] and before[1]["soil_moisture"] > 0
    base = ["--influx", running_influxd.url, "--garden", garden, "--json"]
    tried = 0
    for value in HOSTILE:
        for args in (
            ["readings", value, *base],
            ["readings", "bed-1", "--sensor", value, *base],
            ["readings", "bed-1", "--since", value, *base],
            ["status", "--influx", running_influxd.url, "--garden", value, "--json"],
        ):
            tried += 1
            result = invoke(args)
            if result.exit_code == 0:  # accepted: then it must match nothing
                body = json.loads(result.output)
                assert not body.get("readings") and not body.get("rows"), (args, result.output[:300])
            else:
                assert result.exit_code == 2, (args, result.exit_code, result.output[:300])
                assert "error" in result.output.lower(), (args, result.output[:300])
    assert snapshot(influx) == before
    influx.close()
    print(f"\n[hostile queries] {tried} hostile CLI arguments: refused or matched nothing; nothing changed")
