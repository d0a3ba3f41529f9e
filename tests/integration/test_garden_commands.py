"""``garden status``, ``readings``, ``node ...`` and ``doctor`` against the real servers.

InfluxDB is the session's influxd 1.6 (database ``garden_cli``, so the dashboard
tests' drops never touch it), seeded through the hub's own point builder
(``garden.points.telemetry_lines``) at times relative to now. The broker is the
session's Mosquitto; retained node statuses and configs are published with paho
as the bridge would. Each test has its own garden id, so nothing mixes.
Commands run through typer's CliRunner, and their ``--json`` is checked.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner, Result

from firmware_bridge.messages import compact_json, parse_node_config, status_payload
from firmware_bridge.mqtt_link import parse_broker_url, read_retained
from firmware_bridge.topics import Topics
from garden.cli.app import app
from garden.influx import Influx, InfluxSettings
from garden.points import telemetry_lines
from garden.schema import ensure_schema
from tests.fake_grafana import FakeGrafana, running
from tests.integration.conftest import MOSQUITTO, Broker, free_port, wait_for
from tests.servers import Influxd

pytestmark = pytest.mark.integration

DB = "garden_cli"
HOUR = 3_600_000
runner = CliRunner()


def env(**extra: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "GARDEN_CONFIG": "/dev/null",
        "GARDEN_INFLUX_DATABASE": DB,
        "GARDEN_USER": "alice",
        "GARDEN_GRAFANA_URL": None,
        "GARDEN_GRAFANA_TOKEN": None,
        "COLUMNS": "200",
    }
    return base | extra


def invoke(args: list[str], **extra: str | None) -> Result:
    return runner.invoke(app, args, env=env(**extra))


def reading(node: str, bed: str | None, ts: int, seq: int, values: Mapping[str, Mapping[str, float]],
            errors: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    raw = {key: round(next(iter(v.values())) * 10, 1) for key, v in values.items()}
    body: dict[str, Any] = {"ts": ts, "node": node, "boot": 1, "seq": seq, "raw": raw, "values": values}
    if bed:
        body["bed"] = bed
    if errors:
        body["errors"] = errors
        body["raw"] |= {key: 0.0 for key in errors}
    return body


def seed(url: str, garden: str, now: int) -> None:
    """bed-1 (n1a: drying 30 -> 22 %, soil 14.5 °C, tank 640 l), bed-2 (n2a at 12 %, and n4
    at 16 %, which was in no bed until two hours ago), n3 in no bed at 8 %, and another
    garden with a bed-1 of its own."""
    messages = []
    for k in range(26):  # hourly, newest first
        ts = now - k * HOUR - 60_000
        vwc = round(22.0 + 8.0 * k / 25, 2)
        messages.append(reading("n1a", "bed-1", ts, 100 - k, {"sm0": {"vwc_pct": vwc}, "st0": {"temp_c": 14.5},
                                                               "tk0": {"litres": 640.0}}))  # fmt: skip
        messages.append(reading("n2a", "bed-2", ts - 1000, 100 - k, {"sm0": {"vwc_pct": 12.0}, "at0": {"temp_c": 18}}))
    for k in range(20):
        ts = now - k * HOUR - 120_000
        messages.append(reading("n4", "bed-2" if k < 2 else None, ts, 50 - k, {"sm0": {"vwc_pct": 16.0}}))
    messages.append(reading("n3", None, now - 30_000, 7, {"sm0": {"vwc_pct": 8.0}}))
    messages.append(reading("n3", None, now - 10_000, 8, {}, errors={"sm0": "sentinel"}))
    lines = [ln for m in messages for ln in telemetry_lines(garden, m)]
    lines += list(telemetry_lines(garden + "x", reading("other", "bed-1", now - 1000, 1, {"sm0": {"vwc_pct": 50}})))
    client = Influx(InfluxSettings(url=url, database=DB))
    ensure_schema(client)
    client.write_lines(lines)
    client.close()


@pytest.fixture
def seeded(running_influxd: Influxd, garden: str) -> Influxd:
    import time

    seed(running_influxd.url, garden, int(time.time() * 1000))
    return running_influxd


# ------------------------------------------------------------------ status


def test_status_shows_beds_then_nodes_without_a_bed(seeded: Influxd, garden: str) -> None:
    result = invoke(["status", "--influx", seeded.url, "--garden", garden, "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    rows = {row["bed"] or row["nodes"][0]: row for row in body["rows"]}
    assert list(rows) == ["bed-1", "bed-2", "n3"]
    bed1 = rows["bed-1"]
    assert bed1["nodes"] == ["n1a"]
    assert bed1["vwc_pct"] == 22.0
    assert bed1["need"] == "ok"
    assert bed1["soil_temp_c"] == 14.5
    assert bed1["tank_litres"] == 640.0
    assert bed1["age_s"] < 120
    assert len(bed1["sparkline"]) == 24
    hourly = [v for v in bed1["hourly_vwc_pct"] if v is not None]
    assert len(hourly) >= 23 and hourly == sorted(hourly, reverse=True)  # drying all day
    assert bed1["sparkline"].strip()[0] == "█" and bed1["sparkline"].strip()[-1] == "▁"
    assert rows["bed-2"]["nodes"] == ["n2a", "n4"]
    assert rows["bed-2"]["vwc_pct"] == 14.0  # mean of 12 and 16
    assert rows["bed-2"]["need"] == "needs water"
    assert rows["bed-2"]["air_temp_c"] == 18.0
    assert rows["n3"]["bed"] is None
    assert rows["n3"]["need"] == "critical"
    assert rows["n3"]["age_s"] < 60  # the sentinel reading counts as seen

    result = invoke(["status", "--influx", seeded.url, "--garden", garden])
    assert result.exit_code == 0, result.output
    for text in ("bed-1", "bed-2", "(no bed)", "critical", "needs water", "640 l", "22.0 %"):
        assert text in result.output


def test_status_watch_refreshes(seeded: Influxd, garden: str) -> None:
    args = ["status", "--influx", seeded.url, "--garden", garden, "--watch", "1", "--count", "2"]
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.output.splitlines()]
    assert len(frames) == 2
    assert frames[1]["now_ms"] > frames[0]["now_ms"]
    result = invoke([*args[:-1], "1"])
    assert result.exit_code == 0
    assert "bed-1" in result.output


def test_status_without_influx_exits_1(garden: str) -> None:
    result = invoke(["status", "--influx", f"http://127.0.0.1:{free_port()}", "--garden", garden])
    assert result.exit_code == 1
    assert "cannot reach InfluxDB" in result.output


# ------------------------------------------------------------------ readings


def test_readings_of_a_bed_and_of_a_node(seeded: Influxd, garden: str) -> None:
    result = invoke(["readings", "bed-1", "--since", "2h", "--influx", seeded.url, "--garden", garden, "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)["readings"]
    assert len(found) == 6  # two hours of three sensors; the other garden's bed-1 is not here
    assert {(r["bed"], r["node"]) for r in found} == {("bed-1", "n1a")}
    assert {r["sensor"] for r in found} == {"sm0", "st0", "tk0"}
    assert [r["time_ms"] for r in found] == sorted((r["time_ms"] for r in found), reverse=True)
    moisture = [r for r in found if r["sensor"] == "sm0"]
    assert moisture[0]["value"] == 22.0 and moisture[0]["unit"] == "%"

    result = invoke(["readings", "n3", "--sensor", "sm0", "--influx", seeded.url, "--garden", garden, "--json"])
    found = json.loads(result.output)["readings"]
    assert [r["error"] for r in found] == ["sentinel", None]
    assert found[1]["value"] == 8.0

    result = invoke(["readings", "n4", "--since", "7d", "--limit", "5", "--influx", seeded.url, "--garden", garden])
    assert result.exit_code == 0
    assert "Showing the newest 5" in result.output
    result = invoke(["readings", "nobody", "--influx", seeded.url, "--garden", garden])
    assert result.exit_code == 0
    assert "No readings of 'nobody'" in result.output


# ------------------------------------------------------------------ nodes


def publish_retained(broker: Broker, items: Mapping[str, bytes]) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for topic, payload in items.items():
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


class Listener:
    """Collects the non-retained messages on one topic filter."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def nodes(running_broker: Broker, garden: str) -> Iterator[Listener]:
    """n1a online in bed-1 (config: bed-1, 300 s, a moisture calibration); n2a with a status only."""
    import time

    topics = Topics(garden)
    now = int(time.time() * 1000)
    publish_retained(
        running_broker,
        {
            topics.node_status("n1a"): status_payload(
                "online",
                node="n1a",
                bridge="shed",
                fw="gc-1.2",
                interval_s=300,
                last_seen=now - 5000,
                battery_v=3.9,
                bed="bed-1",
                sensors=["sm0", "st0", "tk0"],
            ),
            topics.node_config("n1a"): compact_json(
                {"bed": "bed-1", "interval_s": 300, "calibration": {"sm0": {"temp_coeff": -1.5}}}
            ),
            topics.node_status("n2a"): status_payload("offline", node="n2a", bridge="shed", interval_s=600),
        },
    )
    listener = Listener(running_broker, topics.event("config"))
    yield listener
    listener.close()


def node_args(broker: Broker, garden: str, *args: str) -> list[str]:
    return ["node", *args, "--mqtt", broker.url, "--garden", garden, "--wait", "0.3"]


def retained_config(broker: Broker, garden: str, node: str) -> bytes:
    topic = Topics(garden).node_config(node)
    return read_retained(parse_broker_url(broker.url), (topic,), wait_s=0.3)[topic]


def test_node_list_and_show(nodes: Listener, running_broker: Broker, seeded: Influxd, garden: str) -> None:
    result = invoke(node_args(running_broker, garden, "list", "--json"))
    assert result.exit_code == 0, result.output
    listed = {n["node"]: n for n in json.loads(result.output)["nodes"]}
    assert set(listed) == {"n1a", "n2a"}
    assert listed["n1a"]["bed"] == "bed-1"
    assert listed["n1a"]["status"]["fw"] == "gc-1.2"
    assert listed["n2a"]["config"] is None

    result = invoke(node_args(running_broker, garden, "list"))
    assert result.exit_code == 0
    assert "online" in result.output and "offline" in result.output and "gc-1.2" in result.output

    args = [*node_args(running_broker, garden, "show", "n1a"), "--influx", seeded.url]
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["config"]["interval_s"] == 300
    assert {r["sensor"]: r["value"] for r in body["readings"]} == {"sm0": 22.0, "st0": 14.5, "tk0": 640.0}
    result = invoke(args)
    assert result.exit_code == 0
    for text in ("bed-1", "gc-1.2", "temp_coeff", "Newest reading per sensor", "640 l"):
        assert text in result.output


def test_set_interval_publishes_a_valid_retained_config_and_an_event(
    nodes: Listener, running_broker: Broker, garden: str
) -> None:
    result = invoke(node_args(running_broker, garden, "set-interval", "n1a", "10m", "--json"), GARDEN_USER="bea")
    assert result.exit_code == 0, result.output
    config = parse_node_config(retained_config(running_broker, garden, "n1a"))
    assert config.interval_s == 600
    assert config.bed == "bed-1"  # the rest of the config is kept
    assert config.calibration.moisture_for("sm0").temp_coeff == -1.5
    wait_for(lambda: nodes.messages, 5, "the config event")
    event = nodes.messages[0]
    assert event["type"] == "config" and event["node"] == "n1a" and event["bed"] == "bed-1"
    assert event["who"] == "bea"
    assert event["change"] == {"interval_s": {"from": 300, "to": 600}}
    assert isinstance(event["ts"], int)

    result = invoke(node_args(running_broker, garden, "set-interval", "n1a", "600"))
    assert result.exit_code == 0
    assert "Nothing to change" in result.output
    assert len(nodes.messages) == 1


def test_assign_calibrate_and_retire(nodes: Listener, running_broker: Broker, garden: str) -> None:
    result = invoke(node_args(running_broker, garden, "assign", "n2a", "bed-7"))
    assert result.exit_code == 0, result.output
    assert "assigned to bed bed-7 (by alice)" in result.output
    assert parse_node_config(retained_config(running_broker, garden, "n2a")).bed == "bed-7"

    result = invoke(node_args(running_broker, garden, "calibrate", "n1a", "--sensor", "sm0", "--dry", "530",
                              "--wet", "250"))  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke(node_args(running_broker, garden, "calibrate", "n1a", "--tank-depth-cm", "120",
                              "--litres-per-cm", "10", "--json"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["change"] == {
        "calibration.tk0": {"from": None, "to": {"depth_cm": 120, "litres_per_cm": 10}}
    }
    calibration = parse_node_config(retained_config(running_broker, garden, "n1a")).calibration
    sm0 = calibration.moisture_for("sm0")
    assert (sm0.dry, sm0.wet, sm0.temp_coeff) == (530, 250, -1.5)
    assert calibration.tank_for("tk0").depth_cm == 120

    # A value that only the current config makes wrong: dry equal to the stored wet.
    result = invoke(node_args(running_broker, garden, "calibrate", "n1a", "--dry", "250"))
    assert result.exit_code == 2
    assert "dry and wet counts must differ" in result.output

    result = invoke(node_args(running_broker, garden, "retire", "n1a"))
    assert result.exit_code == 0, result.output
    assert parse_node_config(retained_config(running_broker, garden, "n1a")).retired
    listed = json.loads(invoke(node_args(running_broker, garden, "list", "--json")).output)["nodes"]
    assert [n["retired"] for n in listed] == [True, False]
    wait_for(lambda: len(nodes.messages) == 4, 5, "four config events")
    assert [e["change"].keys() for e in nodes.messages] == [
        {"bed"}, {"calibration.sm0"}, {"calibration.tk0"}, {"retired"}
    ]  # fmt: skip
    assert {e["who"] for e in nodes.messages} == {"alice"}


def test_unknown_node_exits_2_unless_new(nodes: Listener, running_broker: Broker, garden: str) -> None:
    result = invoke(node_args(running_broker, garden, "set-interval", "n9", "60"))
    assert result.exit_code == 2
    assert "has no node 'n9'" in result.output and "garden node list" in result.output
    result = invoke(node_args(running_broker, garden, "set-interval", "n9", "60", "--new"))
    assert result.exit_code == 0, result.output
    assert parse_node_config(retained_config(running_broker, garden, "n9")).interval_s == 60


def test_a_broken_retained_config_is_reported(nodes: Listener, running_broker: Broker, garden: str) -> None:
    publish_retained(running_broker, {Topics(garden).node_config("n2a"): b"not json"})
    result = invoke(node_args(running_broker, garden, "assign", "n2a", "bed-1"))
    assert result.exit_code == 1
    assert "not a JSON object" in result.output and "mosquitto_pub -r" in result.output
    result = invoke(node_args(running_broker, garden, "list"))
    assert "invalid" in result.output


def test_node_commands_without_a_broker_exit_1(garden: str) -> None:
    result = invoke(["node", "list", "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--garden", garden])
    assert result.exit_code == 1
    assert "cannot reach the MQTT broker" in result.output


# ------------------------------------------------------------------ doctor


def doctor(
    broker_url: str, influx_url: str, garden: str, *more: str, **extra: str | None
) -> tuple[int, dict[str, Any]]:
    result = invoke(["doctor", "--mqtt", broker_url, "--influx", influx_url, "--garden", garden, "--json", *more],
                    **extra)  # fmt: skip
    body = json.loads(result.output)
    return result.exit_code, {c["name"]: c for c in body["checks"]}


def test_doctor_all_good(running_broker: Broker, seeded: Influxd, garden: str) -> None:
    code, checks = doctor(running_broker.url, seeded.url, garden)
    assert code == 0, checks
    assert {name: c["state"] for name, c in checks.items()} == {
        "broker": "ok", "broker auth": "ok", "influxdb": "ok", "influxdb auth": "ok", "database": "ok",
        "write path": "ok", "grafana": "skip", "clock vs InfluxDB": "ok", "newest reading": "ok",
        "watch config": "ok", "latitude": "warn", "notifications": "warn", "commons config": "ok", "hub": "warn",
    }  # fmt: skip
    assert "garden hub run" in checks["hub"]["fix"]
    assert "1.6" in checks["influxdb"]["detail"]
    assert checks["write path"]["detail"].startswith("v1 (/write)")

    result = invoke(["doctor", "--mqtt", running_broker.url, "--influx", seeded.url, "--garden", garden])
    assert result.exit_code == 0
    assert "✓" in result.output and "All checks passed" in result.output


def test_doctor_checks_the_alerts_config(running_broker: Broker, seeded: Influxd, garden: str, tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    config.write_text(
        f'[garden]\nlatitude = 52.5\n[notify.smtp]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        '[[people]]\nname = "ana"\nemail = "ana@example.org"\n[[people]]\nname = "ben"\nntfy = "garden-ben"\n'
    )
    code, checks = doctor(running_broker.url, seeded.url, garden, "--config", str(config))
    assert code == 1
    assert checks["latitude"]["state"] == "ok" and checks["latitude"]["detail"].startswith("52.5°")
    assert checks["notifications"]["detail"] == "2 people: 1 by email, 1 by ntfy"
    assert checks["smtp"]["state"] == "fail" and "[notify.smtp]" in checks["smtp"]["fix"]

    config.write_text('[[people]]\nname = "ana"\nemail = "not an address"\n')
    code, checks = doctor(running_broker.url, seeded.url, garden, "--config", str(config))
    assert code == 1 and checks["watch config"]["state"] == "fail"
    assert checks["watch config"]["detail"].startswith("people[0].email")


def test_doctor_names_the_fix_for_each_failure(running_influxd: Influxd, garden: str) -> None:
    code, checks = doctor(f"mqtt://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", garden)
    assert code == 1
    assert checks["broker"]["state"] == "fail" and "systemctl start mosquitto" in checks["broker"]["fix"]
    assert checks["influxdb"]["state"] == "fail" and "systemctl start influxdb" in checks["influxdb"]["fix"]
    assert checks["database"]["state"] == "skip"

    code, checks = doctor(f"mqtt://127.0.0.1:{free_port()}", running_influxd.url, garden,
                          GARDEN_INFLUX_DATABASE=f"missing_{garden}")  # fmt: skip
    assert checks["database"]["state"] == "fail"
    assert checks["database"]["fix"] == "garden hub init"
    assert checks["influxdb auth"]["state"] == "ok"

    bare = f"bare_{garden}"
    Influx(InfluxSettings(url=running_influxd.url)).execute(f'CREATE DATABASE "{bare}"')
    code, checks = doctor(f"mqtt://127.0.0.1:{free_port()}", running_influxd.url, garden,
                          GARDEN_INFLUX_DATABASE=bare)  # fmt: skip
    assert checks["database"]["state"] == "fail"
    assert "no retention policy daily, hourly, raw" in checks["database"]["detail"]
    assert checks["database"]["fix"] == "garden hub init"

    result = invoke(["doctor", "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--influx", running_influxd.url,
                     "--garden", garden])  # fmt: skip
    assert result.exit_code == 1
    assert "✗" in result.output and "systemctl start mosquitto" in result.output


def test_doctor_sees_a_broker_refusing_us(running_influxd: Influxd, tmp_path: Path, garden: str) -> None:
    port = free_port()
    conf = tmp_path / "closed.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    assert shutil.which(MOSQUITTO) or Path(MOSQUITTO).exists()
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _listening(port), 10, "the closed broker")
        code, checks = doctor(f"mqtt://127.0.0.1:{port}", running_influxd.url, garden)
    finally:
        proc.terminate()
        proc.wait(10)
    assert code == 1
    assert checks["broker"]["state"] == "ok"
    assert checks["broker auth"]["state"] == "fail"
    assert "GARDEN_MQTT_PASSWORD" in checks["broker auth"]["fix"]


def test_doctor_sees_influxdb_refusing_us(running_broker: Broker, tmp_path: Path, garden: str) -> None:
    locked = Influxd(tmp_path)
    locked.conf.write_text(locked.conf.read_text().replace("[http]\n", "[http]\n  auth-enabled = true\n"))
    locked.start()
    try:
        code, checks = doctor(running_broker.url, locked.url, garden, GARDEN_INFLUX_USERNAME="bea",
                              GARDEN_INFLUX_PASSWORD="wrong")  # fmt: skip
    finally:
        locked.stop()
    assert code == 1
    assert checks["influxdb"]["state"] == "ok"
    assert checks["influxdb auth"]["state"] == "fail"
    assert "refused our credentials" in checks["influxdb auth"]["detail"]
    assert "GARDEN_INFLUX_PASSWORD" in checks["influxdb auth"]["fix"]
    assert checks["database"]["state"] == "skip"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_doctor_checks_grafana_when_asked(running_broker: Broker, seeded: Influxd, garden: str) -> None:
    """Grafana cannot run here: the fake in tests/fake_grafana.py answers its API."""
    with running(FakeGrafana()) as fake:
        code, checks = doctor(running_broker.url, seeded.url, garden, GARDEN_GRAFANA_URL=fake.url,
                              GARDEN_GRAFANA_TOKEN=fake.token)  # fmt: skip
        assert code == 0
        assert checks["grafana"]["state"] == "ok" and "11.3.0" in checks["grafana"]["detail"]
        assert checks["grafana datasource"]["state"] == "ok"
        fake.datasources.clear()
        code, checks = doctor(running_broker.url, seeded.url, garden, "--grafana-url", fake.url,
                              GARDEN_GRAFANA_TOKEN=fake.token)  # fmt: skip
        assert code == 1
        assert checks["grafana datasource"]["state"] == "fail"
    code, checks = doctor(running_broker.url, seeded.url, garden, GARDEN_GRAFANA_URL=fake.url)
    assert code == 1
    assert checks["grafana"]["state"] == "fail" and "docker compose up -d grafana" in checks["grafana"]["fix"]
