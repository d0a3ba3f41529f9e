"""Horizontal ingest (case 9): two hub workers share one telemetry stream through an
MQTT v5 shared subscription, and one of them is SIGKILLed mid-stream.

``[hub] shared_group = "ingest"`` makes each worker subscribe to telemetry as
``$share/ingest/garden/<g>/node/+/telemetry``: the broker hands each message to
one of them. The commons and the watch stay single-writer: worker w1 runs them,
w2 runs with ``--no-commons --no-watch``. Each worker keeps its own persistent
session (its own client id), so what the killed worker had taken but not
acknowledged stays in its session at the broker, and comes back to it when its
supervisor (systemd, compose) starts it again. Real Mosquitto with our production
queue limits, real InfluxDB, real ``garden hub run`` processes.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from firmware_bridge.mqtt_link import parse_broker_url, read_retained
from garden.influx import Influx
from tests.integration.conftest import Broker, HubProcess, stored_keys, wait_for
from tests.integration.test_hub_pipeline import Publisher
from tests.servers import Influxd

from .test_hub_faults import compare, drained, rounded

pytestmark = pytest.mark.faults

SHARED = '[hub]\nshared_group = "ingest"\nstatus_interval_s = 1\n[watch]\nevaluate_every_s = 2\n'


def statuses(broker: Broker, garden: str) -> dict[str, dict[str, object]]:
    found = read_retained(parse_broker_url(broker.url), (f"garden/{garden}/hub/+/status",), wait_s=0.3)
    return {topic.split("/")[3]: json.loads(body) for topic, body in found.items()}


def received(status: dict[str, object]) -> int:
    return int(status["counters"].get("received", 0))  # type: ignore[attr-defined]


def test_two_shared_workers_one_sigkilled(
    broker: Broker, running_influxd: Influxd, garden: str, database: Influx, tmp_path: Path
) -> None:
    """Case 9: 2 workers share the stream at 500 msg/s; w1 is SIGKILLed after 8 s and
    started again 10 s later. Every reading is stored once, and both did real work."""
    workers: dict[str, HubProcess] = {}
    for name, extra in (("w1", []), ("w2", ["--no-commons", "--no-watch"])):
        workdir = tmp_path / name
        workdir.mkdir()
        hub = HubProcess(broker, running_influxd, workdir, garden, garden, config=SHARED)
        hub.env["GARDEN_HUB_ID"] = name
        hub.cmd += extra
        workers[name] = hub
        hub.start()
    publisher = Publisher(broker, garden)
    try:
        wait_for(
            lambda: (
                {k: v.get("state") for k, v in statuses(broker, garden).items()} == {"w1": "online", "w2": "online"}
            ),
            30,
            "both workers online",
        )
        done = threading.Event()

        def feed() -> None:
            publisher.run(rate=500, seconds=30)
            done.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(8)
        before_kill = statuses(broker, garden)
        workers["w1"].stop(signal.SIGKILL)
        killed_at = len(publisher.sent)
        w2_at_kill = received(statuses(broker, garden)["w2"])
        time.sleep(10)
        w2_while_down = received(statuses(broker, garden)["w2"]) - w2_at_kill
        workers["w1"].start()
        assert done.wait(60), "the publisher did not finish"
    finally:
        publisher.close()
    drain_s = drained(database, publisher.sent, 120)
    time.sleep(2)
    after = statuses(broker, garden)
    lost, dup = compare(
        "9 shared-ingest-2-workers-w1-sigkilled",
        publisher.sent,
        stored_keys(database, settled=True),
        rate=500,
        sent_before_kill=killed_at,
        w1_before_kill=received(before_kill["w1"]),
        w2_before_kill=received(before_kill["w2"]),
        w2_while_w1_down=w2_while_down,
        w1_after_restart=received(after["w1"]),
        drained_after_s=rounded(drain_s),
    )
    try:
        assert (lost, dup) == (0, 0)
        # Both took a real share of the stream before the kill (round robin: about half each).
        first, second = received(before_kill["w1"]), received(before_kill["w2"])
        assert min(first, second) > 0.3 * (first + second), (first, second)
        # While w1 was down, w2 went on storing; w1's session kept the rest for it.
        assert w2_while_down > 0
        assert received(after["w1"]) > 0, "the restarted w1 got nothing back from its session"
        # Only w1 keeps the commons: one writer.
        commons = read_retained(parse_broker_url(broker.url), (f"garden/{garden}/hub/+/commons",), wait_s=0.3)
        assert [t.split("/")[3] for t in commons] == ["w1"], commons
    finally:
        for hub in workers.values():
            hub.stop(signal.SIGTERM)
