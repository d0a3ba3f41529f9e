#!/usr/bin/env python3
"""End-to-end latency at a steady rate: ptys -> ``garden bridge run`` -> Mosquitto -> ``garden hub run`` -> InfluxDB.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_latency.py [--runs 3] [--rate 1000] [--seconds 30] [--nodes 20] [--json out.json]

One private Mosquitto and one private influxd (temp dirs, free loopback
ports) for the whole benchmark; for each run, in separate processes:

* the hub, ``garden hub run``, with its defaults (the watch and the commons
  too), a fresh database, and its own garden name, so no MQTT session is
  shared between runs;
* a *feeder* (this script in ``--_feeder`` mode): one pty pair per simulated
  node behind a symlink (the simulator's :class:`PtyPort`), carrying lines
  made beforehand by :class:`SimNode` (no faults). Once the bridge has every
  port open, it writes each node's hello, then the readings **paced** at
  ``--rate`` readings/s in all, spread evenly over the nodes and in time.
  It records, for each ``(node, seq)``, the moment (``time.time_ns``) the
  whole line was in the pty; what a full pty does not take waits (flow
  control) and is recorded when it goes. It reads what the bridge writes
  back (GK frames), as a node does;
* the bridge, ``garden bridge run``, with its defaults.

Both run with the ``GARDEN_*`` environment stripped and an empty
``GARDEN_CONFIG``. In this process a poller asks InfluxDB every
``--poll-ms`` (50) for the new ``soil_moisture`` points (one per reading)
and records when each ``(node, seq)`` is first seen. Latency is that time
less the write time: the same clock (``CLOCK_REALTIME``) in every process on
the machine. CPU is utime + stime from ``/proc/<pid>/stat`` over the steady
window (from ``--warmup`` seconds after the first reading was written to the
last write); RSS is ``VmHWM`` (the peak since exec) just before the stop,
``VmRSS`` at the end of that window, and ``ru_maxrss`` from ``wait4`` (which
Linux never lets fall below this process's own peak: see README.md).

The exit status is 1 when, in any run, a reading written is not stored
exactly once (count, duplicates, missing), or the bridge or the hub exits
non-zero; 2 when a run cannot be set up. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_bridge import make_feeds
from bench_harness import (
    BenchError,
    Broker,
    Influxd,
    cell,
    cpu_of,
    database,
    drop,
    load_1m,
    log,
    machine_info,
    machine_summary,
    quiet,
    reap,
    table,
    wait_until,
    warn_invalid,
    write_results,
)

BRIDGE_ID = "bench"
HUB_ID = "bench"
MEASUREMENT = "soil_moisture"  # one point per reading (the simulated nodes' sm0)
MAX_READINGS = 150_000  # stays well under the bridge spool's default max_rows (200,000)
TARGET_P99_MS = 1500.0
TARGET_HUB_RSS_MIB = 150.0


# ------------------------------------------------------------------- feeder


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def feeder_main(directory: Path, rate: float, ledger_path: Path, feed_files: list[str]) -> int:
    """Child process: pty pairs behind symlinks; hellos, then every reading paced at ``rate``/s in all.

    Reading ``k`` (0-based, round-robin over the nodes) is due ``k / rate`` s
    after the start. When a line is wholly in its pty, ``(node, seq,
    time.time_ns(), lateness ns)`` goes in the ledger, written to
    ``ledger_path`` at the end. It reads (and drops) what the bridge writes
    to the nodes (a GK frame to each every 100 ms), as a node does: a port
    whose buffer fills blocks the bridge's loop in its writes. Keeps the
    ports open, once all is written, until its stdin closes, so no line is
    lost in the kernel's buffer.
    """
    from firmware_bridge.simulator.pty_runner import SETTLE_S, PtyPort

    nodes = [Path(f).read_bytes().splitlines(keepends=True) for f in feed_files]
    names = [Path(f).stem for f in feed_files]
    n_nodes, per_node = len(nodes), len(nodes[0]) - 1
    if any(len(lines) - 1 != per_node for lines in nodes):
        say(event="error", error="the nodes' feeds differ in length")
        return 1
    total = n_nodes * per_node
    directory.mkdir(parents=True, exist_ok=True)
    ports = [PtyPort(directory / name) for name in names]
    fds = [p.master for p in ports]
    try:
        say(event="ready", ports=[str(p.link) for p in ports])
        end = time.monotonic() + 60
        while not all(p.host_present() for p in ports):
            if time.monotonic() > end:
                say(event="error", error="the bridge never opened every port")
                return 1
            time.sleep(0.01)
        time.sleep(SETTLE_S)  # pyserial flushes its input when it opens a port
        for fd, lines in zip(fds, nodes, strict=True):  # the hellos: small, the ptys are empty
            os.write(fd, lines[0])
        time.sleep(0.5)  # the bridge has every node's hello before the first reading

        listen = select.poll()  # what the bridge sends the nodes
        for fd in fds:
            listen.register(fd, select.POLLIN)
        from_bridge = 0

        def drain(timeout_s: float) -> None:
            nonlocal from_bridge
            for fd, ev in listen.poll(math.ceil(max(0.0, timeout_s) * 1000)):
                if ev & select.POLLIN:
                    with contextlib.suppress(BlockingIOError):
                        from_bridge += len(os.read(fd, 65536))
                elif ev & (select.POLLHUP | select.POLLERR):
                    listen.unregister(fd)  # the bridge closed it: said below (or at its stop)

        pending = [bytearray() for _ in range(n_nodes)]
        queued = [0] * n_nodes  # bytes queued per node, cumulative
        sent = [0] * n_nodes  # bytes written per node, cumulative
        marks: list[deque[tuple[int, int, float]]] = [deque() for _ in range(n_nodes)]  # (end, seq, due)
        led_node, led_seq, led_t, led_late = array("H"), array("l"), array("q"), array("q")
        t0 = time.monotonic() + 0.01
        say(event="writing", t_ns=time.time_ns() + 10_000_000, total=total)
        k = 0
        next_host_check = t0 + 1.0
        while k < total or any(pending):
            now = time.monotonic()
            due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
            while k < due:
                i, seq = k % n_nodes, k // n_nodes + 1
                line = nodes[i][seq]
                pending[i] += line
                queued[i] += len(line)
                marks[i].append((queued[i], seq, t0 + k / rate))
                k += 1
            for i in range(n_nodes):
                if not pending[i]:
                    continue
                try:
                    n = os.write(fds[i], pending[i])
                except BlockingIOError:  # the pty is full: the bridge is behind; try again
                    continue
                t_ns, mono = time.time_ns(), time.monotonic()
                del pending[i][:n]
                sent[i] += n
                m = marks[i]
                while m and m[0][0] <= sent[i]:
                    _, seq, due_t = m.popleft()
                    led_node.append(i)
                    led_seq.append(seq)
                    led_t.append(t_ns)
                    led_late.append(int((mono - due_t) * 1e9))
            now = time.monotonic()
            if now > next_host_check:
                next_host_check = now + 1.0
                gone = [names[i] for i, p in enumerate(ports) if not p.host_present()]
                if gone:
                    say(event="error", error=f"port(s) {gone} closed by the host", written=len(led_t))
                    return 1
            if k < total:
                delay = t0 + k / rate - time.monotonic()
                drain(min(delay, 0.001) if any(pending) else delay)
            elif any(pending):
                drain(0.001)
        ledger_path.write_text(
            "".join(
                f"{names[i]} {s} {t} {late}\n" for i, s, t, late in zip(led_node, led_seq, led_t, led_late, strict=True)
            )
        )
        say(event="done", t_ns=time.time_ns(), written=len(led_t), from_bridge=from_bridge)
        listen.register(sys.stdin.fileno(), select.POLLIN)
        while True:  # until the parent closes our stdin
            for fd, ev in listen.poll(100):
                if fd == sys.stdin.fileno():
                    if not os.read(fd, 4096):
                        return 0
                elif ev & select.POLLIN:
                    with contextlib.suppress(OSError):
                        from_bridge += len(os.read(fd, 65536))
                else:
                    listen.unregister(fd)  # the bridge has stopped
    finally:
        for p in ports:
            with contextlib.suppress(OSError):
                p.close()


class Child:
    """A child process reporting JSON lines on its stdout."""

    def __init__(self, workdir: Path, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.logfile = workdir / f"{name}.log"
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        with self.logfile.open("ab") as errors:
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            )
        self.pid = self.proc.pid
        self.rusage: Any = None
        self.exit: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def next_event(self, timeout: float, want: str, watch: list[Child] | None = None) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                for other in watch or []:
                    if other.proc.poll() is not None:
                        raise BenchError(
                            f"the {other.name} exited ({other.proc.returncode}):\n{other.tail()}"
                        ) from None
                if time.monotonic() > end:
                    raise BenchError(f"{self.name}: no {want!r} in {timeout:g}s") from None
                continue
            if event["event"] == want:
                return event
            if event["event"] in ("error", "exit"):
                raise BenchError(f"{self.name}: {event}; see {self.logfile}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Close its stdin, signal it (0: none), reap it with wait4 for its rusage."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.proc.returncode is None:
            self.exit, rusage = reap(self.proc, timeout, sig=sig)
            self.rusage = rusage if rusage is not None else self.rusage
        return self.exit if self.exit is not None else self.proc.returncode

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""


def garden_cmd(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "garden"  # the venv's console script
    return [*([str(exe)] if exe.exists() else [sys.executable, "-m", "garden"]), *args]


def garden_env(config: Path, section: str, lines: str, **extra: str) -> dict[str, str]:
    """No GARDEN_* from the caller's shell, and a config file with nothing but ``lines`` (default: empty).

    So neither /etc/garden/garden.toml nor ~/.config's is read.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
    config.write_text(f"[{section}]\n{lines}\n" if lines else "")
    env.update(GARDEN_CONFIG=str(config), **extra)
    return env


def hub_online(broker: Broker, garden: str, hub: Child) -> None:
    """Until the hub's retained status says online: it is subscribed by then."""
    from firmware_bridge.mqtt_link import parse_broker_url, read_retained

    def online() -> bool:
        if hub.proc.poll() is not None:
            raise BenchError(f"the hub exited ({hub.proc.returncode}):\n{hub.tail()}")
        found = read_retained(parse_broker_url(broker.url), (f"garden/{garden}/hub/+/status",), wait_s=0.2)
        for payload in found.values():
            with contextlib.suppress(ValueError):
                if json.loads(payload).get("state") == "online":
                    return True
        return False

    wait_until(online, 60, "the hub to come online", interval=0.1)


def vm_mib(pid: int, key: str) -> float | None:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak since the process's exec) from /proc/<pid>/status."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


# ------------------------------------------------------------------- poller


class Poller(threading.Thread):
    """Asks InfluxDB every ``interval`` s for the new points; records when each ``(node, seq)`` is first seen.

    The query starts at the oldest of the nodes' *contiguous* points (the
    point of each node's highest seq with every lower seq seen), so each poll
    fetches little more than what is new, and a point that shows up late, out
    of order, is still found.
    """

    def __init__(self, url: str, db: str, nodes: list[str], since_ms: int, interval: float) -> None:
        super().__init__(name="poller", daemon=True)
        import urllib3

        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=3, read=30))
        self.url = f"{url}/query"
        self.db = db
        self.interval = interval
        self.seen: dict[tuple[str, int], tuple[int, int]] = {}  # (node, seq) -> (seen ns, point ms)
        self.contig: dict[str, tuple[int, int]] = {n: (0, since_ms) for n in nodes}  # node -> (seq, point ms)
        self.moved_ts: dict[tuple[str, int], int] = {}  # seen again under another timestamp
        self.cycles: list[float] = []  # seconds each query took
        self.rows = 0
        self.error: str | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.http.clear()

    def poll_once(self) -> None:
        cursor = min(ms for _, ms in self.contig.values())
        q = f'SELECT "seq","node" FROM "{MEASUREMENT}" WHERE time >= {int(cursor)}ms'  # our own literals only
        t_sent = time.monotonic()
        response = self.http.request("GET", self.url, fields={"db": self.db, "q": q, "epoch": "ms"})
        t_ns = time.time_ns()
        self.cycles.append(time.monotonic() - t_sent)
        if response.status != 200:
            raise BenchError(f"/query answered {response.status}: {response.data[:200]!r}")
        body = json.loads(response.data)
        result = body["results"][0]
        if "error" in result:
            raise BenchError(f"/query: {result['error']}")
        for series in result.get("series", []):
            cols = series["columns"]
            it, iseq, inode = cols.index("time"), cols.index("seq"), cols.index("node")
            for row in series["values"]:
                key = (str(row[inode]), int(row[iseq]))
                self.rows += 1
                first = self.seen.get(key)
                if first is None:
                    self.seen[key] = (t_ns, int(row[it]))
                elif first[1] != int(row[it]):
                    self.moved_ts[key] = int(row[it])
        for node, (seq, ms) in self.contig.items():
            while (node, seq + 1) in self.seen:
                seq += 1
                ms = self.seen[(node, seq)][1]
            self.contig[node] = (seq, ms)

    def run(self) -> None:
        next_t = time.monotonic()
        while not self._halt.is_set():
            try:
                self.poll_once()
            except Exception as err:  # reported by the run, which stops
                self.error = f"{type(err).__name__}: {err}"
                return
            next_t += self.interval
            delay = next_t - time.monotonic()
            if delay < 0:
                next_t = time.monotonic()
            else:
                self._halt.wait(delay)


class Tap:
    """With ``--mqtt-split``: a paho subscriber (QoS 0) that notes when each telemetry message reaches it.

    It splits the latency at the broker: bridge -> broker and broker ->
    InfluxDB. It costs the broker a second delivery of every message and this
    process some CPU, so it is off by default.
    """

    def __init__(self, port: int, garden: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = f"garden/{garden}/node/+/telemetry"
        self.arrivals: list[tuple[int, bytes]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-tap-{os.getpid()}-{garden}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=0)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.arrivals.append((time.time_ns(), bytes(m.payload)))
        self.client.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, 10, "the tap's SUBACK")

    def stop(self) -> dict[tuple[str, int], int]:
        """Disconnect; the first arrival of each (node, seq), in ns."""
        with contextlib.suppress(Exception):
            self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.loop_stop()
        first: dict[tuple[str, int], int] = {}
        for t_ns, payload in self.arrivals:
            body = json.loads(payload)
            first.setdefault((str(body["node"]), int(body["seq"])), t_ns)
        return first


def stored_keys(url: str, db: str, nodes: list[str]) -> tuple[int, set[tuple[str, int]]]:
    """Every soil_moisture point, node by node: (points, distinct (node, seq))."""
    import urllib3

    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=3, read=60))
    points, keys = 0, set()
    try:
        for node in nodes:  # names we made ("bed-N"): safe as literals
            q = f'SELECT "seq" FROM "{MEASUREMENT}" WHERE "node" = \'{node}\''
            response = http.request("GET", f"{url}/query", fields={"db": db, "q": q, "epoch": "ms"})
            result = json.loads(response.data)["results"][0]
            if "error" in result or result.get("partial"):
                raise BenchError(f"/query for {node}: {result}")
            for series in result.get("series", []):
                for _, seq in series["values"]:
                    points += 1
                    keys.add((node, int(seq)))
    finally:
        http.clear()
    return points, keys


# ---------------------------------------------------------------------- run


@dataclass
class RunResult:
    run: int
    loadavg_1m: float
    written: int = 0
    stored: int = 0
    distinct: int = 0
    seen_by_poller: int = 0
    fed_per_s: float = 0.0  # readings written / (last write - first write)
    feeder_late_p99_ms: float | None = None  # written this much after its due time
    feeder_late_max_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    steady_p99_ms: float | None = None  # readings written in the steady window only
    # the two parts, split at the point's timestamp (the bridge's receive time, ms)
    intake_p50_ms: float | None = None  # pty write -> bridge timestamp
    intake_p99_ms: float | None = None
    to_broker_p50_ms: float | None = None  # with --mqtt-split: bridge timestamp -> the tap
    to_broker_p99_ms: float | None = None
    from_broker_p50_ms: float | None = None  # with --mqtt-split: the tap -> queryable
    from_broker_p99_ms: float | None = None
    onward_p50_ms: float | None = None  # bridge timestamp -> queryable
    onward_p99_ms: float | None = None
    poll_ms_median: float | None = None  # how long a query took
    poll_ms_max: float | None = None
    window_s: float = 0.0
    window_readings: int = 0
    bridge_cpu_s_per_1k: float | None = None
    hub_cpu_s_per_1k: float | None = None
    broker_cpu_s_per_1k: float | None = None
    influxd_cpu_s_per_1k: float | None = None
    feeder_cpu_s_per_1k: float | None = None
    bench_cpu_s_per_1k: float | None = None  # this process: the poller
    bridge_cores: float | None = None
    hub_cores: float | None = None
    bridge_max_rss_mib: float | None = None  # VmHWM before SIGTERM
    bridge_rss_end_mib: float | None = None  # VmRSS at the end of the window
    bridge_ru_maxrss_mib: float | None = None  # wait4: at least this process's own peak RSS (see README)
    hub_max_rss_mib: float | None = None
    hub_rss_end_mib: float | None = None
    hub_ru_maxrss_mib: float | None = None
    bridge_to_nodes_bytes: int = 0  # what the bridge wrote to the ports (GK frames), read by the feeder
    bench_rss_mib: float | None = None  # this process's peak RSS when the bridge and the hub were started
    bridge_exit: int | None = None
    hub_exit: int | None = None
    by_second: list[list[float]] = field(default_factory=list)  # [s from start, readings, p50 ms, max ms]
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def ms(ns: float) -> float:
    return round(ns / 1e6, 1)


def one_run(
    run: int,
    workdir: Path,
    broker: Broker,
    influxd: Influxd,
    feeds: list[tuple[str, Path]],
    args: argparse.Namespace,
) -> RunResult:
    rundir = workdir / f"run-{run}"
    rundir.mkdir()
    garden = f"latency{run}"  # a garden (and so an MQTT session) of its own per run
    nodes = [name for name, _ in feeds]
    servers = {
        "broker": broker.proc.pid if broker.proc else None,
        "influxd": influxd.proc.pid if influxd.proc else None,
    }
    busy = quiet(servers, 0.05, args.settle)  # InfluxDB compacts and drops databases in the background
    if busy >= 0.05:
        log(f"run {run}: servers still using {busy:.2f} cores; going ahead")
    r = RunResult(run=run, loadavg_1m=load_1m())
    influx = database(influxd.url, f"bench_latency_{run}")
    db = influx.settings.database
    hub: Child | None = None
    bridge: Child | None = None
    feeder: Child | None = None
    poller: Poller | None = None
    tap: Tap | None = None
    tapped: dict[tuple[str, int], int] = {}
    ledger_path = rundir / "ledger.txt"
    try:
        r.bench_rss_mib = vm_mib(os.getpid(), "VmHWM")
        hub = Child(
            rundir,
            "hub",
            garden_cmd("hub", "run", "--mqtt", broker.url, "--influx", influxd.url, "--garden", garden),
            garden_env(rundir / "hub.toml", "hub", args.hub_toml, GARDEN_DATA_DIR=str(rundir / "hub-data"),
                       GARDEN_HUB_ID=HUB_ID, GARDEN_INFLUX_DATABASE=db),
        )  # fmt: skip
        hub_online(broker, garden, hub)
        feeder = Child(
            rundir,
            "feeder",
            [sys.executable, str(Path(__file__).resolve()), "--_feeder", str(rundir / "ports"), str(args.rate),
             str(ledger_path), *[str(p) for _, p in feeds]],
        )  # fmt: skip
        ports = feeder.next_event(30, "ready")["ports"]
        cmd = garden_cmd("bridge", "run", "--mqtt", broker.url, "--garden", garden, "--spool",
                         str(rundir / "spool.sqlite3"), "-v")  # fmt: skip
        for p in ports:
            cmd += ["--port", p]
        env = garden_env(rundir / "bridge.toml", "bridge", args.bridge_toml, GARDEN_BRIDGE_ID=BRIDGE_ID)
        bridge = Child(rundir, "bridge", cmd, env)
        if args.mqtt_split:
            tap = Tap(broker.port, garden)
        poller = Poller(influxd.url, db, nodes, time.time_ns() // 1_000_000 - 1000, args.poll_ms / 1000)
        poller.start()
        started = feeder.next_event(60, "writing", [bridge, hub])
        pids: dict[str, int | None] = {
            "bridge": bridge.pid,
            "hub": hub.pid,
            **servers,
            "feeder": feeder.pid,
            "bench": os.getpid(),
        }
        warm_end = int(started["t_ns"]) + int(args.warmup * 1e9)
        wait_until(lambda: time.time_ns() >= warm_end, args.warmup + 5, "the warm-up", interval=0.01)
        ta_ns, cpu_a = time.time_ns(), cpu_of(pids)
        done = feeder.next_event(args.seconds + args.timeout, "done", [bridge, hub])
        tb_ns, cpu_b = time.time_ns(), cpu_of(pids)
        r.bridge_rss_end_mib, r.hub_rss_end_mib = vm_mib(bridge.pid, "VmRSS"), vm_mib(hub.pid, "VmRSS")
        r.written = int(done["written"])
        r.bridge_to_nodes_bytes = int(done["from_bridge"])
        # Until the poller has seen every reading, or nothing new for --idle s.
        last_n, last_change = -1, time.monotonic()
        while len(poller.seen) < r.written:
            if poller.error:
                raise BenchError(f"the poller: {poller.error}")
            for child in (bridge, hub):
                if child.proc.poll() is not None:
                    raise BenchError(f"the {child.name} exited ({child.proc.returncode}):\n{child.tail()}")
            if len(poller.seen) != last_n:
                last_n, last_change = len(poller.seen), time.monotonic()
            elif time.monotonic() - last_change > args.idle:
                log(f"run {run}: {len(poller.seen)} of {r.written} readings seen; none new for {args.idle:g}s")
                break
            time.sleep(0.05)
        time.sleep(2 * args.poll_ms / 1000)  # one more poll: a point seen twice shows up
        poller.stop()
        if tap is not None:
            tapped, tap = tap.stop(), None
        # The peak since exec. ru_maxrss from wait4 is not enough on its own: Linux keeps
        # the larger of it and the peak of the image exec replaced, here this process's.
        r.bridge_max_rss_mib, r.hub_max_rss_mib = vm_mib(bridge.pid, "VmHWM"), vm_mib(hub.pid, "VmHWM")
        r.bridge_exit = bridge.stop()
        r.hub_exit = hub.stop()
        feeder.stop(sig=0)
        r.stored, keys = stored_keys(influxd.url, db, nodes)
        r.distinct = len(keys)
    finally:  # each step on its own, so that one failing does not leave the others running
        if tap is not None:
            with contextlib.suppress(Exception):
                tap.stop()
        if poller is not None and poller.is_alive():
            with contextlib.suppress(Exception):
                poller.stop()
        for proc in (bridge, hub, feeder):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop()
        drop(influx)

    # ------------------------------------------------------------ figures
    assert poller is not None
    ledger = []
    for line in ledger_path.read_text().splitlines():
        name, seq_s, write_ns, late_ns = line.split()
        ledger.append((name, int(seq_s), int(write_ns), int(late_ns)))
    written_keys = {(n, s) for n, s, _, _ in ledger}
    lat, steady, intake, onward, to_broker, from_broker = [], [], [], [], [], []
    t_first = min((t for _, _, t, _ in ledger), default=0)
    seconds: dict[int, list[int]] = {}
    for node, seq, t_ns, _ in ledger:
        hit = poller.seen.get((node, seq))
        if hit is None:
            continue
        seen_ns, point_ms = hit
        lat.append(seen_ns - t_ns)
        seconds.setdefault(int((t_ns - t_first) // 1_000_000_000), []).append(seen_ns - t_ns)
        if (node, seq) in tapped:
            to_broker.append(tapped[(node, seq)] - point_ms * 1_000_000)
            from_broker.append(seen_ns - tapped[(node, seq)])
        if ta_ns <= t_ns <= tb_ns:
            steady.append(seen_ns - t_ns)
        intake.append(point_ms * 1_000_000 - t_ns)
        onward.append(seen_ns - point_ms * 1_000_000)
    r.seen_by_poller = len(lat)
    for values in (lat, steady, intake, onward, to_broker, from_broker):
        values.sort()
    for second, values in sorted(seconds.items()):
        values.sort()
        r.by_second.append([second, len(values), ms(pct(values, 0.5)), ms(values[-1])])
    if to_broker:
        r.to_broker_p50_ms, r.to_broker_p99_ms = ms(pct(to_broker, 0.5)), ms(pct(to_broker, 0.99))
        r.from_broker_p50_ms, r.from_broker_p99_ms = ms(pct(from_broker, 0.5)), ms(pct(from_broker, 0.99))
    if lat:
        r.p50_ms, r.p90_ms, r.p99_ms = ms(pct(lat, 0.5)), ms(pct(lat, 0.9)), ms(pct(lat, 0.99))
        r.max_ms, r.mean_ms = ms(lat[-1]), ms(statistics.fmean(lat))
        r.intake_p50_ms, r.intake_p99_ms = ms(pct(intake, 0.5)), ms(pct(intake, 0.99))
        r.onward_p50_ms, r.onward_p99_ms = ms(pct(onward, 0.5)), ms(pct(onward, 0.99))
    if steady:
        r.steady_p99_ms = ms(pct(steady, 0.99))
    lateness = sorted(x for *_, x in ledger)
    if lateness:
        r.feeder_late_p99_ms, r.feeder_late_max_ms = ms(pct(lateness, 0.99)), ms(lateness[-1])
    times = [t for _, _, t, _ in ledger]
    if len(times) > 1:
        r.fed_per_s = round((len(times) - 1) / ((max(times) - min(times)) / 1e9), 1)
    if poller.cycles:
        r.poll_ms_median = round(statistics.median(poller.cycles) * 1000, 1)
        r.poll_ms_max = round(max(poller.cycles) * 1000, 1)
    r.window_s = round((tb_ns - ta_ns) / 1e9, 2)
    r.window_readings = sum(1 for t in times if ta_ns <= t <= tb_ns)

    def per_1k(name: str) -> float | None:
        a, b = cpu_a.get(name), cpu_b.get(name)
        if a is None or b is None or not r.window_readings:
            return None
        return round((b - a) / r.window_readings * 1000, 4)

    r.bridge_cpu_s_per_1k, r.hub_cpu_s_per_1k = per_1k("bridge"), per_1k("hub")
    r.broker_cpu_s_per_1k, r.influxd_cpu_s_per_1k = per_1k("broker"), per_1k("influxd")
    r.feeder_cpu_s_per_1k, r.bench_cpu_s_per_1k = per_1k("feeder"), per_1k("bench")
    if r.window_s > 0:
        r.bridge_cores = round(((cpu_b["bridge"] or 0) - (cpu_a["bridge"] or 0)) / r.window_s, 3)
        r.hub_cores = round(((cpu_b["hub"] or 0) - (cpu_a["hub"] or 0)) / r.window_s, 3)
    if bridge is not None and bridge.rusage is not None:
        r.bridge_ru_maxrss_mib = round(bridge.rusage.wait4_maxrss / 1024, 1)
    if hub is not None and hub.rusage is not None:
        r.hub_ru_maxrss_mib = round(hub.rusage.wait4_maxrss / 1024, 1)

    # ------------------------------------------------------------- checks
    expected = {(n, s) for n in nodes for s in range(1, args.count + 1)}
    if r.written != len(expected) or written_keys != expected:
        r.problems.append(f"the feeder wrote {r.written} readings, not the {len(expected)} made")
    if r.stored != r.written:
        r.problems.append(f"written {r.written} != points stored {r.stored}")
    if r.distinct != r.stored:
        r.problems.append(f"{r.stored - r.distinct} duplicate point(s) (a (node, seq) under two timestamps)")
    missing = len(written_keys - keys)
    if missing:
        r.problems.append(f"{missing} reading(s) written and never stored")
    if r.seen_by_poller != r.written:
        r.problems.append(f"the poller saw {r.seen_by_poller} of {r.written} readings")
    if poller.moved_ts:
        r.problems.append(f"{len(poller.moved_ts)} reading(s) seen under two timestamps")
    if r.bridge_exit != 0:
        r.problems.append(f"the bridge exited with status {r.bridge_exit}")
    if r.hub_exit != 0:
        r.problems.append(f"the hub exited with status {r.hub_exit}")
    r.ok = not r.problems
    return r


# ------------------------------------------------------------------- report

LATENCY = (
    ("run", "run"),
    ("written", "written"),
    ("stored", "stored"),
    ("fed_per_s", "fed (readings/s)"),
    ("feeder_late_p99_ms", "feeder late p99 (ms)"),
    ("p50_ms", "p50 (ms)"),
    ("p90_ms", "p90 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("max_ms", "max (ms)"),
    ("intake_p50_ms", "pty -> bridge p50 (ms)"),
    ("onward_p50_ms", "bridge -> InfluxDB p50 (ms)"),
    ("onward_p99_ms", "bridge -> InfluxDB p99 (ms)"),
    ("poll_ms_median", "query (ms)"),
)
SPLIT = (
    ("run", "run"),
    ("intake_p50_ms", "pty -> bridge p50 (ms)"),
    ("to_broker_p50_ms", "bridge -> broker p50 (ms)"),
    ("to_broker_p99_ms", "bridge -> broker p99 (ms)"),
    ("from_broker_p50_ms", "broker -> InfluxDB p50 (ms)"),
    ("from_broker_p99_ms", "broker -> InfluxDB p99 (ms)"),
)
COST = (
    ("run", "run"),
    ("loadavg_1m", "load before"),
    ("window_s", "window (s)"),
    ("bridge_cpu_s_per_1k", "bridge CPU-s / 1k"),
    ("hub_cpu_s_per_1k", "hub CPU-s / 1k"),
    ("broker_cpu_s_per_1k", "broker CPU-s / 1k"),
    ("influxd_cpu_s_per_1k", "influxd CPU-s / 1k"),
    ("bridge_max_rss_mib", "bridge max RSS (MiB)"),
    ("bridge_rss_end_mib", "bridge RSS end (MiB)"),
    ("bridge_ru_maxrss_mib", "bridge ru_maxrss (MiB)"),
    ("hub_max_rss_mib", "hub max RSS (MiB)"),
    ("hub_rss_end_mib", "hub RSS end (MiB)"),
    ("hub_ru_maxrss_mib", "hub ru_maxrss (MiB)"),
)
NOT_MEDIAN = {"run", "written", "stored"}
EXTRA_MEDIANS = (
    "mean_ms",
    "steady_p99_ms",
    "intake_p99_ms",
    "feeder_late_max_ms",
    "poll_ms_max",
    "feeder_cpu_s_per_1k",
    "bench_cpu_s_per_1k",
    "bridge_cores",
    "hub_cores",
    "bench_rss_mib",
)


def medians(results: list[RunResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    keys = [k for k, _ in LATENCY + COST + SPLIT if k not in NOT_MEDIAN] + list(EXTRA_MEDIANS)
    for key in dict.fromkeys(keys):
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        out[key] = round(statistics.median(values), 4) if values else None
    return out


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    parser.add_argument("--rate", type=float, default=1000.0, help="readings per second, all nodes together (1000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each run feeds readings (30)")
    parser.add_argument("--nodes", type=int, default=20, help="simulated nodes, one pty each (20)")
    parser.add_argument("--warmup", type=float, default=5.0, help="s after the first reading before CPU counts (5)")
    parser.add_argument("--poll-ms", type=float, default=50.0, help="how often InfluxDB is asked for new points (50)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (1)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--timeout", type=float, default=120.0, help="extra s allowed for the feeder to finish (120)")
    parser.add_argument("--idle", type=float, default=20.0, help="stop waiting when no reading shows up for (s) (20)")
    parser.add_argument("--settle", type=float, default=10.0, help="wait at most this for idle servers (s) (10)")
    parser.add_argument("--hub-toml", default="", help="[hub] lines for the hub, e.g. 'batch_ms = 50' (none)")
    parser.add_argument("--bridge-toml", default="", help="[bridge] lines for the bridge (none)")
    parser.add_argument(
        "--mqtt-split", action="store_true", help="also time each message at the broker (a subscriber: adds load)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, ledgers, spools)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 1 <= args.nodes <= 200:
        parser.error("--runs must be >= 1 and --nodes 1-200")
    if args.rate <= 0 or args.seconds <= 0 or args.poll_ms < 5:
        parser.error("--rate and --seconds must be positive, --poll-ms at least 5")
    args.count = max(1, round(args.rate * args.seconds / args.nodes))
    if args.count * args.nodes > MAX_READINGS:
        parser.error(f"--rate x --seconds must stay under {MAX_READINGS} readings")
    if not 0 <= args.warmup < args.seconds:
        parser.error("--warmup must be from 0 to under --seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_feeder"]:
        return feeder_main(Path(argv[1]), float(argv[2]), Path(argv[3]), argv[4:])
    args = parse_args(argv)
    load_before = load_1m()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="garden-bench-latency-"))
    broker = Broker(workdir)
    influxd = Influxd(workdir)
    results: list[RunResult] = []
    total = args.count * args.nodes
    try:
        log(
            f"{args.nodes} node(s) x {args.count} readings at {args.rate:g}/s in all "
            f"({total / args.rate:.1f} s), {args.runs} run(s); temp dir {workdir}"
        )
        feeds = make_feeds(workdir / "feeds", args.nodes, args.count, args.seed)
        broker.start()
        influxd.start()
        log(f"mosquitto on 127.0.0.1:{broker.port}, influxd on {influxd.url}")
        for run in range(1, args.runs + 1):
            result = one_run(run, workdir, broker, influxd, feeds, args)
            results.append(result)
            log(
                f"run {run}: {result.stored:,}/{result.written:,} stored; latency p50 {result.p50_ms} "
                f"p99 {result.p99_ms} max {result.max_ms} ms; CPU-s/1k bridge {result.bridge_cpu_s_per_1k} "
                f"hub {result.hub_cpu_s_per_1k}; hub max RSS {result.hub_max_rss_mib} MiB"
                + (f" -- {'; '.join(result.problems)}" if result.problems else "")
            )
    except BenchError as err:
        log(f"error: {err}")
        args.keep = True
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        broker.stop()
        influxd.stop()
        if args.keep or any(not r.ok for r in results):
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    med = medians(results)
    info = machine_info(load_before, influxd=True)
    changed = [f"[{name}] {text!r}" for name, text in (("hub", args.hub_toml), ("bridge", args.bridge_toml)) if text]
    settings = "settings changed: " + ", ".join(changed) if changed else "bridge and hub with default settings"
    print(
        f"\nLatency benchmark: {args.nodes} nodes x {args.count:,} readings at {args.rate:,.0f} readings/s "
        f"({total / args.rate:.0f} s) per run, {args.runs} run(s), {settings}; "
        f"{machine_summary(info)}\n"
        f"Latency: pty write -> first seen in InfluxDB, polled every {args.poll_ms:g} ms "
        f"(resolution: the poll interval plus the query time). CPU over the steady window "
        f"({args.warmup:g} s after the first reading to the last write), per 1,000 readings written in it.\n"
    )
    print(table(LATENCY, results, med))
    print()
    print(table(COST, results, med))
    if args.mqtt_split:
        print("\nSplit at the broker (--mqtt-split: a QoS 0 subscriber in this process notes each arrival):\n")
        print(table(SPLIT, results, med))
    p99_ok = med["p99_ms"] is not None and med["p99_ms"] < TARGET_P99_MS
    rss_ok = med["hub_max_rss_mib"] is not None and med["hub_max_rss_mib"] < TARGET_HUB_RSS_MIB
    print(
        f"\nmedian: latency p50 {cell(med['p50_ms'])} ms, p90 {cell(med['p90_ms'])} ms, "
        f"p99 {cell(med['p99_ms'])} ms (target < {TARGET_P99_MS:,.0f}: {'met' if p99_ok else 'NOT met'}), "
        f"max {cell(med['max_ms'])} ms.\n"
        f"CPU-s per 1,000 readings: bridge {cell(med['bridge_cpu_s_per_1k'])}, hub {cell(med['hub_cpu_s_per_1k'])}, "
        f"broker {cell(med['broker_cpu_s_per_1k'])}, influxd {cell(med['influxd_cpu_s_per_1k'])}. "
        f"Max RSS: bridge {cell(med['bridge_max_rss_mib'])} MiB, hub {cell(med['hub_max_rss_mib'])} MiB "
        f"(target < {TARGET_HUB_RSS_MIB:.0f}: {'met' if rss_ok else 'NOT met'})."
    )
    bad = [r for r in results if not r.ok]
    write_results(
        args.json,
        info,
        args,
        median=med,
        targets={"p99_ms": TARGET_P99_MS, "p99_met": p99_ok, "hub_rss_mib": TARGET_HUB_RSS_MIB, "hub_rss_met": rss_ok},
        runs=[asdict(r) for r in results],
        ok=not bad,
    )
    if bad:
        warn_invalid(
            [
                "WARNING: READINGS WRITTEN AND POINTS STORED DIFFER (or a process failed): these figures are not valid",
                *(f"RUN {r.run}: {problem}" for r in bad for problem in r.problems),
            ]
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
