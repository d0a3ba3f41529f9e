"""What the soak watches: processes (from /proc), logs, retained statuses, and InfluxDB.

- :func:`process_sample`: RSS, file descriptors and threads
  (``tests.faults.tools.proc_stats``) and CPU seconds of a process;
- :class:`LogWatch`: the bridge's and the hub's log lines that mark a state
  change (connected, connection lost, InfluxDB down or back, a port back),
  with their time, read as the logs grow;
- :class:`StatusMonitor`: the retained bridge and hub statuses (spool depth,
  backlog, counters), from a client of its own on the broker;
- :func:`stored_keys`, :func:`stored_count`: ``(node, boot, seq)`` of the
  ``soil_moisture`` points (one per reading), as
  ``tests/integration/conftest.py`` reads them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_harness import cpu_seconds
from benchmarks.soak.ledger import Tail
from tests.faults.tools import proc_stats

Key = tuple[str, int, int]


# --------------------------------------------------------------- processes


def process_sample(pid: int | None) -> dict[str, Any] | None:
    """``rss_kb``, ``fds``, ``threads``, ``cpu_s`` of a live process; None if it is gone."""
    if not pid:
        return None
    try:
        stats = proc_stats(pid)
    except (OSError, AssertionError):
        return None
    return {"rss_kb": stats.rss_kb, "fds": stats.fds, "threads": stats.threads, "cpu_s": cpu_seconds(pid)}


# -------------------------------------------------------------------- logs

# "2026-11-26 15:02:02,123 INFO    firmware_bridge.service: connected to mqtt://..."
LINE_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+)\s+([\w.]+): (.*)$")

# (process, logger, message prefix) -> event name
MARKS = {
    ("bridge", "firmware_bridge.service", "connected to "): "connected",
    ("bridge", "firmware_bridge.service", "broker connection lost"): "disconnected",
    ("bridge", "firmware_bridge.service", "port "): "port_back",  # "port %s back after %.1f s, now %s"
    ("hub", "garden.hub", "connected to "): "connected",
    ("hub", "garden.hub", "broker connection lost"): "disconnected",
    ("hub", "garden.hub", "InfluxDB unavailable"): "influx_down",
    ("hub", "garden.hub", "InfluxDB is back"): "influx_back",
}


@dataclass(frozen=True, slots=True)
class Mark:
    t: float
    event: str
    text: str


@dataclass
class LogWatch:
    """One process's log, read as it grows: its marks, and its warnings and errors by kind."""

    name: str
    path: Path
    marks: list[Mark] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)  # "LEVEL logger: message head" -> count
    examples: dict[str, str] = field(default_factory=dict)  # the first full line of each kind
    tracebacks: int = 0

    def __post_init__(self) -> None:
        self._tail = Tail(self.path)

    def refresh(self) -> None:
        for raw in self._tail.new_lines():
            self._line(raw.decode(errors="replace"))

    def _line(self, line: str) -> None:
        if line.startswith("Traceback"):
            self.tracebacks += 1
            self.examples.setdefault("Traceback", line)
        m = LINE_RE.match(line)
        if not m:
            return
        stamp, ms, level, logger, message = m.groups()
        t = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(ms) / 1000
        for (who, name, prefix), event in MARKS.items():
            if who == self.name and logger == name and message.startswith(prefix):
                if event == "port_back" and " back after " not in message:
                    continue
                self.marks.append(Mark(t, event, message))
        if level in ("WARNING", "ERROR", "CRITICAL"):
            # Numbers and paths vary; the kind is the message with them blanked.
            kind = f"{level} {logger}: " + re.sub(r"[\d.]+|/[\w/.-]+", "#", message)[:90]
            self.problems[kind] = self.problems.get(kind, 0) + 1
            self.examples.setdefault(kind, line)

    def first(self, event: str, after: float, text: str = "") -> Mark | None:
        for mark in self.marks:
            if mark.event == event and mark.t >= after and text in mark.text:
                return mark
        return None


# ---------------------------------------------------------------- statuses


class StatusMonitor:
    """The latest retained bridge and hub status, from a client of our own (it reconnects by itself)."""

    def __init__(self, host: str, port: int, garden: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._topics = [(f"garden/{garden}/bridge/+/status", 1), (f"garden/{garden}/hub/+/status", 1)]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.on_connect = lambda c, u, f, reason, p: c.subscribe(self._topics) if not reason.is_failure else None
        client.on_message = self._on_message
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        self._client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with contextlib.suppress(ValueError):
            body = json.loads(message.payload)
            with self._lock:
                self.latest["bridge" if "/bridge/" in message.topic else "hub"] = body

    def get(self, which: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest.get(which, {}))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        with contextlib.suppress(Exception):
            self._client.loop_stop()


# ---------------------------------------------------------------- InfluxDB


def stored_keys(influx: Any, since_ms: int | None = None, *, settled: bool = False) -> list[Key]:
    """``(node, boot, seq)`` of every ``soil_moisture`` point (since ``since_ms``), duplicates kept.

    InfluxDB 1.x applies a write field by field, so a query while a batch is
    being written can see a point's ``seq`` before its ``boot``: such points
    are skipped while writes go on; once ``settled``, there must be none.
    """
    where = f" WHERE time >= {int(since_ms)}ms" if since_ms is not None else ""
    rows = influx.query(f'SELECT "seq", "boot" FROM "soil_moisture"{where} GROUP BY "node"')
    broken = [(s.tags, r) for s in rows for r in s.records() if r["boot"] is None or r["seq"] is None]
    if settled and broken:
        raise AssertionError(f"points missing seq or boot: {broken[:3]}")
    return [
        (s.tags["node"], int(r["boot"]), int(r["seq"]))
        for s in rows
        for r in s.records()
        if r["boot"] is not None and r["seq"] is not None
    ]


def stored_count(influx: Any) -> int | None:
    """Points in ``soil_moisture`` (one per reading stored); None if InfluxDB does not answer."""
    from garden.influx import InfluxError

    try:
        rows = influx.query('SELECT count("seq") FROM "soil_moisture"')
    except InfluxError:
        return None
    return int(rows[0].values[0][1]) if rows and rows[0].values else 0
