"""Tools for tests that run our Mosquitto configs: an MQTT v5 client whose calls wait
for the broker's answer (CONNACK, PUBACK, SUBACK) and return its reason code, and
Debian's main mosquitto.conf moved into a temp dir (the native drop-in runs under it).
Used by tests/deploy (the compose and native brokers) and tests/security (a garden
locked down by ``garden secure init``)."""

from __future__ import annotations

import getpass
import queue
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Client:
    """An MQTT v5 client whose calls wait for the broker's answer and return its reason code."""

    def __init__(
        self, port: int, user: str | None, password: str | None = None, client_id: str = "",
        ca: Path | None = None, tls: bool = False,
    ) -> None:  # fmt: skip
        self.port = port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.1)  # type: ignore[arg-type]
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls:
            self.client.tls_set(ca_certs=str(ca) if ca else None, cert_reqs=ssl.CERT_REQUIRED)
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.acks: dict[int, int] = {}
        self.messages: queue.SimpleQueue[tuple[str, bytes, bool]] = queue.SimpleQueue()
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        self.subacks: dict[int, list[int]] = {}
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, [r.value for r in rcs])
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.connack = reason
        self.connected.set()

    def connect(self, host: str = "127.0.0.1") -> ReasonCode:
        self.client.connect(host, self.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.acks, 5, f"PUBACK for {topic}")
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        wait_until(lambda: mid in self.subacks, 5, f"SUBACK for {topic}")
        return self.subacks[mid][0]

    def received(self, wait: float, stop_after: int = 0) -> list[tuple[str, bytes, bool]]:
        """What arrives within ``wait`` seconds (or as soon as ``stop_after`` messages have)."""
        end, got = time.monotonic() + wait, []
        while (left := end - time.monotonic()) > 0 and not (stop_after and len(got) >= stop_after):
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# Debian's /etc/mosquitto/mosquitto.conf, for machines without the package's file.
DEBIAN_MAIN_CONF = """\
pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
"""


def adapted(text: str, replacements: dict[str, str], extra: str = "") -> str:
    """``text`` with whole lines replaced; every line to replace must be there."""
    lines = text.splitlines()
    for old, new in replacements.items():
        assert old in lines, f"expected the line {old!r} in the config"
        lines[lines.index(old)] = new
    return "\n".join(lines) + "\n" + extra


def debian_main_conf(workdir: Path) -> str:
    """Debian's main mosquitto.conf (the machine's, or its text above), moved into ``workdir``:
    pid file, persistence, log and the conf.d it includes; run as whoever runs the tests."""
    debian = Path("/etc/mosquitto/mosquitto.conf")
    main = debian.read_text() if debian.exists() else DEBIAN_MAIN_CONF
    return adapted(
        main,
        {
            "pid_file /run/mosquitto/mosquitto.pid": f"pid_file {workdir}/mosquitto.pid",
            "persistence_location /var/lib/mosquitto/": f"persistence_location {workdir}/data/",
            "log_dest file /var/log/mosquitto/mosquitto.log": f"log_dest file {workdir}/mosquitto.log",
            "include_dir /etc/mosquitto/conf.d": f"include_dir {workdir}/conf.d",
        },
        # The tests' temp dir is private to whoever runs them.
        extra=f"user {getpass.getuser()}\n",
    )
