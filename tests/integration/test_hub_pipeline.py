"""The hub against the real Mosquitto and the real InfluxDB (1.6).

- end to end: simulated nodes on ptys -> bridge -> broker -> hub -> InfluxDB,
  N readings give exactly N points, and the latency from serial line to
  queryable point;
- malformed payloads: refused, dead-lettered, and the ingest goes on;
- the broker restarted while the hub holds messages it has not acknowledged.

The fault cases (InfluxDB killed, the hub killed or offline, a full disk, ...)
are in tests/faults.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from firmware_bridge.simulator.node import Faults
from garden.influx import Influx

from .conftest import COUNTS, Broker, Collector, HubProcess, stored_keys, wait_for
from .test_bridge_pipeline import SimThread, start_bridge

pytestmark = pytest.mark.integration


class Publisher:
    """Publishes synthetic telemetry at a steady rate, QoS 1, and records what it sent."""

    def __init__(self, broker: Broker, garden: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.garden = garden
        self.sent: list[tuple[str, int, int]] = []
        self.n = 0  # messages so far, over every run(): names and times stay unique
        self.last_ts: dict[str, int] = {}

    def run(self, rate: float, seconds: float, nodes: int = 4) -> None:
        start = time.monotonic()
        first = self.n
        while time.monotonic() - start < seconds:
            n = self.n
            node = f"p{n % nodes}"
            seq = n // nodes + 1
            # A reading's time is unique per node, as the bridge makes it: two
            # readings of one node in the same millisecond would be one point.
            ts = max(time.time_ns() // 1_000_000, self.last_ts.get(node, 0) + 1)
            self.last_ts[node] = ts
            body = {
                "ts": ts,
                "node": node,
                "boot": 1,
                "seq": seq,
                "raw": {"sm0": 400},
                "values": {"sm0": {"vwc_pct": 25.0}},
                "bridge": "pub",
            }
            info = self.client.publish(f"garden/{self.garden}/node/{node}/telemetry", json.dumps(body), qos=1)
            info.wait_for_publish(5)
            self.sent.append((node, 1, seq))
            self.n += 1
            delay = start + (self.n - first) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def report(name: str, sent: list[tuple[str, int, int]], stored: list[tuple[str, int, int]]) -> None:
    lost = len(set(sent) - set(stored))
    duplicates = len(stored) - len(set(stored))
    line = f"[{name}] published={len(sent)} points={len(stored)} lost={lost} duplicates={duplicates}"
    print("\n" + line)
    COUNTS.append(line)
    assert lost == 0 and duplicates == 0 and set(stored) == set(sent)


def test_end_to_end_n_readings_n_points_and_latency(
    running_broker: Broker, collector: Collector, garden: str, hub: HubProcess, database: Influx,
    tmp_path: Path, bridge_factory,  # type: ignore[no-untyped-def]
) -> None:  # fmt: skip
    sim = SimThread(tmp_path, nodes=3, count=200, rate=20.0, faults=Faults())
    first_seen: dict[tuple[str, int, int], float] = {}
    stop = threading.Event()

    def watch() -> None:  # when does each reading become queryable?
        while not stop.is_set():
            now = time.time()
            for key in stored_keys(database):
                first_seen.setdefault(key, now)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start_bridge(sim, running_broker, tmp_path, bridge_factory, garden)
    sim.start()
    sim.join(60)
    produced = sim.keys()
    wait_for(lambda: len(first_seen) >= len(produced), 30, "every reading in InfluxDB")
    stop.set()
    watcher.join(5)
    report("end-to-end", sorted(produced), stored_keys(database, settled=True))
    written = {(str(e["node"]), int(e["boot"]), int(e["seq"])): float(e["t"]) for e in sim.entries()}  # type: ignore[call-overload]
    latencies = sorted(first_seen[k] - written[k] for k in produced)
    p50 = statistics.median(latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    COUNTS.append(f"[end-to-end] serial line to queryable point: p50={p50 * 1000:.0f} ms p99={p99 * 1000:.0f} ms "
                  f"(polled every 50 ms)")  # fmt: skip
    assert p99 < 10  # a sanity bound, not a benchmark: see benchmarks/
    sim.stop()


def test_malformed_payloads_are_dead_lettered_and_ingest_goes_on(
    running_broker: Broker, garden: str, hub: HubProcess, database: Influx, tmp_path: Path
) -> None:
    now = time.time_ns() // 1_000_000

    def body(**changes: object) -> bytes:
        return json.dumps({"ts": now, "node": "x1", "boot": 1, "seq": 1, "raw": {"sm0": 400}} | changes).encode()

    bad = {
        "not_json": b"[" * 60_000,  # JSON nested deeper than any parser's stack
        "wrong_type": body(seq="one"),
        "too_old": body(ts=1000),
        "in_future": body(ts=now + 10 * 86_400_000),
        "not_finite": body().replace(b"400", b"NaN"),
        "wrong_node": body(node="x2"),
        "too_large": b" " * 70_000,
        "out_of_range": body(raw={"sm0": 10**400}),  # no float holds it
        "bad_sensor_key": body(raw={"sm 0": 1}),
    }
    publisher = Publisher(running_broker, garden)
    for payload in bad.values():
        publisher.client.publish(f"garden/{garden}/node/x1/telemetry", payload, qos=1).wait_for_publish(5)
    publisher.run(rate=100, seconds=1)
    publisher.close()
    wait_for(lambda: len(stored_keys(database)) >= len(publisher.sent), 30, "the good readings")
    report("malformed", publisher.sent, stored_keys(database, settled=True))
    result = subprocess.run(
        [sys.executable, "-m", "garden", "hub", "dead-letters", "--json"],
        env={**hub.env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    reasons = {row["reason"] for row in json.loads(result.stdout)}
    COUNTS.append(f"[malformed] dead-lettered reasons: {sorted(reasons)}")
    assert reasons == set(bad)


def test_broker_restart_under_the_hub(running_broker: Broker, garden: str, hub: HubProcess, database: Influx) -> None:
    """Messages the hub held unacknowledged when the broker went away come again on the
    new connection; the hub acknowledges only there, and stores each reading once."""
    first = Publisher(running_broker, garden)
    assert hub.proc is not None
    # Frozen, the hub holds what the broker sent it, unread and unacknowledged,
    # when the broker goes away; it reads it on a connection that is gone.
    hub.proc.send_signal(signal.SIGSTOP)
    first.run(rate=200, seconds=3)
    first.close()
    running_broker.stop(signal.SIGTERM)
    running_broker.start()
    hub.proc.send_signal(signal.SIGCONT)
    second = Publisher(running_broker, garden)
    second.n, second.last_ts = first.n, first.last_ts  # go on where the first publisher stopped: names stay unique
    second.run(rate=200, seconds=3)
    second.close()
    sent = first.sent + second.sent
    wait_for(lambda: len(stored_keys(database)) >= len(sent), 60, "everything stored")
    time.sleep(1)
    report("broker-restart", sent, stored_keys(database, settled=True))


def test_acknowledged_batches_never_come_again(
    running_broker: Broker, garden: str, hub: HubProcess, database: Influx
) -> None:
    """The hub acknowledges a stored batch in one write of PUBACKs (garden/hub.py,
    ``Hub._ack``). Every one must reach the broker: started again on the same
    session, the hub is sent nothing it already stored."""
    publisher = Publisher(running_broker, garden)
    publisher.run(rate=2000, seconds=1.5)
    publisher.close()
    wait_for(lambda: len(stored_keys(database)) >= len(publisher.sent), 30, "every reading stored")
    hub.stop(signal.SIGTERM)  # its final status has its final counters
    assert hub.status_body(running_broker)["counters"]["acked"] >= len(publisher.sent)  # type: ignore[index]
    hub.start()
    hub.wait_online(running_broker)
    time.sleep(2)  # what the broker still held for the session would have come by now
    hub.stop(signal.SIGTERM)  # its last status, with its final counters
    after = hub.status_body(running_broker)
    assert after["state"] == "offline"
    assert after["counters"].get("readings", 0) == 0, after["counters"]  # type: ignore[attr-defined]
    report("acks", publisher.sent, stored_keys(database, settled=True))
    hub.start()  # the fixture stops it
