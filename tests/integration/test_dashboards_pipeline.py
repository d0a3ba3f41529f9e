"""Every dashboard query against data that came through the whole real pipeline.

Simulated nodes on ptys -> ``garden bridge run`` -> Mosquitto -> ``garden hub run``
-> InfluxDB 1.6, with node configs (beds, tank calibration) published retained
and a watering event published on the commons' journal, as the CLI does, and
each bed's need and a few alert changes published as the hub's watch publishes
them (its own evaluation needs hours of readings to forecast anything). Grafana
cannot run here, so each panel, annotation and variable query is expanded as
Grafana does (tests/dashboards/grafana_queries.py) and run against the real
InfluxDB. tests/dashboards checks the answers' values on three days of data;
this test proves the live pipeline writes what the dashboards read.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_bridge.simulator.node import Faults
from garden.influx import Influx
from garden.schema import ensure_schema
from tests.dashboards import grafana_queries as gq
from tests.dashboards.test_dashboards import datasource_min_interval, sensor_dashboards, walk_panels

from .conftest import COUNTS, Broker, wait_for
from .test_bridge_pipeline import SimThread, start_bridge
from .test_hub_pipeline import HubProcess, stored_keys

pytestmark = pytest.mark.integration

# Panels that compare one interval with the next (the datasource's shortest is
# 5 minutes), or hours with hours, have nothing to say on two minutes of data.
NEEDS_HISTORY = {
    "Days of water left",
    "Water used per day",
    "Readings lost on the line",
    "Rejected lines over time",
    "Rejected lines by port and reason",
}


def publish(broker: Broker, items: list[tuple[str, dict[str, object], bool]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for topic, body, retain in items:
        client.publish(topic, json.dumps(body), qos=1, retain=retain).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_dashboards_answer_from_the_live_pipeline(
    running_broker: Broker,
    garden: str,
    hub: HubProcess,
    database: Influx,
    tmp_path: Path,
    bridge_factory,  # type: ignore[no-untyped-def]
) -> None:
    # As a garden sets up its InfluxDB: `garden hub init` (retention policies, and the
    # rp_choice points the dashboards' $rp variable reads from "daily").
    ensure_schema(database)
    start_ms = time.time_ns() // 1_000_000
    tank = {"tk0": {"depth_cm": 120, "litres_per_cm": 10}}
    publish(
        running_broker,
        [
            (f"garden/{garden}/node/n1/config", {"bed": "bed-a", "calibration": tank}, True),
            (f"garden/{garden}/node/n2/config", {"bed": "bed-b", "calibration": tank}, True),
            (f"garden/{garden}/node/n3/config", {"bed": "bed-c"}, True),
        ],
    )
    sim = SimThread(tmp_path, nodes=3, count=100, rate=20.0, faults=Faults(bad_crc=0.05))
    start_bridge(sim, running_broker, tmp_path, bridge_factory, garden)
    sim.start()
    sim.join(60)
    for bed in ("bed-a", "bed-b"):
        for kind in ("watering", "harvest"):
            body = {"bed": bed, "who": "test", "litres": 10} if kind == "watering" else {"bed": bed, "kg": 1.5}
            publish(running_broker, [(f"garden/{garden}/event/{kind}", body, False)])
    # As the watch publishes them: each bed's need (retained), and alert changes, one with a bed.
    now_ms = time.time_ns() // 1_000_000
    lines = {"vwc_pct": 19.0, "trigger_vwc": 18.0, "critical_vwc": 15.0, "fc_vwc": 25.0, "wp_vwc": 12.0}
    watch: list[tuple[str, dict[str, object], bool]] = []
    for bed, state, hours in (("bed-a", "soon", 9.5), ("bed-b", "ok", 40.0), ("bed-c", "needs_water", 0.0)):
        forecast = {"hours_left": hours, "hours_low": hours * 0.7, "hours_high": hours * 1.5}
        need = {"ts": now_ms, "bed": bed, "state": state, **lines, **forecast}
        watch.append((f"garden/{garden}/bed/{bed}/need", need, True))
    for kind, subject, bed, text in (
        ("water", "bed-a", "bed-a", "Bed a: 17% VWC, trigger 18%. Water today."),
        ("gaps", "n3", None, "Node n3: lost 4 readings in the last hour"),
    ):
        change = {"ts": now_ms, "transition": "raised", "severity": "warning", "text": text, "bed": bed}
        watch.append((f"garden/{garden}/alert/{kind}/{subject}", change, True))
    publish(running_broker, watch)
    produced = sim.keys()
    wait_for(lambda: len(stored_keys(database)) >= len(produced), 30, "every reading in InfluxDB")
    wait_for(lambda: len(database.query('SELECT "level" FROM "water_need" GROUP BY "bed"')) >= 3, 30, "the needs")
    wait_for(lambda: len(database.query('SELECT "text" FROM "alert" GROUP BY "kind"')) >= 2, 30, "the alerts")
    wait_for(lambda: database.query('SELECT count("open") FROM "bridge_port"'), 30, "bridge status points")
    wait_for(lambda: len(database.query('SELECT * FROM "event"')) > 0, 30, "the events")
    sim.stop()

    rng = gq.TimeRange(start_ms - 60_000, time.time_ns() // 1_000_000 + 60_000)
    min_interval = datasource_min_interval()
    answered, empty_by_design, missing = 0, [], []
    for name, dashboard in sensor_dashboards().items():  # the commons board: tests/dashboards/test_commons_dashboard.py
        variables: dict[str, gq.Variable] = {}
        for model in dashboard["templating"]["list"]:  # in order: the beds and nodes of the garden chosen
            ctx = gq.Context(rng, gq.interval_to_ms("5m"), variables)
            options = gq.variable_options(model, database.query(gq.expand_query(model["query"], ctx)))
            assert options, f"{name}: variable {model['name']} has no values"
            if model["name"] == "garden":
                assert options == [garden], f"{name}: the hub's garden is the one on offer"
            pick = [options[0]] if model.get("multi") else options[0]
            variables[model["name"]] = gq.Variable.from_model(model, options, pick)
        if "bed" in variables:
            assert {"bed-a", "bed-b", "bed-c"} <= set(variables["bed"].options)
        for panel in walk_panels(dashboard):
            for target in panel.get("targets", []):
                ctx = gq.Context(rng, gq.panel_interval_ms(panel, rng, min_interval), variables)
                query = gq.expand_query(target["query"], ctx)
                assert not re.search(r"\$\w", query), query
                series = database.query(query)
                if panel["title"] in NEEDS_HISTORY:
                    empty_by_design.append(panel["title"])
                    continue
                if not series:
                    missing.append(f"{name} / {panel['title']}: {query}")
                answered += 1
        for model in dashboard["annotations"]["list"]:
            if model.get("builtIn"):
                continue
            ctx = gq.Context(rng, gq.interval_to_ms("5m"), variables)
            series = database.query(gq.expand_annotation(model["query"], ctx))
            assert series, f"{name} / annotation {model['name']}: no events from the pipeline"
            answered += 1
    assert not missing, "no data from the pipeline for:\n" + "\n".join(missing)
    COUNTS.append(f"[dashboards-live] {answered} panel and annotation queries answered from the live pipeline; "
                  f"not checked on minutes of data: {sorted(set(empty_by_design))}")  # fmt: skip
    assert answered >= 10
