"""Hourly and daily rollups computed by the hub's InfluxQL, against the real InfluxDB."""

from __future__ import annotations

import pytest

from garden.influx import Influx, InfluxSettings
from garden.points import line
from garden.rollups import DAILY, HOURLY, roll_up
from garden.schema import ensure_schema
from tests.servers import Influxd

pytestmark = pytest.mark.integration

HOUR = 3_600_000
T0 = 1_795_000_000_000 - 1_795_000_000_000 % (24 * HOUR)  # a midnight, UTC


def test_rollups_keep_field_names_and_add_min_max(influxd: Influxd) -> None:
    influx = Influx(InfluxSettings(url=influxd.url, database="rollup_test"))
    ensure_schema(influx)
    tags = {"garden": "g", "bed": "b1", "node": "n1", "sensor": "sm0"}
    # Two hours of readings, every 10 minutes: 20..25 % in hour 0, 30..35 % in hour 1.
    lines = []
    for hour, base in ((0, 20.0), (1, 30.0)):
        for i in range(6):
            ts = T0 + hour * HOUR + i * 600_000
            lines.append(line("soil_moisture", tags, {"raw": 400.0 - i, "vwc_pct": base + i, "seq": i, "boot": 1}, ts))
    influx.write_lines(lines)
    assert roll_up(influx, HOURLY, T0, T0 + 2 * HOUR) == 2
    rows = influx.query('SELECT * FROM "hourly"."soil_moisture" WHERE "bed" = $bed', {"bed": "b1"})[0].records()
    assert [(r["time"], r["vwc_pct"], r["vwc_pct_min"], r["vwc_pct_max"]) for r in rows] == [
        (T0, 22.5, 20.0, 25.0),
        (T0 + HOUR, 32.5, 30.0, 35.0),
    ]
    assert "seq" not in rows[0]  # counters are not averaged
    # Again: the same points, overwritten, not added.
    roll_up(influx, HOURLY, T0, T0 + 2 * HOUR)
    assert len(influx.query('SELECT "vwc_pct" FROM "hourly"."soil_moisture"')[0].values) == 2
    assert roll_up(influx, DAILY, T0, T0 + 24 * HOUR) == 1
    daily = influx.query('SELECT "vwc_pct", "vwc_pct_max" FROM "daily"."soil_moisture"')[0].records()
    assert daily == [{"time": T0, "vwc_pct": 27.5, "vwc_pct_max": 35.0}]
    influx.close()


def test_the_hub_rolls_up_hours_that_readings_arrive_late_for(influxd: Influxd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Readings from two days ago, arriving now (out of a spool), get their hours rolled up."""
    import json
    import time

    from garden.hub import Hub, Received
    from garden.influx import InfluxSettings as Settings
    from garden.settings import HubSettings

    db = "rollup_late"
    hub = Hub(HubSettings(garden="g", hub_id="t", influx=Settings(url=influxd.url, database=db), data_dir=tmp_path))
    ensure_schema(hub.influx)
    now = time.time_ns() // 1_000_000
    two_days_ago = now - 2 * 24 * HOUR - (now % HOUR)
    body = {"node": "n1", "boot": 1, "raw": {"sm0": 400}, "values": {"sm0": {"vwc_pct": 25.0}}}
    topic = "garden/g/node/n1/telemetry"
    payloads = [json.dumps(body | {"ts": two_days_ago + i * 60_000, "seq": i}).encode() for i in range(1, 6)]
    batch = [Received(i, 0, topic, payload, now, 0) for i, payload in enumerate(payloads, 1)]
    hub._handle(batch)
    hub._rollup_next = 0.0
    hub._maybe_rollup()
    rows = hub.influx.query('SELECT "vwc_pct" FROM "hourly"."soil_moisture"')
    assert [r["time"] for r in rows[0].records()] == [two_days_ago]
    hub.spool.close()
    hub.dead.close()
    hub.influx.close()
