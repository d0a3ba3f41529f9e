"""Watering alerts end to end, on real parts.

A simulated bed on a pty dries past its trigger in accelerated time; the real
bridge and the real hub (with its watch) run as processes against the real
Mosquitto and InfluxDB. The alert must arrive on MQTT, on a webhook receiver
and on an SMTP server, both run by this test (http.server and aiosmtpd:
real servers, in the test process). The simulated gardener then waters the
bed; the watering is detected, the alert resolved, and the annotation and the
watering event are in InfluxDB. A second person's webhook hangs (it accepts
and never answers): the MQTT alert is not delayed, and the hung webhook is
tried exactly ``max_attempts`` times.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion

from firmware_bridge.simulator.node import SimNode
from firmware_bridge.simulator.physics import BedParams
from firmware_bridge.simulator.pty_runner import Simulation
from garden.influx import Influx
from tests.servers import Influxd

from .conftest import COUNTS, BridgeProcess, Broker, HubProcess, free_port, wait_for

pytestmark = pytest.mark.integration


class Webhook:
    """A JSON webhook receiver: records each POST body and when it came."""

    def __init__(self) -> None:
        received: list[tuple[float, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HangingWebhook:
    """Accepts connections and never answers: a dead channel. Counts the attempts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.attempts = 0
        self.times: list[float] = []
        self.held: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.attempts += 1
            self.times.append(time.monotonic())
            self.held.append(conn)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for conn in self.held:
            conn.close()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[float, Any]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append((time.monotonic(), envelope))
        return "250 OK"


class AlertListener:
    def __init__(self, broker: Broker, garden: str) -> None:
        self.changes: list[tuple[float, dict[str, Any]]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(f"garden/{garden}/alert/#", qos=1)
        self.client.subscribe(f"garden/{garden}/event/watering", qos=1)
        self.client.loop_start()
        self.waterings: list[dict[str, Any]] = []

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if not message.payload:
            return
        body = json.loads(message.payload)
        if message.topic.endswith("/event/watering"):
            self.waterings.append(body)
        else:
            self.changes.append((time.monotonic(), body))

    def of(self, key: str, change: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, b) for t, b in self.changes if b.get("key") == key and b.get("transition") == change]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def receivers() -> Iterator[tuple[Webhook, HangingWebhook, Mailbox, Controller]]:
    hook, dead, mailbox = Webhook(), HangingWebhook(), Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    yield hook, dead, mailbox, smtp
    smtp.stop()
    hook.close()
    dead.close()


def publish_retained(broker: Broker, messages: list[tuple[str, dict[str, Any]]]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for topic, body in messages:
        client.publish(topic, json.dumps(body), qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_a_drying_bed_alerts_everywhere_and_a_watering_resolves_it(
    running_broker: Broker,
    running_influxd: Influxd,
    database: Influx,
    garden: str,
    tmp_path: Path,
    receivers: tuple[Webhook, HangingWebhook, Mailbox, Controller],
) -> None:
    hook, dead, mailbox, smtp = receivers
    config = tmp_path / "garden.toml"
    config.write_text(
        f"""
[garden]
latitude = 52.5
timezone = "Europe/Berlin"

[watch]
evaluate_every_s = 0.5
webhook_timeout_s = 1.0
max_attempts = 3

[notify.smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "none"
sender = "garden@example.org"

[[people]]
name = "ana"
email = "ana@example.org"
webhook = "{hook.url}"

[[people]]
name = "ben"
webhook = "{dead.url}"
"""
    )
    # The bed's profile (lettuce on loam, trigger 22 %) and the node's bed, as volunteers set them.
    publish_retained(
        running_broker,
        [
            (f"garden/{garden}/bed/bed-1/config",
             {"soil": "loam", "crops": [{"crop": "lettuce", "planted": "2026-10-20"}],
              "overrides": {"trigger_vwc": 22.0, "critical_vwc": 12.0}}),
            (f"garden/{garden}/node/bed-1/config", {"bed": "bed-1"}),
        ],
    )  # fmt: skip
    listener = AlertListener(running_broker, garden)
    hub = HubProcess(running_broker, running_influxd, tmp_path, garden, garden)
    hub.env["GARDEN_CONFIG"] = str(config)
    hub.start()
    hub.wait_online(running_broker)
    # A bed starting near field capacity, watered from the tank by the simulated gardener at 18 %.
    node = SimNode("bed-1", seed=3, interval_s=600, params=BedParams(water_at_vwc=18.0))
    sim = Simulation([node], tmp_path / "ports", speed=20_000)
    sim.open_ports()
    bridge = BridgeProcess(sim.links(), running_broker, tmp_path, garden)
    sim_thread = threading.Thread(target=sim.run, daemon=True)
    try:
        bridge.start()
        sim_thread.start()
        wait_for(lambda: listener.of("water/bed-1", "raised"), 120, "the water alert on MQTT")
        raised_at, raised = listener.of("water/bed-1", "raised")[0]
        assert raised["severity"] == "warning" and raised["bed"] == "bed-1"
        assert "trigger 22%" in raised["text"] and raised["text"].startswith("Bed 1 lettuce:")
        wait_for(lambda: any(b["key"] == "water/bed-1" for _, b in hook.received), 30, "the webhook")
        wait_for(lambda: mailbox.messages, 30, "the email")
        _, envelope = mailbox.messages[0]
        assert envelope.rcpt_tos == ["ana@example.org"]
        assert b"bed-1 needs water" in envelope.content and b"trigger 22%" in envelope.content
        # The simulated gardener waters at 18 %: detected, and the alert resolves.
        wait_for(lambda: listener.of("water/bed-1", "resolved"), 120, "the watering to resolve the alert")
        _, resolved = listener.of("water/bed-1", "resolved")[0]
        assert resolved["resolution"].startswith("watered")
        assert listener.waterings and listener.waterings[0]["bed"] == "bed-1" and listener.waterings[0]["mm"] > 10
        wait_for(lambda: any(b.get("transition") == "resolved" for _, b in hook.received), 30, "the resolved webhook")

        def notices() -> int:
            return len({(b["key"], b["transition"]) for _, b in hook.received})

        wait_for(lambda: dead.attempts >= 3 * notices(), 60, "the dead webhook's retries to end")
    finally:
        sim.stop_event.set()
        sim_thread.join(5)
        bridge.kill()
        hub.stop()
        listener.close()
    # The annotations the bed dashboard shows, and the watering event, are in InfluxDB.
    rows = database.query(
        'SELECT "text", "severity" FROM "alert" WHERE "bed" = $bed AND "kind" = $kind GROUP BY "state"',
        {"bed": "bed-1", "kind": "water"},
    )
    states = {s.tags["state"] for s in rows}
    assert {"raised", "resolved"} <= states
    events = database.query('SELECT "mm", "text" FROM "event" WHERE "type" = $t AND "bed" = $bed',
                            {"t": "watering", "bed": "bed-1"})  # fmt: skip
    assert events and all(r["mm"] > 10 for r in events[0].records())
    # The dead webhook: tried exactly max_attempts times per notice, and it delayed nothing:
    # the MQTT alert and the email came while it was still being retried for that alert.
    mailed_at = mailbox.messages[0][0]
    assert len(dead.times) >= 3
    assert raised_at < dead.times[2] and mailed_at < dead.times[2]
    notices_to_ben = len({(b["key"], b["transition"]) for _, b in hook.received})
    line = (
        f"[watch e2e] alert raised->resolved; webhook got {len(hook.received)} notices, smtp {len(mailbox.messages)}, "
        f"dead webhook attempts={dead.attempts} for {notices_to_ben} notices (max_attempts=3)"
    )
    print("\n" + line)
    COUNTS.append(line)
    assert dead.attempts == 3 * notices_to_ben


def garden_cli(broker: Broker, garden: str, *args: str, user: str = "ana") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GARDEN_CONFIG": "/dev/null", "GARDEN_USER": user}
    return subprocess.run(
        [sys.executable, "-m", "garden", *args, "--mqtt", broker.url, "--garden", garden],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_a_lost_node_is_alerted_and_volunteers_ack_and_mute_it_through_the_hub(
    running_broker: Broker, running_influxd: Influxd, database: Influx, garden: str, tmp_path: Path
) -> None:
    config = tmp_path / "garden.toml"
    config.write_text("[watch]\nevaluate_every_s = 0.5\n")
    now_ms = time.time_ns() // 1_000_000
    # A node that announced a 60 s interval and was last heard an hour ago: lost.
    publish_retained(
        running_broker,
        [
            (
                f"garden/{garden}/node/far-1/status",
                {"state": "online", "interval_s": 60, "last_seen": now_ms - 3_600_000},
            )
        ],
    )
    listener = AlertListener(running_broker, garden)
    hub = HubProcess(running_broker, running_influxd, tmp_path, garden, garden)
    hub.env["GARDEN_CONFIG"] = str(config)
    hub.start()
    try:
        hub.wait_online(running_broker)
        wait_for(lambda: listener.of("node/far-1", "raised"), 30, "the lost-node alert")
        _, raised = listener.of("node/far-1", "raised")[0]
        assert raised["severity"] == "warning" and "lost" in raised["text"]

        listed = garden_cli(running_broker, garden, "alerts", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [a["key"] for a in json.loads(listed.stdout)["alerts"]] == ["node/far-1"]

        acked = garden_cli(running_broker, garden, "alerts", "ack", "node/far-1", "--json", user="ben")
        assert acked.returncode == 0, acked.stderr
        assert json.loads(acked.stdout)["alert"]["acked_by"] == "ben"
        wait_for(lambda: listener.of("node/far-1", "acked"), 10, "the acked change on MQTT")

        muted = garden_cli(running_broker, garden, "alerts", "mute", "node/far-1", "--for", "2h", "--json")
        assert muted.returncode == 0, muted.stderr
        assert json.loads(muted.stdout)["muted_until_ms"] > now_ms + 7_000_000

        unknown = garden_cli(running_broker, garden, "alerts", "ack", "water/no-such-bed")
        assert unknown.returncode == 1 and "no alert 'water/no-such-bed'" in unknown.stderr
        bad = garden_cli(running_broker, garden, "alerts", "ack", "not an id")
        assert bad.returncode == 2 and "kind/subject" in bad.stderr
    finally:
        hub.stop()
        listener.close()
    # With the hub stopped, a request fails within a few seconds and says why.
    start = time.monotonic()
    down = garden_cli(running_broker, garden, "alerts", "ack", "node/far-1")
    elapsed = time.monotonic() - start
    assert down.returncode == 1 and "the hub is unreachable" in down.stderr
    assert elapsed < 10.0  # the 3 s answer timeout plus the interpreter's start, never a hang
    rows = database.query(
        'SELECT "who" FROM "alert" WHERE "subject" = $s AND "state" = $st', {"s": "far-1", "st": "acked"}
    )
    assert rows and rows[0].records()[0]["who"] == "ben"
