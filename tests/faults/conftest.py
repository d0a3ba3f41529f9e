"""The fault suite's real parts: Mosquitto with our production queue limits, the
session's InfluxDB, the bridge and the hub as processes, simulated nodes on ptys.

Every case records its exact counts in :data:`FAULT_COUNTS`; they are printed as a
table at the end of the run (and the closing notes quote them).
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from garden.influx import Influx, InfluxSettings
from tests.integration.conftest import BridgeProcess, Broker, Collector, HubProcess
from tests.servers import Influxd

from .tools import PRODUCTION_QUEUES

FAULT_COUNTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FAULT_COUNTS:
        terminalreporter.section("fault counts")
        for line in FAULT_COUNTS:
            terminalreporter.write_line(line)


def record(case: str, **counts: object) -> str:
    line = f"[{case}] " + " ".join(f"{k}={v}" for k, v in counts.items())
    print("\n" + line)
    FAULT_COUNTS.append(line)
    return line


@pytest.fixture(scope="session")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("fault-mosquitto"), queues=PRODUCTION_QUEUES)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def broker(fault_broker: Broker) -> Broker:
    """The session broker, restarted if an earlier case left it stopped."""
    if fault_broker.proc is None:
        fault_broker.start()
    return fault_broker


@pytest.fixture
def garden(request: pytest.FixtureRequest) -> str:
    return f"f{abs(hash(request.node.nodeid)) % 10**8}"


@pytest.fixture
def collector(broker: Broker, garden: str) -> Iterator[Collector]:
    c = Collector(broker.port, garden, f"collector-{garden}")
    c.start()
    yield c
    c.stop()


@pytest.fixture
def database(running_influxd: Influxd, garden: str) -> Iterator[Influx]:
    influx = Influx(InfluxSettings(url=running_influxd.url, database=garden))
    influx.execute(f'CREATE DATABASE "{garden}"')
    yield influx
    influx.close()


# The watch evaluates every 2 s here, so an alert follows its cause within seconds.
FAST_WATCH = "[watch]\nevaluate_every_s = 2\n"


@pytest.fixture
def hub_factory(broker: Broker, running_influxd: Influxd, tmp_path: Path, garden: str, database: Influx):  # type: ignore[no-untyped-def]
    made: list[HubProcess] = []

    def make(config: str = FAST_WATCH, wrapper: list[str] | None = None, start: bool = True) -> HubProcess:
        hub = HubProcess(broker, running_influxd, tmp_path, garden, garden, config=config, wrapper=wrapper)
        made.append(hub)
        if start:
            hub.start()
            hub.wait_online(broker)
        return hub

    yield make
    for hub in made:
        hub.stop(signal.SIGTERM)


@pytest.fixture
def bridge_factory() -> Iterator[list[BridgeProcess]]:
    made: list[BridgeProcess] = []
    yield made
    for b in made:
        if b.proc is not None:
            b.kill(signal.SIGTERM)


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_times(text: str, needle: str) -> list[float]:
    """Wall-clock times (epoch s) of the log lines of ours that contain ``needle``."""
    out = []
    for line in text.splitlines():
        m = LOG_TIME.match(line)
        if m and needle in line:
            out.append(dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def wait_until(predicate, timeout: float, interval: float = 0.1) -> float | None:  # type: ignore[no-untyped-def]
    """Seconds until ``predicate()`` held, or None if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


class Listener:
    """Every message on some topic filters, with the time it came: alerts, statuses."""

    def __init__(self, broker: Broker, filters: list[str]) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.reconnect_delay_set(0.2, 1)
        ready = threading.Event()

        def on_connect(c, u, f, reason, p):  # type: ignore[no-untyped-def]
            c.subscribe([(f, 1) for f in filters])
            ready.set()

        def on_message(c, u, m):  # type: ignore[no-untyped-def]
            with self.lock:
                self.messages.append((time.time(), m.topic, bytes(m.payload)))

        client.on_connect, client.on_message = on_connect, on_message
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        assert ready.wait(5), "listener did not connect"
        self.client = client

    def bodies(self, part: str) -> list[tuple[float, dict[str, object]]]:
        import json

        with self.lock:
            return [(t, json.loads(p)) for t, topic, p in self.messages if part in topic and p]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def listener_factory(broker: Broker) -> Iterator:  # type: ignore[type-arg]
    made: list[Listener] = []

    def make(filters: list[str], on: Broker | None = None) -> Listener:
        made.append(Listener(on or broker, filters))
        return made[-1]

    yield make
    for one in made:
        one.close()
