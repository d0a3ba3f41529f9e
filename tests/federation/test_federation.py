"""Two gardens federated into a region, on one machine, with real parts only.

Two garden Mosquittos (g1, g2) bridge into a regional Mosquitto over TLS, each with
the password and the CA that `garden federate regional` made, through the uplink.conf
that `garden federate config` wrote. The regional hub (`garden hub run --all-gardens`)
takes both gardens into one InfluxDB. Then the uplink is cut (the regional broker
stopped), the gardens go on, and it is restored: nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.calibration import Calibrated
from firmware_bridge.messages import telemetry_payload
from garden.influx import Influx, InfluxSettings
from tests.broker_tools import Client
from tests.servers import Influxd

from .conftest import Listener, Mosquitto, free_port, garden_cli, record, wait_for

GARDENS = ("g1", "g2")
NODES = ("bed-1", "bed-2")
N = 40  # readings per garden before the cut (20 per node)
M = 60  # readings per garden while the uplink is down
QUEUE = 500  # the garden brokers' queue bound (max_queued_messages), well above M
DATABASE = "region"
BASE_MS = int(time.time() * 1000) - 3_600_000  # an hour ago: every reading has its own ts


@dataclass
class Region:
    regional: Mosquitto
    gardens: dict[str, Mosquitto]
    reg_dir: Path
    ca: Path
    passwords: dict[str, str]
    hub: subprocess.Popen[bytes]
    hub_log: Path
    collector: Listener
    influx: Influx
    publishers: dict[str, Client]
    sent: Counter[str]


def reading(garden: str, node: str, seq: int) -> bytes:
    calibrated = Calibrated(raw={"sm0": 400.0 + seq}, values={"sm0": {"vwc_pct": 20.0 + seq / 100}}, errors={})
    ts = BASE_MS + seq * 1000 + (0 if node == NODES[0] else 500)
    return telemetry_payload(
        node=node, boot=1, seq=seq, ts_ms=ts, reading=calibrated, bridge=f"{garden}-shed", bed=node
    )


def publish(region: Region, garden: str, count: int) -> None:
    """``count`` readings of the garden's nodes, QoS 1, all acknowledged by the garden broker."""
    client = region.publishers[garden]
    mids = []
    for _ in range(count):
        i = region.sent[garden]
        node, seq = NODES[i % len(NODES)], i // len(NODES)
        info = client.client.publish(f"garden/{garden}/node/{node}/telemetry", reading(garden, node, seq), qos=1)
        mids.append(info.mid)
        region.sent[garden] += 1
    wait_for(lambda: all(mid in client.acks for mid in mids), 20, f"{count} PUBACKs from {garden}'s broker")
    assert [client.acks[mid] for mid in mids] == [0] * count


def stored(influx: Influx) -> dict[str, list[tuple[str, int]]]:
    """(node, seq) of every soil_moisture point, by the garden tag."""
    found: dict[str, list[tuple[str, int]]] = {}
    for series in influx.query('SELECT "seq" FROM "soil_moisture" GROUP BY "garden", "node"'):
        for row in series.records():
            if row["seq"] is not None:
                found.setdefault(series.tags["garden"], []).append((series.tags["node"], int(row["seq"])))
    return found


def counts(influx: Influx) -> dict[str, int]:
    return {g: len(v) for g, v in stored(influx).items()}


@pytest.fixture(scope="module")
def region(workdir: Path, stopper: list[Any], influxd: Influxd) -> Iterator[Region]:
    if influxd.proc is None:
        influxd.start()
    reg_dir = workdir / "regional-files"
    rport = free_port()
    made = garden_cli(
        "federate", "regional", "--dir", str(reg_dir), "--port", str(rport), "--bind", "127.0.0.1",
        "--tls-host", "127.0.0.1", "--tls-host", "localhost", *(a for g in GARDENS for a in ("--garden", g)),
    )  # fmt: skip
    assert {f["file"] for f in made["files"]} >= {"mosquitto_passwd", "mosquitto_acl", "regional.conf", "tls/ca.pem"}
    assert all(f["mode"] == "0600" for f in made["files"])
    ca = reg_dir / "tls" / "ca.pem"
    passwords = {p.name: p.read_text().strip() for p in reg_dir.glob("mqtt_*_password")}

    regional = Mosquitto(workdir / "regional", rport, "")
    (regional.conf_d / "regional.conf").write_text((reg_dir / "regional.conf").read_text())
    regional.start()
    stopper.append(regional)

    influx = Influx(InfluxSettings(url=influxd.url, database=DATABASE))
    influx.execute(f'CREATE DATABASE "{DATABASE}"')
    hub_dir = workdir / "regional-hub"
    hub_dir.mkdir()
    (hub_dir / "garden.toml").write_text("")
    hub_log = hub_dir / "hub.log"
    env = {
        **os.environ,
        "GARDEN_CONFIG": str(hub_dir / "garden.toml"),
        "GARDEN_DATA_DIR": str(hub_dir / "data"),
        "GARDEN_HUB_ID": "region-hub",
        "GARDEN_INFLUX_DATABASE": DATABASE,
        "GARDEN_MQTT_USERNAME": "hub",
        "GARDEN_MQTT_PASSWORD_FILE": str(reg_dir / "mqtt_hub_password"),
        "SSL_CERT_FILE": str(ca),
    }
    with hub_log.open("ab") as log:
        hub = subprocess.Popen(
            [sys.executable, "-m", "garden", "hub", "run", "--mqtt", f"mqtts://127.0.0.1:{rport}",
             "--influx", influxd.url, "--garden", "region", "--all-gardens", "-v"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    stopper.append(hub)
    collector = Listener(
        rport, "region-collector", ["garden/+/node/+/telemetry", "garden/+/federation/#", "garden/+/hub/+/status"],
        user="hub", password=passwords["mqtt_hub_password"], ca=ca,
    )  # fmt: skip
    stopper.append(collector)

    def hub_online() -> bool:
        assert hub.poll() is None, f"the regional hub stopped: {hub_log.read_text()[-3000:]}"
        return any(b'"online"' in p for t, p, _ in collector.messages if "/hub/" in t)

    wait_for(hub_online, 30, "the regional hub's status online")

    gardens: dict[str, Mosquitto] = {}
    publishers: dict[str, Client] = {}
    for g in GARDENS:
        port = free_port()
        # as deploy/mosquitto's garden.conf: a large bound, which uplink.conf (read after it) replaces
        main = f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
        broker = Mosquitto(workdir / g, port, main)
        out = garden_cli(
            "federate", "config", "--garden", g, "--regional", f"127.0.0.1:{rport}", "--user", f"uplink-{g}",
            "--password-file", str(reg_dir / f"mqtt_uplink-{g}_password"), "--ca", str(ca),
            "--out", str(broker.conf_d), "--restart", "1", "2", "--max-queued-messages", str(QUEUE),
            "--nodes", "2", "--interval", "60",
        )  # fmt: skip
        assert out["files"] == [
            {
                "file": "uplink.conf",
                "what": f"bridge uplink-{g} to 127.0.0.1:{rport}, with its password",
                "mode": "0600",
            }
        ]
        assert passwords[f"mqtt_uplink-{g}_password"] not in json.dumps(out)
        broker.start()
        stopper.append(broker)
        gardens[g] = broker
        publishers[g] = Client(broker.port, None)
        assert publishers[g].connect() == 0
        stopper.append(publishers[g])
    state = {g: f"garden/{g}/federation/uplink-{g}/state" for g in GARDENS}
    wait_for(lambda: all(collector.payloads(state[g])[-1:] == [b"1"] for g in GARDENS), 20, "both uplinks up")
    yield Region(regional, gardens, reg_dir, ca, passwords, hub, hub_log, collector, influx, publishers, Counter())
    influx.close()


def test_each_gardens_readings_arrive_once_with_their_garden(region: Region) -> None:
    start = time.monotonic()
    for g in GARDENS:
        publish(region, g, N)
    wait_for(lambda: counts(region.influx) == {g: N for g in GARDENS}, 30, f"{N} points per garden in InfluxDB")
    took = time.monotonic() - start
    time.sleep(1.0)  # anything doubled would have come by now
    points = stored(region.influx)
    for g in GARDENS:
        assert len(points[g]) == N
        assert sorted(points[g]) == sorted((NODES[i % 2], i // 2) for i in range(N))
    delivered = region.collector.telemetry()
    assert sum(delivered.values()) == 2 * N
    assert set(delivered.values()) == {1}
    assert {k[0] for k in delivered} == set(GARDENS)
    record(
        f"[federation] {N} readings per garden published on g1's and g2's brokers; the regional broker "
        f"delivered {sum(delivered.values())} (each once); InfluxDB: "
        + ", ".join(f"{g}={len(points[g])}" for g in GARDENS)
        + f" points with their garden tag, in {took:.1f} s"
    )


def test_a_gardens_bridge_user_writes_only_its_own_garden(region: Region) -> None:
    before = Counter(region.collector.telemetry())
    g1 = Client(region.regional.port, "uplink-g1", region.passwords["mqtt_uplink-g1_password"], ca=region.ca, tls=True)
    assert g1.connect() == 0
    try:
        forged = reading("g2", "bed-1", 9999)
        assert g1.publish("garden/g2/node/bed-1/telemetry", forged) == 0x87  # Not authorized
        assert g1.publish("garden/g2/event/config", b'{"text": "forged"}') == 0x87
        assert g1.publish("garden/g1/federation/probe", b"own tree") == 0
        assert g1.subscribe("garden/#") == 1  # granted, but it may read nothing
        assert g1.received(0.5) == []
    finally:
        g1.close()
    wrong = Client(region.regional.port, "uplink-g1", "not-the-password", ca=region.ca, tls=True)
    assert wrong.connect().value == 0x87  # CONNACK "Not authorized": a wrong password
    wrong.close()
    time.sleep(0.5)
    assert region.collector.telemetry() == before
    assert all(seq != 9999 for _, seq in stored(region.influx)["g2"])
    record(
        "[federation] g1's bridge user publishing into garden/g2/: refused (PUBACK 0x87), nothing delivered or stored"
    )


def test_a_cut_uplink_keeps_the_garden_working_and_loses_nothing(region: Region) -> None:
    local = {g: Listener(region.gardens[g].port, f"local-{g}", [f"garden/{g}/node/+/telemetry"]) for g in GARDENS}
    try:
        region.regional.stop()  # SIGTERM: the uplinks fall; the broker saves its sessions
        wait_for(
            lambda: all(b"0" in p for g in GARDENS for p in [b"".join(_local_state(region, g))]), 15,
            "both gardens' brokers to see their uplink down",
        )  # fmt: skip
        for g in GARDENS:
            publish(region, g, M)
        for g in GARDENS:
            wait_for(lambda g=g: sum(local[g].telemetry().values()) == M, 10, f"{g}'s local subscriber")
            assert set(local[g].telemetry().values()) == {1}
        assert counts(region.influx) == {g: N for g in GARDENS}  # nothing came through the cut
        restored = time.monotonic()
        region.regional.start()
        wait_for(lambda: counts(region.influx) == {g: N + M for g in GARDENS}, 40, "the catch-up")
        catch_up = time.monotonic() - restored
        time.sleep(1.0)
    finally:
        for listener in local.values():
            listener.close()
    points = stored(region.influx)
    for g in GARDENS:
        assert sorted(points[g]) == sorted((NODES[i % 2], i // 2) for i in range(N + M))
    delivered = region.collector.telemetry()
    assert sum(delivered.values()) == 2 * (N + M)
    assert set(delivered.values()) == {1}
    dropped = region.gardens["g1"].log().count("Outgoing messages are being dropped")
    assert dropped == 0
    record(
        f"[federation] uplink cut (regional broker SIGTERM): {M} readings per garden published meanwhile, "
        f"each received by the garden's local subscriber ({sum(local['g1'].telemetry().values())}, "
        f"{sum(local['g2'].telemetry().values())}); queued in each garden broker (bound {QUEUE}); "
        f"after restart, caught up in {catch_up:.1f} s: InfluxDB "
        + ", ".join(f"{g}={len(points[g])}" for g in GARDENS)
        + f" points (expected {N + M} each), regional deliveries {sum(delivered.values())}, each once, 0 dropped"
    )


def _local_state(region: Region, garden: str) -> list[bytes]:
    """The garden broker's retained notification: b'0' once its uplink is down."""
    from firmware_bridge.mqtt_link import parse_broker_url, read_retained

    url = parse_broker_url(f"mqtt://127.0.0.1:{region.gardens[garden].port}")
    found = read_retained(url, (f"garden/{garden}/federation/+/state",), wait_s=0.3)
    return list(found.values())


def test_past_the_queue_bound_the_newest_are_dropped(region: Region) -> None:
    """The bound is uplink.conf's (QUEUE), not the 1000000 of the main file read before it."""
    before = counts(region.influx)
    first = region.sent["g2"]
    extra = QUEUE + 100
    region.regional.stop()
    wait_for(lambda: b"0" in b"".join(_local_state(region, "g2")), 15, "g2's broker to see its uplink down")
    publish(region, "g2", extra)
    restored = time.monotonic()
    region.regional.start()
    seen: list[int] = []

    def settled() -> bool:
        seen.append(counts(region.influx)["g2"])
        return len(seen) > 40 and seen[-1] == seen[-40] > before["g2"]  # unchanged for 2 s

    wait_for(settled, 40, "g2's catch-up to end")
    kept = seen[-1] - before["g2"]
    points = stored(region.influx)["g2"]
    # the oldest are kept, in order; the newest, past the bound, were dropped
    assert sorted(points) == sorted((NODES[i % 2], i // 2) for i in range(first + kept))
    assert kept == QUEUE
    assert "Outgoing messages are being dropped for client local.uplink-g2" in region.gardens["g2"].log()
    assert counts(region.influx)["g1"] == before["g1"]
    record(
        f"[federation] queue bound {QUEUE} (uplink.conf; the main file's 1000000 replaced): {extra} readings "
        f"published on g2 while its uplink was down, {kept} arrived after the restore "
        f"(settled, 2 s unchanged, {time.monotonic() - restored:.1f} s after the restart), "
        f"the newest {extra - kept} dropped by g2's broker, as logged"
    )
