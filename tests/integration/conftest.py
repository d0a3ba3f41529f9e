"""Real parts for integration tests: one Mosquitto per session, bridges as processes.

The broker is the Debian ``mosquitto`` binary on a free loopback port, with
persistence on, so a test can stop and restart it and a persistent
subscriber session survives, as in production.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from garden.influx import Influx, InfluxSettings
from tests.servers import Influxd

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# Exact counts from each pipeline test, printed at the end of every run.
COUNTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if COUNTS:
        terminalreporter.section("pipeline counts")
        for line in COUNTS:
            terminalreporter.write_line(line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Broker:
    def __init__(self, workdir: Path, queues: str = "max_queued_messages 100000\nmax_inflight_messages 20\n") -> None:
        if not os.path.exists(MOSQUITTO):
            pytest.fail("mosquitto is not installed: run scripts/setup.sh (apt-get install mosquitto)")
        self.port = free_port()
        self.workdir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Run as whoever runs the tests, so it can write to their temp dir.
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/data/\n"
            "autosave_interval 1\n"
            f"{queues}"
            "set_tcp_nodelay true\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)])
        wait_for(self._accepts, 10, "mosquitto to listen")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def running_broker(broker: Broker) -> Broker:
    """The session broker, restarted if an earlier test left it stopped."""
    if broker.proc is None:
        broker.start()
    return broker


@dataclass
class Collector:
    """A persistent-session QoS1 subscriber that records every telemetry message."""

    port: int
    garden: str
    client_id: str
    messages: list[dict[str, object]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    retained: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.reconnect_delay_set(0.2, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        subscribed = threading.Event()

        def on_connect(c, u, f, reason, p):  # type: ignore[no-untyped-def]
            base = f"garden/{self.garden}"
            c.subscribe(
                [
                    (f"{base}/node/+/telemetry", 1),
                    (f"{base}/bridge/+/status", 1),
                    (f"{base}/node/+/status", 1),
                ]
            )
            subscribed.set()

        def on_message(c, u, m):  # type: ignore[no-untyped-def]
            with self.lock:
                if m.topic.endswith("/telemetry"):
                    self.raw.append(bytes(m.payload))
                    self.messages.append(json.loads(m.payload))
                else:
                    self.retained[m.topic] = bytes(m.payload)

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        client.loop_start()
        self.client = client
        assert subscribed.wait(5), "collector did not connect"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def keys(self) -> list[tuple[str, int, int]]:
        with self.lock:
            return [(str(m["node"]), int(m["boot"]), int(m["seq"])) for m in self.messages]  # type: ignore[call-overload]

    def status(self, topic_part: str) -> dict[str, object]:
        with self.lock:
            for topic, payload in self.retained.items():
                if topic_part in topic:
                    return json.loads(payload)  # type: ignore[no-any-return]
        return {}


@pytest.fixture
def garden(request: pytest.FixtureRequest) -> str:
    """A garden id of the test's own, so retained state from other tests never mixes in."""
    return f"t{abs(hash(request.node.nodeid)) % 10**8}"


@pytest.fixture
def collector(running_broker: Broker, garden: str) -> Iterator[Collector]:
    c = Collector(running_broker.port, garden, f"collector-{garden}")
    c.start()
    yield c
    c.stop()


class BridgeProcess:
    """``garden bridge run`` as its own process, so a test can SIGKILL it."""

    def __init__(
        self, ports: list[Path], broker: Broker, workdir: Path, garden: str, *, url: str = "", config: str = ""
    ) -> None:
        """``url``: the broker through something else (a proxy); ``config``: a garden.toml's text."""
        self.cmd = [sys.executable, "-m", "garden", "bridge", "run", "--mqtt", url or broker.url, "--garden", garden,
                    "--spool", str(workdir / "spool.sqlite3"), "-vv"]  # fmt: skip
        for port in ports:
            self.cmd += ["--port", str(port)]
        self.log = workdir / "bridge.log"
        self.spool = workdir / "spool.sqlite3"
        config_file = workdir / "bridge.toml"
        config_file.write_text(config)
        self.env = {**os.environ, "GARDEN_BRIDGE_ID": "test-bridge", "GARDEN_CONFIG": str(config_file)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(15)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[list[BridgeProcess]]:
    made: list[BridgeProcess] = []
    yield made
    for b in made:
        if b.proc is not None:
            b.kill(signal.SIGTERM)


# ------------------------------------------------------------------- the hub


class HubProcess:
    def __init__(
        self, broker: Broker, influxd: Influxd, workdir: Path, garden: str, database: str, *,
        config: str = "", wrapper: list[str] | None = None,
    ) -> None:  # fmt: skip
        """``config``: a garden.toml's text; ``wrapper``: a command that runs the hub's."""
        self.cmd = [*(wrapper or []), sys.executable, "-m", "garden", "hub", "run", "--mqtt", broker.url,
                    "--influx", influxd.url, "--garden", garden, "-vv"]  # fmt: skip
        self.log = workdir / "hub.log"
        self.garden = garden
        self.data_dir = workdir / "hub-data"
        config_file = workdir / "hub.toml"
        config_file.write_text(config)
        self.env = {
            **os.environ,
            "GARDEN_CONFIG": str(config_file),
            "GARDEN_DATA_DIR": str(self.data_dir),
            "GARDEN_HUB_ID": "test-hub",
            "GARDEN_INFLUX_DATABASE": database,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def wait_online(self, broker: Broker) -> None:
        """Until the hub's retained status says online: it is subscribed by then."""
        from firmware_bridge.mqtt_link import parse_broker_url, read_retained

        def online() -> bool:
            found = read_retained(parse_broker_url(broker.url), (f"garden/{self.garden}/hub/+/status",), wait_s=0.2)
            return any(json.loads(p).get("state") == "online" for p in found.values())

        wait_for(online, 20, "the hub to come online")

    def status_body(self, broker: Broker) -> dict[str, object]:
        """The hub's retained status (its counters, its backlog)."""
        from firmware_bridge.mqtt_link import parse_broker_url, read_retained

        found = read_retained(parse_broker_url(broker.url), (f"garden/{self.garden}/hub/+/status",), wait_s=0.3)
        assert found, "no hub status"
        return json.loads(next(iter(found.values())))  # type: ignore[no-any-return]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(20)
            self.proc = None


@pytest.fixture
def database(running_influxd: Influxd, garden: str) -> Iterator[Influx]:
    influx = Influx(InfluxSettings(url=running_influxd.url, database=garden))
    influx.execute(f'CREATE DATABASE "{garden}"')
    yield influx
    influx.close()


@pytest.fixture
def hub(  # type: ignore[no-untyped-def]
    running_broker: Broker, running_influxd: Influxd, tmp_path: Path, garden: str, database: Influx
):
    process = HubProcess(running_broker, running_influxd, tmp_path, garden, garden)
    process.start()
    process.wait_online(running_broker)
    yield process
    process.stop()


def stored_keys(influx: Influx, *, settled: bool = False) -> list[tuple[str, int, int]]:
    """(node, boot, seq) of every soil_moisture point: one point per reading.

    InfluxDB 1.x applies a write field by field, so a query that runs while a
    batch is being written can see a point's ``seq`` before its ``boot``. While
    writes go on, such half-seen points are skipped; once ``settled``, every
    point must have both.
    """
    rows = influx.query('SELECT "seq", "boot" FROM "soil_moisture" GROUP BY "node"')
    broken = [(s.tags, r) for s in rows for r in s.records() if r["boot"] is None or r["seq"] is None]
    assert not (settled and broken), f"points missing seq or boot: {broken[:3]}"
    return [
        (s.tags["node"], int(r["boot"]), int(r["seq"]))
        for s in rows
        for r in s.records()
        if r["boot"] is not None and r["seq"] is not None
    ]
