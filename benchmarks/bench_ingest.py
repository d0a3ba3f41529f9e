#!/usr/bin/env python3
"""Hub ingest rate: ``garden hub run`` against a plain paho subscriber and InfluxDB's own write limit.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_ingest.py [--runs 3] [--messages 30000] [--json out.json]

One private Mosquitto and one private influxd (temp dirs, free loopback
ports) for the whole benchmark. Each run measures three things side by side,
in a rotating order (run 1: a b c, run 2: b c a, run 3: c a b, ...):

(a) **plain paho subscriber**: a child process with paho-mqtt 2.x (VERSION2
    callbacks, MQTT v5, QoS 1, automatic acks) that only counts messages and
    keeps their payloads. The ceiling: the broker's delivery rate to Python.
(b) **hub**: ``garden hub run`` in its own process, with its defaults
    (persistent session, QoS 1, manual acks once a batch is durable in
    InfluxDB, ``batch_size`` 5000, ``batch_ms`` 200), from the moment it is
    let go until every point is queryable (``SELECT count("seq") FROM
    "soil_moisture"``, polled every 50 ms).
(c) **InfluxDB**: the same points (``garden.points.telemetry_lines``), posted
    to ``/write`` in batches of 5,000 lines, one after another.

(a) and (b) consume the same messages: full 7-sensor telemetry payloads, as
the bridge makes them (``calibrate`` + ``telemetry_payload``), spread over
``--nodes`` nodes. For both, the consumer is started, subscribed (for the
hub: its retained status says online) and then frozen with SIGSTOP while a
separate publisher process (paho, QoS 1) puts every message into the broker,
which holds them in the consumer's session. The window starts at SIGCONT, so
the publisher's speed and CPU are not part of it. The hub's CPU is
utime + stime from ``/proc/<pid>/stat`` over the window; its max RSS is
``ru_maxrss`` from ``wait4``.

The exit status is 1 when, in any run, messages published and messages
received (a) or points stored (b, c) differ, or the hub refused, spooled or
failed anything; 2 when a run cannot be set up. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    stat_cpu_seconds,
    table,
    wait_until,
    warn_invalid,
    write_results,
)

HUB_ID = "bench"
POLL_S = 0.05  # how often (b) asks InfluxDB for the point count
PUBLISH_INFLIGHT = 1000  # the publisher's own window; the broker does not limit incoming QoS 1
MAX_MESSAGES = 100_000  # the frozen consumer sends no PINGREQ: publishing must stay well under 1.5 x keepalive
SENSORS = 7


# ------------------------------------------------------------------ helpers


_SAY_LOCK = threading.Lock()


def say(**event: Any) -> None:
    """A child process's report to the parent: one JSON line on stdout (from any thread)."""
    with _SAY_LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def thread_cpu(pid: int) -> dict[int, float]:
    """utime + stime of each live thread of a process, by thread id (the main thread's is the pid)."""
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            cpu = stat_cpu_seconds(f"/proc/{pid}/task/{tid}/stat")
            if cpu is not None:
                out[int(tid)] = cpu
    return out


def per_1k(before: dict[str, float | None], after: dict[str, float | None], name: str, count: int) -> float | None:
    a, b = before.get(name), after.get(name)
    if a is None or b is None or count <= 0:
        return None
    return round((b - a) / count * 1000, 4)


# ------------------------------------------------------------- point counts


def soil_count(influx: Any) -> int:
    rows = influx.query('SELECT count("seq") FROM "soil_moisture"')
    return int(rows[0].values[0][1]) if rows and rows[0].values else 0


def all_counts(influx: Any) -> dict[str, int]:
    """count("seq") per telemetry measurement: each message has one point in each."""
    from garden.points import MEASUREMENTS

    names = ",".join(f'"{m}"' for m in MEASUREMENTS.values())
    out = {m: 0 for m in MEASUREMENTS.values()}
    for series in influx.query(f'SELECT count("seq") FROM {names}'):
        out[series.name] = int(series.values[0][1]) if series.values else 0
    return out


# ----------------------------------------------------------------- payloads


def make_messages(count: int, nodes: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` full 7-sensor readings as the bridge publishes them, round-robin over ``nodes``.

    ``(node, ts)`` is unique, so every message is its own point in InfluxDB;
    the readings are one second apart, ending a minute ago.
    """
    from firmware_bridge.calibration import calibrate
    from firmware_bridge.messages import telemetry_payload

    rng = random.Random(seed)
    per_node = -(-count // nodes)
    base_ms = (time.time_ns() // 1_000_000) - (per_node + 60) * 1000
    out = []
    for n in range(count):
        i, seq = n % nodes + 1, n // nodes + 1
        values = {
            "sm0": rng.randint(280, 500),
            "st0": round(rng.uniform(8.0, 22.0), 2),
            "at0": round(rng.uniform(2.0, 32.0), 2),
            "rh0": round(rng.uniform(35.0, 95.0), 1),
            "lx0": rng.randint(0, 60_000),
            "tk0": round(rng.uniform(20.0, 110.0), 1),
            "bt0": rng.randint(3700, 4150),
        }
        reading = calibrate(values)
        assert not reading.errors and len(reading.values) == SENSORS, reading
        payload = telemetry_payload(
            node=f"node-{i}",
            boot=1,
            seq=seq,
            ts_ms=base_ms + seq * 1000,
            reading=reading,
            bridge="bench",
            bed=f"bed-{i}",
        )
        out.append((f"node-{i}", payload))
    return out


# --------------------------------------------------------- child processes


def publisher_main(port: int, garden: str, path: Path) -> int:
    """Child: publish every ``node<TAB>payload`` line at QoS 1; report once the broker acked them all."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    messages = [line.split(b"\t", 1) for line in path.read_bytes().splitlines() if line]
    acked = failed = 0
    lock = threading.Lock()
    connected = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        connected.set()

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked, failed
        with lock:
            acked += 1
            failed += bool(reason.is_failure)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(PUBLISH_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        say(event="error", error="no CONNACK")
        return 1
    t0 = time.monotonic()
    for node, payload in messages:
        client.publish(f"garden/{garden}/node/{node.decode()}/telemetry", payload, qos=1)
    end = time.monotonic() + 120
    while acked < len(messages) and time.monotonic() < end:
        time.sleep(0.01)
    say(event="done", published=len(messages), acked=acked, failed=failed, seconds=round(time.monotonic() - t0, 3))
    client.disconnect()
    client.loop_stop()
    return 0


def subscriber_main(port: int, topic: str, expected: int) -> int:
    """Child: the plain paho subscriber. Counts messages (and keeps them) until its stdin closes."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    payloads: list[bytes] = []
    times = [0.0, 0.0]  # first, last

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            say(event="error", error=f"connect refused: {reason}")
        else:
            client.subscribe(topic, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            say(event="error", error=f"subscribe refused: {reasons}")
        else:
            say(event="ready")

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic()
        payloads.append(message.payload)
        if len(payloads) == 1:
            times[0] = now
        times[1] = now

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=60, clean_start=True)
    client.loop_start()
    reported, next_progress = False, 0.0
    while True:  # "done" once all are in, else a progress line every 0.25 s; stop at EOF
        readable, _, _ = select.select([sys.stdin], [], [], 0.02)
        if readable and not sys.stdin.buffer.read1(4096):
            break
        n, now = len(payloads), time.monotonic()
        if n >= expected and not reported:
            say(event="done", count=n, first=times[0], last=times[1])
            reported = True
        elif now >= next_progress and not reported:
            say(event="progress", count=n, last=times[1])
            next_progress = now + 0.25
    client.disconnect()
    client.loop_stop()
    keys = set()
    for raw in payloads:
        body = json.loads(raw)
        keys.add((body["node"], body["boot"], body["seq"]))
    say(event="final", count=len(payloads), distinct=len(keys), first=times[0], last=times[1])
    return 0


class Child:
    """This script in a child mode, reporting JSON lines on its stdout."""

    def __init__(self, workdir: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.workdir = workdir
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        with (workdir / f"{name}.log").open("ab") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        self.pid = self.proc.pid
        self.rusage: Any = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def next_event(self, timeout: float, want: tuple[str, ...]) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"{self.name}: nothing in {timeout:g}s") from None
            if event["event"] in want:
                return event
            if event["event"] in ("error", "exit"):
                raise BenchError(f"{self.name}: {event}; see {self.workdir / (self.name + '.log')}")

    def close(self) -> None:
        """Close its stdin (its signal to finish) and reap it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.rusage is None and self.proc.returncode is None:
            _, self.rusage = reap(self.proc, 15, sig=0)


def publish(workdir: Path, broker: Broker, garden: str, feed: Path) -> dict[str, Any]:
    pub = Child(workdir, f"publisher-{garden}", ["--_publish", str(broker.port), garden, str(feed)])
    try:
        done = pub.next_event(180, ("done",))
    finally:
        pub.close()
    if done["acked"] != done["published"] or done["failed"]:
        raise BenchError(f"the publisher: {done}")
    if done["seconds"] > 40:
        raise BenchError(f"publishing took {done['seconds']}s: the frozen consumer's keepalive would run out")
    return done


# ---------------------------------------------------------------------- hub


class HubProc:
    def __init__(self, workdir: Path, broker: Broker, influx_url: str, garden: str, db: str, extra: str) -> None:
        exe = Path(sys.executable).parent / "garden"  # the venv's console script
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "garden"]
        cmd += ["hub", "run", "--mqtt", broker.url, "--influx", influx_url, "--garden", garden]
        # No GARDEN_* from the caller's shell, and a config file with nothing but
        # --hub-toml's lines, so neither /etc/garden/garden.toml nor ~/.config's is read.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
        (workdir / "hub.toml").write_text(f"[hub]\n{extra}\n" if extra else "")
        env.update(
            GARDEN_CONFIG=str(workdir / "hub.toml"),
            GARDEN_DATA_DIR=str(workdir / "hub-data"),
            GARDEN_HUB_ID=HUB_ID,
            GARDEN_INFLUX_DATABASE=db,
        )
        self.logfile = workdir / "hub.log"
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=out)
        self.pid = self.proc.pid
        self.garden = garden
        self.broker = broker
        self.rusage: Any = None

    def status(self, wait_s: float = 0.3) -> dict[str, Any]:
        from firmware_bridge.mqtt_link import parse_broker_url, read_retained

        found = read_retained(parse_broker_url(self.broker.url), (f"garden/{self.garden}/hub/+/status",), wait_s=wait_s)
        for payload in found.values():
            with contextlib.suppress(ValueError):
                return dict(json.loads(payload))
        return {}

    def wait_online(self, timeout: float = 60) -> None:
        """Until its retained status says online: it is subscribed by then."""

        def online() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"the hub exited ({self.proc.returncode}):\n{self.tail()}")
            return self.status(0.2).get("state") == "online"

        wait_until(online, timeout, "the hub to come online", interval=0.1)

    def stop(self) -> int | None:
        """SIGTERM (its graceful stop: offline status with its counters), reaped with wait4."""
        status, rusage = reap(self.proc, 20)
        if rusage is not None:
            self.rusage = rusage
        return status

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""


# ---------------------------------------------------------------------- run


@dataclass
class RunResult:
    run: int
    order: str
    loadavg_1m: float
    # (a) plain paho subscriber
    a_published: int = 0
    a_received: int = 0
    a_distinct: int = 0
    a_window_s: float = 0.0
    a_msgs_per_s: float = 0.0
    a_subscriber_cpu_s_per_1k: float | None = None
    a_broker_cpu_s_per_1k: float | None = None
    a_publish_msgs_per_s: float = 0.0
    # (b) hub
    b_published: int = 0
    b_stored: int = 0  # soil_moisture points: one per message
    b_points: int = 0  # all seven measurements
    b_window_s: float = 0.0
    b_msgs_per_s: float = 0.0
    b_points_per_s: float = 0.0
    b_hub_cpu_s_per_1k: float | None = None
    b_hub_cores: float | None = None
    b_hub_main_thread_cpu_s_per_1k: float | None = None
    b_hub_other_threads_cpu_s_per_1k: float | None = None
    b_hub_max_rss_mib: float | None = None
    b_influxd_cpu_s_per_1k: float | None = None
    b_broker_cpu_s_per_1k: float | None = None
    b_hub_counters: dict[str, Any] = field(default_factory=dict)
    b_hub_exit: int | None = None
    b_publish_msgs_per_s: float = 0.0
    b_profiled: bool = False
    # (c) InfluxDB /write
    c_points: int = 0
    c_stored: int = 0
    c_batches: int = 0
    c_window_s: float = 0.0
    c_points_per_s: float = 0.0
    c_msgs_per_s: float = 0.0  # points/s / 7: messages' worth
    c_influxd_cpu_s_per_1k_points: float | None = None
    ratio_b_a: float | None = None
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def feed_file(path: Path, messages: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(b"".join(node.encode() + b"\t" + payload + b"\n" for node, payload in messages))
    return path


def measure_a(r: RunResult, rundir: Path, broker: Broker, feed: Path, n: int, args: argparse.Namespace) -> None:
    garden = f"bench-a{r.run}"
    topic = f"garden/{garden}/node/+/telemetry"
    sub = Child(rundir, "subscriber", ["--_subscribe", str(broker.port), topic, str(n)])
    try:
        sub.next_event(30, ("ready",))
        os.kill(sub.pid, signal.SIGSTOP)
        pub = publish(rundir, broker, garden, feed)
        r.a_published = int(pub["published"])
        r.a_publish_msgs_per_s = round(r.a_published / pub["seconds"], 1)
        pids = {"subscriber": sub.pid, "broker": broker.proc.pid if broker.proc else None}
        before = cpu_of(pids)
        t0 = time.monotonic()
        os.kill(sub.pid, signal.SIGCONT)
        count, last_change = 0, t0
        while True:
            event = sub.next_event(args.timeout, ("done", "progress"))
            if event["event"] == "done":
                break
            if event["count"] != count:
                count, last_change = event["count"], time.monotonic()
            elif time.monotonic() - last_change > args.idle:
                log(f"run {r.run} (a): stuck at {count} of {n} messages")
                break
        after = cpu_of(pids)
        sub.close()
        final = sub.next_event(15, ("final",))
    finally:
        sub.close()
    r.a_received, r.a_distinct = int(final["count"]), int(final["distinct"])
    last = float(final["last"]) if final["count"] else t0
    r.a_window_s = round(last - t0, 3)
    r.a_msgs_per_s = round(r.a_received / r.a_window_s, 1) if r.a_window_s > 0 else 0.0
    r.a_subscriber_cpu_s_per_1k = per_1k(before, after, "subscriber", r.a_received)
    r.a_broker_cpu_s_per_1k = per_1k(before, after, "broker", r.a_received)
    if r.a_received != r.a_published:
        r.problems.append(f"(a) published {r.a_published} != received {r.a_received}")
    if r.a_distinct != r.a_received:
        r.problems.append(f"(a) {r.a_received - r.a_distinct} duplicate message(s)")


def measure_b(
    r: RunResult, rundir: Path, broker: Broker, influxd: Influxd, feed: Path, n: int, args: argparse.Namespace
) -> None:
    garden = f"bench-b{r.run}"
    influx = database(influxd.url, f"bench_hub_{r.run}")
    hub = HubProc(rundir, broker, influxd.url, garden, influx.settings.database, args.hub_toml)
    spy: subprocess.Popen[bytes] | None = None
    try:
        hub.wait_online()
        time.sleep(0.5)  # its first status point (and the InfluxDB version probe) is written by now
        os.kill(hub.pid, signal.SIGSTOP)
        pub = publish(rundir, broker, garden, feed)
        r.b_published = int(pub["published"])
        r.b_publish_msgs_per_s = round(r.b_published / pub["seconds"], 1)
        if args.py_spy is not None:
            spy = start_py_spy(args.py_spy / f"hub-run{r.run}", hub.pid)
            r.b_profiled = True
        pids = {
            "hub": hub.pid,
            "broker": broker.proc.pid if broker.proc else None,
            "influxd": influxd.proc.pid if influxd.proc else None,
        }
        before, threads_before = cpu_of(pids), thread_cpu(hub.pid)
        t0 = time.monotonic()
        os.kill(hub.pid, signal.SIGCONT)
        stored, last_change, t1 = 0, t0, t0
        end = t0 + args.timeout
        while True:
            now_stored = soil_count(influx)
            t1 = time.monotonic()
            if now_stored >= r.b_published:
                stored = now_stored
                break
            if hub.proc.poll() is not None:
                raise BenchError(f"the hub exited ({hub.proc.returncode}):\n{hub.tail()}")
            if now_stored != stored:
                stored, last_change = now_stored, t1
            elif t1 - last_change > args.idle or t1 > end:
                log(f"run {r.run} (b): stuck at {stored} of {r.b_published} points")
                break
            time.sleep(POLL_S)
        after, threads_after = cpu_of(pids), thread_cpu(hub.pid)
        if spy is not None:
            stop_py_spy(spy)
            spy = None
        r.b_hub_exit = hub.stop()
        r.b_hub_counters = hub.status(0.5)
        counts = all_counts(influx)
        r.b_stored, r.b_points = counts["soil_moisture"], sum(counts.values())
    finally:
        if spy is not None:
            stop_py_spy(spy)
        hub.stop()
        drop(influx)
    r.b_window_s = round(t1 - t0, 3)
    r.b_msgs_per_s = round(stored / r.b_window_s, 1) if r.b_window_s > 0 else 0.0
    r.b_points_per_s = round(stored * SENSORS / r.b_window_s, 1) if r.b_window_s > 0 else 0.0
    hub_cpu = (after["hub"] or 0.0) - (before["hub"] or 0.0)
    r.b_hub_cpu_s_per_1k = per_1k(before, after, "hub", stored)
    r.b_hub_cores = round(hub_cpu / r.b_window_s, 2) if r.b_window_s > 0 else None
    r.b_influxd_cpu_s_per_1k = per_1k(before, after, "influxd", stored)
    r.b_broker_cpu_s_per_1k = per_1k(before, after, "broker", stored)
    if stored > 0:  # where the hub's CPU goes: its main loop, or paho's network thread (and any other)
        main = threads_after.get(hub.pid, 0.0) - threads_before.get(hub.pid, 0.0)
        others = sum(v - threads_before.get(t, 0.0) for t, v in threads_after.items() if t != hub.pid)
        r.b_hub_main_thread_cpu_s_per_1k = round(main / stored * 1000, 4)
        r.b_hub_other_threads_cpu_s_per_1k = round(others / stored * 1000, 4)
    if hub.rusage is not None:
        r.b_hub_max_rss_mib = round(hub.rusage.ru_maxrss / 1024, 1)
    if r.b_stored != r.b_published:
        r.problems.append(f"(b) published {r.b_published} != soil_moisture points {r.b_stored}")
    if r.b_points != SENSORS * r.b_published:
        r.problems.append(f"(b) {r.b_points} points in all, not {SENSORS} x {r.b_published}")
    counters = r.b_hub_counters.get("counters", {})
    if r.b_hub_counters.get("state") != "offline":
        r.problems.append(f"(b) no final hub status (got {r.b_hub_counters.get('state')!r})")
    elif counters.get("received") != r.b_published or counters.get("acked") != r.b_published:
        r.problems.append(f"(b) hub counters {counters} for {r.b_published} messages")
    if r.b_hub_counters.get("refused") or counters.get("spooled_points") or counters.get("unstored_batches"):
        r.problems.append(f"(b) the hub refused or spooled: {r.b_hub_counters}")
    if r.b_hub_exit != 0:
        r.problems.append(f"(b) the hub exited with status {r.b_hub_exit}")


def measure_c(r: RunResult, influxd: Influxd, bodies: list[bytes], lines: int, n: int) -> None:
    import urllib3

    influx = database(influxd.url, f"bench_write_{r.run}")
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=3, read=60))
    url = f"{influxd.url}/write?db={influx.settings.database}&precision=ms"
    pids = {"influxd": influxd.proc.pid if influxd.proc else None}
    try:
        http.request("GET", f"{influxd.url}/ping")  # the connection is open before the clock starts
        before = cpu_of(pids)
        t0 = time.monotonic()
        for body in bodies:
            response = http.request("POST", url, body=body)
            if response.status != 204:
                raise BenchError(f"(c) /write answered {response.status}: {response.data[:300]!r}")
        t1 = time.monotonic()
        after = cpu_of(pids)
        counts = all_counts(influx)
    finally:
        http.clear()
        drop(influx)
    r.c_points, r.c_batches = lines, len(bodies)
    r.c_stored = sum(counts.values())
    r.c_window_s = round(t1 - t0, 3)
    r.c_points_per_s = round(lines / r.c_window_s, 1) if r.c_window_s > 0 else 0.0
    r.c_msgs_per_s = round(r.c_points_per_s / SENSORS, 1)
    r.c_influxd_cpu_s_per_1k_points = per_1k(before, after, "influxd", lines)
    if r.c_stored != lines or counts["soil_moisture"] != n:
        r.problems.append(f"(c) posted {lines} points, {r.c_stored} stored ({counts['soil_moisture']} soil_moisture)")


def start_py_spy(out: Path, pid: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "py-spy"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe if exe.exists() else "py-spy"), "record", "--pid", str(pid), "--rate", "200", "--threads"]
    cmd += ["--nonblocking", "--format", "raw", "--output", f"{out}.txt"]
    with (out.parent / "py-spy.log").open("ab") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=logf)
    time.sleep(1.0)  # attached before the hub is let go
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(
    run: int,
    workdir: Path,
    broker: Broker,
    influxd: Influxd,
    feed: Path,
    bodies: list[bytes],
    lines: int,
    args: argparse.Namespace,
) -> RunResult:
    rundir = workdir / f"run-{run}"
    rundir.mkdir()
    order = "abc"[(run - 1) % 3 :] + "abc"[: (run - 1) % 3]
    r = RunResult(run=run, order=" ".join(order), loadavg_1m=load_1m())
    servers = {
        "broker": broker.proc.pid if broker.proc else None,
        "influxd": influxd.proc.pid if influxd.proc else None,
    }
    for what in order:
        busy = quiet(servers, 0.05, args.settle)  # InfluxDB compacts and drops databases in the background
        if busy >= 0.05:
            log(f"run {run} ({what}): servers still using {busy:.2f} cores; going ahead")
        if what == "a":
            measure_a(r, rundir, broker, feed, args.messages, args)
            log(
                f"run {run} (a) plain subscriber: {r.a_received:,}/{r.a_published:,} in {r.a_window_s:.2f}s, "
                f"{r.a_msgs_per_s:,.0f} msg/s"
            )
        elif what == "b":
            measure_b(r, rundir, broker, influxd, feed, args.messages, args)
            log(
                f"run {run} (b) hub: {r.b_stored:,}/{r.b_published:,} in {r.b_window_s:.2f}s, "
                f"{r.b_msgs_per_s:,.0f} msg/s, {r.b_hub_cpu_s_per_1k} CPU-s/1k, RSS {r.b_hub_max_rss_mib} MiB"
            )
        else:
            measure_c(r, influxd, bodies, lines, args.messages)
            log(
                f"run {run} (c) InfluxDB: {r.c_stored:,}/{r.c_points:,} points in {r.c_window_s:.2f}s, "
                f"{r.c_points_per_s:,.0f} points/s"
            )
    if r.a_msgs_per_s > 0:
        r.ratio_b_a = round(r.b_msgs_per_s / r.a_msgs_per_s, 3)
    r.ok = not r.problems
    return r


# ------------------------------------------------------------------- report

THROUGHPUT = (
    ("run", "run"),
    ("order", "order"),
    ("a_msgs_per_s", "(a) plain subscriber msg/s"),
    ("b_msgs_per_s", "(b) hub msg/s"),
    ("ratio_b_a", "(b)/(a)"),
    ("b_points_per_s", "(b) hub points/s"),
    ("c_points_per_s", "(c) InfluxDB points/s"),
    ("c_msgs_per_s", "(c) / 7, msg/s"),
    ("a_window_s", "(a) window (s)"),
    ("b_window_s", "(b) window (s)"),
    ("c_window_s", "(c) window (s)"),
)
COST = (
    ("run", "run"),
    ("b_hub_cpu_s_per_1k", "hub CPU-s / 1k msg"),
    ("b_hub_main_thread_cpu_s_per_1k", "of which main thread"),
    ("b_hub_other_threads_cpu_s_per_1k", "of which other threads (paho)"),
    ("b_hub_cores", "hub cores busy"),
    ("b_hub_max_rss_mib", "hub max RSS (MiB)"),
    ("b_influxd_cpu_s_per_1k", "influxd CPU-s / 1k msg (b)"),
    ("b_broker_cpu_s_per_1k", "broker CPU-s / 1k msg (b)"),
    ("a_subscriber_cpu_s_per_1k", "subscriber CPU-s / 1k msg (a)"),
    ("a_broker_cpu_s_per_1k", "broker CPU-s / 1k msg (a)"),
    ("c_influxd_cpu_s_per_1k_points", "influxd CPU-s / 1k points (c)"),
)
NOT_MEDIAN = {"run", "order"}


def medians(results: list[RunResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _ in THROUGHPUT + COST:
        if key in NOT_MEDIAN:
            continue
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        out[key] = round(statistics.median(values), 4) if values else None
    for key in ("a_publish_msgs_per_s", "b_publish_msgs_per_s", "loadavg_1m"):
        out[key] = round(statistics.median(getattr(r, key) for r in results), 4)
    return out


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, each measuring (a), (b) and (c); medians (3)")
    parser.add_argument("--messages", type=int, default=30_000, help="telemetry messages per run (30000)")
    parser.add_argument("--nodes", type=int, default=8, help="nodes the messages are spread over (8)")
    parser.add_argument("--write-batch", type=int, default=5000, help="(c): lines per /write request (5000)")
    parser.add_argument(
        "--max-inflight", type=int, default=0, help="Mosquitto's max_inflight_messages (0: no limit; deploy/ has 20)"
    )
    parser.add_argument("--hub-toml", default="", help="extra [hub] lines for the hub, e.g. 'batch_size = 1000'")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--py-spy", type=Path, help="profile the hub in (b) with py-spy; raw stacks go in this dir")
    parser.add_argument("--seed", type=int, default=1, help="seed for the sensor values (1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up on a measurement after (s)")
    parser.add_argument("--idle", type=float, default=20.0, help="give up when the count stops moving for (s)")
    parser.add_argument("--settle", type=float, default=10.0, help="wait at most this for idle servers (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs, hub data)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 1 <= args.nodes <= 1000:
        parser.error("--runs must be >= 1 and --nodes 1-1000")
    if not 1 <= args.messages <= MAX_MESSAGES:
        parser.error(f"--messages must be 1-{MAX_MESSAGES}")
    if not 1 <= args.write_batch <= 100_000:
        parser.error("--write-batch must be 1-100000")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_publish"]:
        return publisher_main(int(argv[1]), argv[2], Path(argv[3]))
    if argv[:1] == ["--_subscribe"]:
        return subscriber_main(int(argv[1]), argv[2], int(argv[3]))
    args = parse_args(argv)
    load_before = load_1m()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="garden-bench-ingest-"))
    broker = Broker(workdir, max_inflight=args.max_inflight)
    influxd = Influxd(workdir)
    results: list[RunResult] = []
    try:
        from garden.points import telemetry_lines

        log(f"{args.messages:,} messages x {SENSORS} sensors over {args.nodes} nodes, {args.runs} run(s); {workdir}")
        messages = make_messages(args.messages, args.nodes, args.seed)
        feed = feed_file(workdir / "messages.tsv", messages)
        lines = [ln for _, p in messages for ln in telemetry_lines("bench-c", json.loads(p))]
        bodies = ["\n".join(lines[i : i + args.write_batch]).encode() for i in range(0, len(lines), args.write_batch)]
        log(
            f"payloads {min(len(p) for _, p in messages)}-{max(len(p) for _, p in messages)} bytes; "
            f"{len(lines):,} points in {len(bodies)} /write bodies"
        )
        broker.start()
        influxd.start()
        log(
            f"mosquitto on 127.0.0.1:{broker.port} (max_inflight_messages {args.max_inflight}), "
            f"influxd on {influxd.url}"
        )
        for run in range(1, args.runs + 1):
            result = one_run(run, workdir, broker, influxd, feed, bodies, len(lines), args)
            results.append(result)
            log(f"run {run}: (b)/(a) = {result.ratio_b_a}" + (f" -- {result.problems}" if result.problems else ""))
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
        elif results:
            shutil.rmtree(workdir, ignore_errors=True)

    med = medians(results)
    info = machine_info(load_before, influxd=True)
    ratio_of_medians = (
        round(med["b_msgs_per_s"] / med["a_msgs_per_s"], 3) if med["a_msgs_per_s"] and med["b_msgs_per_s"] else None
    )
    met = med["ratio_b_a"] is not None and med["ratio_b_a"] >= 0.5
    print(
        f"\nIngest benchmark: {args.messages:,} messages (7 sensors each, {args.nodes} nodes) per run, "
        f"{args.runs} run(s); {machine_summary(info)}\n"
    )
    print(table(THROUGHPUT, results, med))
    print()
    print(table(COST, results, med))
    profiled = " (py-spy attached: (b) is slowed down)" if args.py_spy else ""
    print(
        f"\nmedian: (a) plain paho subscriber {cell(med['a_msgs_per_s'])} msg/s; "
        f"(b) hub {cell(med['b_msgs_per_s'])} msg/s{profiled}; "
        f"(c) InfluxDB {cell(med['c_points_per_s'])} points/s = {cell(med['c_msgs_per_s'])} msg/s of 7 points.\n"
        f"(b)/(a): median of the runs' ratios {med['ratio_b_a']}, ratio of the medians {ratio_of_medians}. "
        f"Target: the hub within a factor of two of the plain subscriber, (b)/(a) >= 0.5: "
        f"{'met' if met else 'NOT met'}.\n"
        f"hub: {cell(med['b_hub_cpu_s_per_1k'])} CPU-s per 1,000 messages, max RSS {cell(med['b_hub_max_rss_mib'])} MiB"
    )
    bad = [r for r in results if not r.ok]
    write_results(
        args.json,
        info,
        args,
        median=med,
        ratio_of_medians=ratio_of_medians,
        target_met=met,
        runs=[asdict(r) for r in results],
        ok=not bad,
    )
    if bad:
        warn_invalid(
            [
                "WARNING: MESSAGES PUBLISHED AND MESSAGES RECEIVED / POINTS STORED DIFFER",
                "(or the hub refused, spooled or failed): these figures are not valid",
                *(f"RUN {r.run}: {problem}" for r in bad for problem in r.problems),
            ]
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
