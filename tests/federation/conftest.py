"""Federation's real parts on one machine: a regional Mosquitto over TLS with passwords and
an ACL, two garden Mosquittos whose uplinks `garden federate` wrote, and the regional hub.

Every file comes from `garden federate` run as a CLI process, as an operator would.
The exact counts of each case are printed as "federation counts" at the end of the run.
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
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.servers import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
FEDERATION_COUNTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FEDERATION_COUNTS:
        terminalreporter.section("federation counts")
        for line in FEDERATION_COUNTS:
            terminalreporter.write_line(line)


def record(line: str) -> None:
    print("\n" + line)
    FEDERATION_COUNTS.append(line)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def garden_cli(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`garden <args> --json` as its own process; its JSON output."""
    done = subprocess.run(
        [sys.executable, "-m", "garden", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"garden {' '.join(args)} failed: {done.stderr}"
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class Mosquitto:
    """A Mosquitto 2.0.11 from a main file of ours plus a conf.d of generated files."""

    def __init__(self, workdir: Path, port: int, main: str) -> None:
        self.workdir = workdir
        self.port = port
        self.conf_d = workdir / "conf.d"
        self.conf_d.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {workdir}/data/\n"
            "autosave_interval 1\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            "log_type all\n"
            f"{main}"
            f"include_dir {self.conf_d}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stderr=subprocess.DEVNULL)
        wait_for(self._accepts, 10, f"mosquitto on port {self.port}")

    def _accepts(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"mosquitto stopped: see {self.workdir}"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
            self.proc = None

    def log(self) -> str:
        return (self.workdir / "mosquitto.log").read_text(errors="replace")


class Listener:
    """A QoS 1 subscriber with a persistent session, counting what it gets per topic."""

    def __init__(self, port: int, client_id: str, topics: list[str], *, user: str | None = None,
                 password: str | None = None, ca: Path | None = None) -> None:  # fmt: skip
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        if user is not None:
            self.client.username_pw_set(user, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))

        def on_connect(c: mqtt.Client, u: object, f: object, reason: object, p: object) -> None:
            c.subscribe([(t, 1) for t in topics])

        def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), f"{client_id} did not subscribe"

    def telemetry(self) -> Counter[tuple[str, str, int]]:
        """How often each (garden, node, seq) arrived."""
        with self.lock:
            return Counter(
                (t.split("/")[1], str(json.loads(p)["node"]), int(json.loads(p)["seq"]))
                for t, p, _ in self.messages
                if t.endswith("/telemetry")
            )

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("federation")


@pytest.fixture(scope="module")
def stopper() -> Iterator[list[Any]]:
    """Whatever is appended (a Mosquitto, a process, a Listener) is stopped at the end."""
    started: list[Any] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, subprocess.Popen):
            if thing.poll() is None:
                thing.send_signal(signal.SIGTERM)
                try:
                    thing.wait(20)
                except subprocess.TimeoutExpired:
                    thing.kill()
                    thing.wait(5)
        elif isinstance(thing, Mosquitto):
            thing.stop()
        else:
            thing.close()


__all__ = ["Listener", "Mosquitto", "free_port", "garden_cli", "record", "wait_for"]
