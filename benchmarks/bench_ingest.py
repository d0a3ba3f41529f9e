#!/usr/bin/env python3
"""Hub ingest rate: ``garden hub run`` against the broker's limits, Node-RED and InfluxDB's own write limit.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_ingest.py [--runs 3] [--messages 20000] [--skip nodered] [--json out.json]

One private Mosquitto and one private influxd (temp dirs, free loopback
ports) for the whole benchmark. Each run measures, in a rotating order
(run 1: a0 a b b2 n c, run 2: a b b2 n c a0, ...):

(a0) **mosquitto_sub**, Mosquitto's own C client, at QoS 0 and at QoS 1
     (``-V 5 -C N+1``, output to a file): the broker's delivery limit.
(a)  **plain paho subscriber**: a child process with paho-mqtt 2.x (VERSION2
     callbacks, MQTT v5, automatic acks) that only counts messages and keeps
     their payloads, at QoS 1 (and at QoS 0). The ceiling for Python.
(b)  **hub**: ``garden hub run`` in its own process, with its defaults
     (persistent session, QoS 1, manual acks once a batch is durable in
     InfluxDB, ``batch_size`` 5000, ``batch_ms`` 200), from the moment it is
     let go until every point is queryable (``SELECT count("seq") FROM
     "soil_moisture"``, polled every 50 ms).
(b2) **two hubs** on one MQTT v5 shared subscription (``[hub] shared_group =
     "ingest"``), the second with ``--no-commons --no-watch``.
(n)  **Node-RED** (pinned in nodered/, see peer_nodered.py): ``mqtt in`` (QoS 1,
     persistent session) -> ``json`` -> ``function`` -> node-red-contrib-influxdb,
     as ``influxdb out`` (one message and one HTTP write per point) and as
     ``join`` (1000 messages or 200 ms) -> ``influx batch``. Same 7 points per
     message as the hub; done when all of them are in InfluxDB.
(c)  **InfluxDB**: the same points (``garden.points.telemetry_lines``), posted
     to ``/write`` in batches of 5,000 lines, one after another.

Every consumer gets the same full 7-sensor telemetry payloads, as the bridge
makes them (``calibrate`` + ``telemetry_payload``), spread over ``--nodes``
nodes. Each is started, subscribed (the hub: its retained status says online;
mosquitto_sub and Node-RED: a warm-up message has come through) and then
frozen with SIGSTOP while a separate publisher process (paho, QoS 1) puts
every message into the broker, which holds them in the consumer's session.
The window starts at SIGCONT, so the publisher's speed and CPU are not part
of it. CPU is utime + stime from ``/proc/<pid>/stat`` over the window (for
mosquitto_sub, its rusage); max RSS is the peak since exec (``VmHWM``, read just before the stop; bench_harness.Usage).

The exit status is 1 when, in any run, messages published and messages
received (a0, a) or points stored (b, b2, n, c) differ, or a hub refused,
spooled or failed anything; 2 when a run cannot be set up. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import re
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
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"


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


def subscriber_main(port: int, topic: str, expected: int, qos: int = 1) -> int:
    """Child: the plain paho subscriber. Counts messages (and keeps them) until its stdin closes."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    payloads: list[bytes] = []
    times = [0.0, 0.0]  # first, last

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            say(event="error", error=f"connect refused: {reason}")
        else:
            client.subscribe(topic, qos=qos)

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
        if readable and not os.read(sys.stdin.fileno(), 4096):
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
    """``garden hub run`` in its own process. ``name`` sets its hub id, config file, data dir and log."""

    def __init__(
        self,
        workdir: Path,
        broker: Broker,
        influx_url: str,
        garden: str,
        db: str,
        extra: str,
        name: str = "hub",
        hub_id: str = HUB_ID,
        flags: tuple[str, ...] = (),
    ) -> None:
        exe = Path(sys.executable).parent / "garden"  # the venv's console script
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "garden"]
        cmd += ["hub", "run", "--mqtt", broker.url, "--influx", influx_url, "--garden", garden, *flags]
        # No GARDEN_* from the caller's shell, and a config file with nothing but
        # --hub-toml's lines, so neither /etc/garden/garden.toml nor ~/.config's is read.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
        (workdir / f"{name}.toml").write_text(f"[hub]\n{extra}\n" if extra else "")
        env.update(
            GARDEN_CONFIG=str(workdir / f"{name}.toml"),
            GARDEN_DATA_DIR=str(workdir / f"{name}-data"),
            GARDEN_HUB_ID=hub_id,
            GARDEN_INFLUX_DATABASE=db,
        )
        self.logfile = workdir / f"{name}.log"
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=out)
        self.pid = self.proc.pid
        self.garden = garden
        self.hub_id = hub_id
        self.broker = broker
        self.rusage: Any = None

    def status(self, wait_s: float = 0.3) -> dict[str, Any]:
        from firmware_bridge.mqtt_link import parse_broker_url, read_retained

        topic = f"garden/{self.garden}/hub/{self.hub_id}/status"
        found = read_retained(parse_broker_url(self.broker.url), (topic,), wait_s=wait_s)
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
    # (a0) the broker's own C client: mosquitto_sub at QoS 0 and QoS 1
    a0q0_published: int = 0
    a0q0_received: int = 0
    a0q0_window_s: float | None = None
    a0q0_msgs_per_s: float | None = None
    a0q0_sub_cpu_s_per_1k: float | None = None
    a0q1_published: int = 0
    a0q1_received: int = 0
    a0q1_window_s: float | None = None
    a0q1_msgs_per_s: float | None = None
    a0q1_sub_cpu_s_per_1k: float | None = None
    # (a) plain paho subscriber, QoS 1 (and aq0_: the same at QoS 0)
    a_published: int = 0
    a_received: int = 0
    a_distinct: int = 0
    a_window_s: float | None = None
    a_msgs_per_s: float | None = None
    a_subscriber_cpu_s_per_1k: float | None = None
    a_broker_cpu_s_per_1k: float | None = None
    a_publish_msgs_per_s: float = 0.0
    aq0_published: int = 0
    aq0_received: int = 0
    aq0_distinct: int = 0
    aq0_window_s: float | None = None
    aq0_msgs_per_s: float | None = None
    aq0_subscriber_cpu_s_per_1k: float | None = None
    aq0_broker_cpu_s_per_1k: float | None = None
    aq0_publish_msgs_per_s: float = 0.0
    # (b) hub
    b_published: int = 0
    b_stored: int = 0  # soil_moisture points: one per message
    b_points: int = 0  # all seven measurements
    b_window_s: float | None = None
    b_msgs_per_s: float | None = None
    b_points_per_s: float | None = None
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
    # (b2) two hubs on one shared subscription ($share/ingest/...)
    bw_published: int = 0
    bw_stored: int = 0
    bw_window_s: float | None = None
    bw_msgs_per_s: float | None = None
    bw_hub_cpu_s_per_1k: float | None = None
    bw_hub_cores: float | None = None
    bw_hub_max_rss_mib: float | None = None

    b2_published: int = 0
    b2_stored: int = 0
    b2_points: int = 0
    b2_window_s: float | None = None
    b2_msgs_per_s: float | None = None
    b2_received_each: list[int] = field(default_factory=list)  # the hubs' own "readings" counters
    b2_hub_cpu_s_per_1k: float | None = None  # both hubs together
    b2_hub_max_rss_mib: float | None = None  # the larger of the two
    b2_hub_exits: list[int | None] = field(default_factory=list)
    # (n) Node-RED: nout_ = influxdb out (one write per point), nbatch_ = join + influx batch
    nout_published: int = 0
    nout_stored: int = 0  # soil_moisture points, not counting the warm-up message
    nout_points: int = 0
    nout_window_s: float | None = None
    nout_msgs_per_s: float | None = None
    nout_cpu_s_per_1k: float | None = None
    nout_max_rss_mib: float | None = None
    nout_influxd_cpu_s_per_1k: float | None = None
    nout_errors_logged: int = 0
    nout_exit: int | None = None
    nbatch_published: int = 0
    nbatch_stored: int = 0
    nbatch_points: int = 0
    nbatch_window_s: float | None = None
    nbatch_msgs_per_s: float | None = None
    nbatch_cpu_s_per_1k: float | None = None
    nbatch_max_rss_mib: float | None = None
    nbatch_influxd_cpu_s_per_1k: float | None = None
    nbatch_errors_logged: int = 0
    nbatch_exit: int | None = None
    # (c) InfluxDB /write
    c_points: int = 0
    c_stored: int = 0
    c_batches: int = 0
    c_window_s: float | None = None
    c_points_per_s: float | None = None
    c_msgs_per_s: float | None = None  # points/s / 7: messages' worth
    c_influxd_cpu_s_per_1k_points: float | None = None
    # ratios, per run
    ratio_b_a: float | None = None  # hub / paho QoS 1
    ratio_b_a0q1: float | None = None  # hub / mosquitto_sub QoS 1
    ratio_b_n: float | None = None  # hub / the better Node-RED flow
    ratio_b2_b: float | None = None  # two hubs / one hub
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def feed_file(path: Path, messages: list[tuple[str, bytes]]) -> Path:
    path.write_bytes(b"".join(node.encode() + b"\t" + payload + b"\n" for node, payload in messages))
    return path


def rate(count: int, window: float) -> float | None:
    return round(count / window, 1) if window > 0 else None


def wait_proc(proc: subprocess.Popen[bytes], timeout: float) -> tuple[float, int, Any]:
    """Block in wait4 until the child exits (killed after ``timeout`` s): (exit time, status, rusage)."""

    def kill() -> None:
        if proc.poll() is None:
            proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, rusage = os.wait4(proc.pid, 0)
        t = time.monotonic()
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return t, proc.returncode, rusage


def measure_a0(
    r: RunResult, rundir: Path, broker: Broker, feed: Path, n: int, qos: int, args: argparse.Namespace
) -> None:
    """(a0): ``mosquitto_sub -q QOS -C N+1``, frozen while the backlog is published; stops by itself at N+1."""
    garden = f"bench-m{qos}-{r.run}"
    topic = f"garden/{garden}/node/+/telemetry"
    out_path = rundir / f"mosquitto_sub-q{qos}.out"
    cmd = [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "5", "-q", str(qos)]
    cmd += ["-i", f"bench-msub-{qos}-{r.run}", "-k", "60", "-C", str(n + 1), "-t", topic]
    with out_path.open("wb") as out, (rundir / f"mosquitto_sub-q{qos}.log").open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    try:
        # Subscribed once the warm-up message is out (mosquitto_sub flushes each message).
        warm = feed_file(rundir / f"warmup-{garden}.tsv", [warmup_message(feed)])
        deadline = time.monotonic() + 30
        while out_path.stat().st_size == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"(a0) mosquitto_sub -q {qos} not subscribed; see {rundir}")
            publish(rundir, broker, garden, warm)
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGSTOP)
        pub = publish(rundir, broker, garden, feed)
        published = int(pub["published"])
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGCONT)
        t1, status, rusage = wait_proc(proc, args.timeout)
    finally:
        if proc.returncode is None:
            reap(proc, 5)
    lines = out_path.read_bytes().splitlines()
    keys = set()
    for raw in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            body = json.loads(raw)
            if body["node"] != "warmup":
                keys.add((body["node"], body["boot"], body["seq"]))
    received = sum(1 for raw in lines if b'"node":"warmup"' not in raw)
    window = round(t1 - t0, 3)
    cpu = (rusage.ru_utime + rusage.ru_stime) if rusage is not None else None
    per = round(cpu / received * 1000, 4) if cpu is not None and received else None
    prefix = f"a0q{qos}_"
    for key, value in (
        ("published", published),
        ("received", received),
        ("window_s", window),
        ("msgs_per_s", rate(received, window)),
        ("sub_cpu_s_per_1k", per),
    ):
        setattr(r, prefix + key, value)
    if status != 0:
        r.problems.append(f"(a0) mosquitto_sub -q {qos} exited with {status}")
    if received != published or len(keys) != received:
        r.problems.append(f"(a0) QoS {qos}: published {published}, received {received}, {len(keys)} distinct")


def warmup_message(feed: Path) -> tuple[str, bytes]:
    """The feed's first message as node ``warmup``: it never overwrites a measured point."""
    _, payload = feed.read_bytes().split(b"\n", 1)[0].split(b"\t", 1)
    body = json.loads(payload)
    body["node"] = "warmup"
    return "warmup", json.dumps(body, separators=(",", ":")).encode()


def measure_a(
    r: RunResult, rundir: Path, broker: Broker, feed: Path, n: int, args: argparse.Namespace, qos: int = 1
) -> None:
    garden = f"bench-a{qos}-{r.run}"
    topic = f"garden/{garden}/node/+/telemetry"
    sub = Child(rundir, f"subscriber-q{qos}", ["--_subscribe", str(broker.port), topic, str(n), str(qos)])
    try:
        sub.next_event(30, ("ready",))
        os.kill(sub.pid, signal.SIGSTOP)
        pub = publish(rundir, broker, garden, feed)
        published = int(pub["published"])
        publish_rate = round(published / pub["seconds"], 1)
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
                log(f"run {r.run} (a) QoS {qos}: stuck at {count} of {n} messages")
                break
        after = cpu_of(pids)
        sub.close()
        final = sub.next_event(15, ("final",))
    finally:
        sub.close()
    received, distinct = int(final["count"]), int(final["distinct"])
    last = float(final["last"]) if final["count"] else t0
    window = round(last - t0, 3)
    prefix = "a_" if qos == 1 else "aq0_"
    for key, value in (
        ("published", published),
        ("publish_msgs_per_s", publish_rate),
        ("received", received),
        ("distinct", distinct),
        ("window_s", window),
        ("msgs_per_s", rate(received, window)),
        ("subscriber_cpu_s_per_1k", per_1k(before, after, "subscriber", received)),
        ("broker_cpu_s_per_1k", per_1k(before, after, "broker", received)),
    ):
        setattr(r, prefix + key, value)
    if received != published:
        r.problems.append(f"(a) QoS {qos}: published {published} != received {received}")
    if distinct != received:
        r.problems.append(f"(a) QoS {qos}: {received - distinct} duplicate message(s)")


# (b) is the ingester: `garden hub run --no-commons --no-watch`, as every worker but one
# runs when several share the stream, and as a regional hub (--all-gardens) runs. (bw) is
# the whole hub of one garden, with the watch and the commons in their threads: the
# watch has its own MQTT client and looks at every reading too (docs/scaling.md).
INGEST_ONLY = ("--no-commons", "--no-watch")


def measure_b(
    r: RunResult,
    rundir: Path,
    broker: Broker,
    influxd: Influxd,
    feed: Path,
    n: int,
    args: argparse.Namespace,
    whole: bool = False,
) -> None:
    tag = "w" if whole else "b"
    garden = f"bench-{tag}{r.run}"
    influx = database(influxd.url, f"bench_hub{tag}_{r.run}")
    hub = HubProc(
        rundir,
        broker,
        influxd.url,
        garden,
        influx.settings.database,
        args.hub_toml,
        name=f"hub-{tag}",
        flags=() if whole else INGEST_ONLY,
    )
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
    window = r.b_window_s = round(t1 - t0, 3)
    r.b_msgs_per_s = rate(stored, window)
    r.b_points_per_s = rate(stored * SENSORS, window)
    hub_cpu = (after["hub"] or 0.0) - (before["hub"] or 0.0)
    r.b_hub_cpu_s_per_1k = per_1k(before, after, "hub", stored)
    r.b_hub_cores = round(hub_cpu / window, 2) if window > 0 else None
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
    elif (
        counters.get("readings") != r.b_published
        or counters.get("acked") != counters.get("received")
        or counters.get("received", 0) < r.b_published
    ):  # "received" also counts what else it is subscribed to (the watch's bed needs and alerts)
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
    window = r.c_window_s = round(t1 - t0, 3)
    r.c_points_per_s = rate(lines, window)
    r.c_msgs_per_s = rate(lines // SENSORS, window)
    r.c_influxd_cpu_s_per_1k_points = per_1k(before, after, "influxd", lines)
    if r.c_stored != lines or counts["soil_moisture"] != n:
        r.problems.append(f"(c) posted {lines} points, {r.c_stored} stored ({counts['soil_moisture']} soil_moisture)")


def measure_b2(
    r: RunResult, rundir: Path, broker: Broker, influxd: Influxd, feed: Path, n: int, args: argparse.Namespace
) -> None:
    """(b2): two ingesters (--no-commons --no-watch, as (b)), ``[hub] shared_group = "ingest"``."""
    garden = f"bench-s{r.run}"
    influx = database(influxd.url, f"bench_shared_{r.run}")
    extra = "\n".join(x for x in (args.hub_toml, 'shared_group = "ingest"') if x)
    hubs: list[HubProc] = []
    try:
        flags = INGEST_ONLY
        hubs.append(
            HubProc(rundir, broker, influxd.url, garden, influx.settings.database, extra, "hub1", "bench-1", flags)
        )
        hubs[0].wait_online()
        hubs.append(
            HubProc(rundir, broker, influxd.url, garden, influx.settings.database, extra, "hub2", "bench-2", flags)
        )
        hubs[1].wait_online()
        time.sleep(0.5)
        for hub in hubs:
            os.kill(hub.pid, signal.SIGSTOP)
        pub = publish(rundir, broker, garden, feed)
        r.b2_published = published = int(pub["published"])
        pids: dict[str, int | None] = {f"hub{i}": hub.pid for i, hub in enumerate(hubs)}
        before = cpu_of(pids)
        t0 = time.monotonic()
        for hub in hubs:
            os.kill(hub.pid, signal.SIGCONT)
        stored, last_change, t1 = 0, t0, t0
        while True:
            now_stored = soil_count(influx)
            t1 = time.monotonic()
            if now_stored >= published:
                stored = now_stored
                break
            for hub in hubs:
                if hub.proc.poll() is not None:
                    raise BenchError(f"(b2) a hub exited ({hub.proc.returncode}):\n{hub.tail()}")
            if now_stored != stored:
                stored, last_change = now_stored, t1
            elif t1 - last_change > args.idle or t1 - t0 > args.timeout:
                log(f"run {r.run} (b2): stuck at {stored} of {published} points")
                break
            time.sleep(POLL_S)
        after = cpu_of(pids)
        r.b2_hub_exits = [hub.stop() for hub in hubs]
        statuses = [hub.status(0.5) for hub in hubs]
        counts = all_counts(influx)
        r.b2_stored, r.b2_points = counts["soil_moisture"], sum(counts.values())
    finally:
        for hub in hubs:
            hub.stop()
        drop(influx)
    window = r.b2_window_s = round(t1 - t0, 3)
    r.b2_msgs_per_s = rate(stored, window)
    cpu = sum((after[k] or 0.0) - (before[k] or 0.0) for k in pids)
    r.b2_hub_cpu_s_per_1k = round(cpu / stored * 1000, 4) if stored else None
    rss = [hub.rusage.ru_maxrss / 1024 for hub in hubs if hub.rusage is not None]
    r.b2_hub_max_rss_mib = round(max(rss), 1) if rss else None
    r.b2_received_each = [int(s.get("counters", {}).get("readings", -1)) for s in statuses]
    if r.b2_stored != published or r.b2_points != SENSORS * published:
        r.problems.append(f"(b2) published {published}: {r.b2_stored} soil_moisture points, {r.b2_points} in all")
    if sum(r.b2_received_each) != published or any(s.get("state") != "offline" for s in statuses):
        r.problems.append(f"(b2) the hubs' readings counters {r.b2_received_each} for {published} messages")
    for s in statuses:
        counters = s.get("counters", {})
        if counters.get("acked") != counters.get("received"):
            r.problems.append(f"(b2) a hub did not ack all it received: {counters}")
        if s.get("refused") or counters.get("spooled_points") or counters.get("unstored_batches"):
            r.problems.append(f"(b2) a hub refused or spooled: {s}")
    if any(code != 0 for code in r.b2_hub_exits):
        r.problems.append(f"(b2) the hubs exited with {r.b2_hub_exits}")


def measure_n(
    r: RunResult,
    rundir: Path,
    broker: Broker,
    influxd: Influxd,
    feed: Path,
    variant: str,
    args: argparse.Namespace,
) -> None:
    """(n): Node-RED running one flow variant; frozen like the hub; done when all 7 x N points are in."""
    from peer_nodered import NodeRed

    prefix = f"n{variant}_"
    garden = f"bench-n{variant}{r.run}"
    influx = database(influxd.url, f"bench_nodered_{variant}_{r.run}")
    red = NodeRed(
        rundir, variant, broker.port, f"bench-nodered-{variant}-{r.run}", influxd.port, influx.settings.database
    )
    pids = {"node-red": red.pid, "influxd": influxd.proc.pid if influxd.proc else None}
    try:
        red.wait_connected()
        # A warm-up message through the whole flow: subscribed, InfluxDB connection open, code warm.
        publish(rundir, broker, garden, feed_file(rundir / f"warmup-{garden}.tsv", [warmup_message(feed)]))
        wait_until(lambda: sum(all_counts(influx).values()) >= SENSORS, 30, "Node-RED's warm-up point", 0.1)
        errors_before = len(red.errors())
        os.kill(red.pid, signal.SIGSTOP)
        pub = publish(rundir, broker, garden, feed)
        published = int(pub["published"])
        want = SENSORS * (published + 1)
        before = cpu_of(pids)
        t0 = time.monotonic()
        os.kill(red.pid, signal.SIGCONT)
        points, last_change, t1 = 0, t0, t0
        while True:
            now_points = sum(all_counts(influx).values())
            t1 = time.monotonic()
            if now_points >= want:
                points = now_points
                break
            if red.proc.poll() is not None:
                raise BenchError(f"(n) Node-RED exited ({red.proc.returncode}):\n{red.tail()}")
            if now_points != points:
                points, last_change = now_points, t1
            elif t1 - last_change > args.idle or t1 - t0 > args.timeout:
                log(f"run {r.run} (n) {variant}: stuck at {points} of {want} points")
                break
            time.sleep(POLL_S)
        after = cpu_of(pids)
        errors = len(red.errors()) - errors_before
        exit_status = red.stop()
        counts = all_counts(influx)
    finally:
        red.stop()
        drop(influx)
    stored = counts["soil_moisture"] - 1
    window = round(t1 - t0, 3)
    msgs = (points // SENSORS) - 1
    for key, value in (
        ("published", published),
        ("stored", stored),
        ("points", sum(counts.values()) - SENSORS),
        ("window_s", window),
        ("msgs_per_s", rate(msgs, window)),
        ("cpu_s_per_1k", per_1k(before, after, "node-red", msgs)),
        ("influxd_cpu_s_per_1k", per_1k(before, after, "influxd", msgs)),
        ("max_rss_mib", round(red.rusage.ru_maxrss / 1024, 1) if red.rusage is not None else None),
        ("errors_logged", errors),
        ("exit", exit_status),
    ):
        setattr(r, prefix + key, value)
    if stored != published or any(c != published + 1 for c in counts.values()):
        r.problems.append(f"(n) {variant}: published {published} (+1 warm-up), stored {counts}")


def start_py_spy(out: Path, pid: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "py-spy"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe if exe.exists() else "py-spy"), "record", "--pid", str(pid), "--rate", "200", "--threads"]
    cmd += ["--nonblocking", "--idle", "--format", "raw", "--output", f"{out}.txt"]
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


PARTS = ("a0", "a", "b", "bw", "b2", "n", "c")
SKIPPABLE = ("a0", "a-qos0", "bw", "b2", "nodered", "nodered-out", "nodered-batch", "c")


def one_run(
    run: int,
    workdir: Path,
    broker: Broker,
    influxd: Influxd,
    feeds: dict[str, Path],
    bodies: list[bytes],
    lines: int,
    args: argparse.Namespace,
) -> RunResult:
    rundir = workdir / f"run-{run}"
    rundir.mkdir()
    k = (run - 1) % len(PARTS)
    order = [p for p in PARTS[k:] + PARTS[:k] if not skipped(p, args)]
    r = RunResult(run=run, order=" ".join(order), loadavg_1m=load_1m())
    servers = {
        "broker": broker.proc.pid if broker.proc else None,
        "influxd": influxd.proc.pid if influxd.proc else None,
    }
    feed, n = feeds["all"], args.messages
    for what in order:
        busy = quiet(servers, 0.05, args.settle)  # InfluxDB compacts and drops databases in the background
        if busy >= 0.05:
            log(f"run {run} ({what}): servers still using {busy:.2f} cores; going ahead")
        if what == "a0":
            for qos in (0, 1):
                measure_a0(r, rundir, broker, feed, n, qos, args)
                log(
                    f"run {run} (a0) mosquitto_sub QoS {qos}: {getattr(r, f'a0q{qos}_received'):,} in "
                    f"{getattr(r, f'a0q{qos}_window_s')}s, {cell(getattr(r, f'a0q{qos}_msgs_per_s'))} msg/s"
                )
        elif what == "a":
            for qos in (1,) if "a-qos0" in args.skip else (1, 0):
                measure_a(r, rundir, broker, feed, n, args, qos)
                p = "a_" if qos == 1 else "aq0_"
                log(
                    f"run {run} (a) paho QoS {qos}: {getattr(r, p + 'received'):,} in "
                    f"{getattr(r, p + 'window_s')}s, {cell(getattr(r, p + 'msgs_per_s'))} msg/s"
                )
        elif what == "b":
            measure_b(r, rundir, broker, influxd, feed, n, args)
            log(
                f"run {run} (b) hub: {r.b_stored:,}/{r.b_published:,} in {r.b_window_s}s, "
                f"{cell(r.b_msgs_per_s)} msg/s, {r.b_hub_cpu_s_per_1k} CPU-s/1k, RSS {r.b_hub_max_rss_mib} MiB"
            )
        elif what == "bw":
            whole = RunResult(run=run, order="", loadavg_1m=0.0)
            measure_b(whole, rundir, broker, influxd, feed, n, args, whole=True)
            r.bw_published, r.bw_stored, r.bw_window_s = whole.b_published, whole.b_stored, whole.b_window_s
            r.bw_msgs_per_s, r.bw_hub_cpu_s_per_1k = whole.b_msgs_per_s, whole.b_hub_cpu_s_per_1k
            r.bw_hub_max_rss_mib, r.bw_hub_cores = whole.b_hub_max_rss_mib, whole.b_hub_cores
            r.problems += [p.replace("(b)", "(bw)") for p in whole.problems]
            log(
                f"run {run} (bw) whole hub: {r.bw_stored:,}/{r.bw_published:,} in {r.bw_window_s}s, "
                f"{cell(r.bw_msgs_per_s)} msg/s, {r.bw_hub_cpu_s_per_1k} CPU-s/1k, RSS {r.bw_hub_max_rss_mib} MiB"
            )
        elif what == "b2":
            measure_b2(r, rundir, broker, influxd, feed, n, args)
            log(
                f"run {run} (b2) two hubs: {r.b2_stored:,}/{r.b2_published:,} in {r.b2_window_s}s, "
                f"{cell(r.b2_msgs_per_s)} msg/s (readings per hub {r.b2_received_each})"
            )
        elif what == "n":
            for variant in ("batch", "out"):
                if f"nodered-{variant}" in args.skip:
                    continue
                measure_n(r, rundir, broker, influxd, feeds[variant], variant, args)
                p = f"n{variant}_"
                log(
                    f"run {run} (n) Node-RED {variant}: {getattr(r, p + 'stored'):,}/{getattr(r, p + 'published'):,} "
                    f"in {getattr(r, p + 'window_s')}s, {cell(getattr(r, p + 'msgs_per_s'))} msg/s, "
                    f"{getattr(r, p + 'errors_logged')} errors logged"
                )
        else:
            measure_c(r, influxd, bodies, lines, n)
            log(f"run {run} (c) InfluxDB: {r.c_stored:,}/{r.c_points:,} points in {r.c_window_s}s")
    r.ratio_b_a = ratio(r.b_msgs_per_s, r.a_msgs_per_s)
    r.ratio_b_a0q1 = ratio(r.b_msgs_per_s, r.a0q1_msgs_per_s)
    r.ratio_b_n = ratio(r.b_msgs_per_s, best_nodered(r.nout_msgs_per_s, r.nbatch_msgs_per_s))
    r.ratio_b2_b = ratio(r.b2_msgs_per_s, r.b_msgs_per_s)
    r.ok = not r.problems
    return r


def skipped(part: str, args: argparse.Namespace) -> bool:
    if part == "n":
        return "nodered" in args.skip or {"nodered-out", "nodered-batch"} <= set(args.skip)
    return part in args.skip


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def best_nodered(*rates: float | None) -> float | None:
    values = [x for x in rates if x]
    return max(values) if values else None


# ------------------------------------------------------------------- report

DELIVERY = (
    ("run", "run"),
    ("order", "order"),
    ("a0q0_msgs_per_s", "(a0) mosquitto_sub QoS 0"),
    ("a0q1_msgs_per_s", "(a0) mosquitto_sub QoS 1"),
    ("aq0_msgs_per_s", "(a) paho QoS 0"),
    ("a_msgs_per_s", "(a) paho QoS 1"),
)
INGEST = (
    ("run", "run"),
    ("b_msgs_per_s", "(b) hub ingester"),
    ("bw_msgs_per_s", "(bw) whole hub (watch, commons)"),
    ("b2_msgs_per_s", "(b2) 2 ingesters, shared sub"),
    ("ratio_b2_b", "(b2)/(b)"),
    ("nbatch_msgs_per_s", "(n) Node-RED join + influx batch"),
    ("nout_msgs_per_s", "(n) Node-RED influxdb out"),
    ("c_msgs_per_s", "(c) InfluxDB /write, msg's worth"),
    ("c_points_per_s", "(c) InfluxDB points/s"),
)
RATIOS = (
    ("run", "run"),
    ("ratio_b_a", "(b)/(a) hub / paho QoS 1"),
    ("ratio_b_a0q1", "(b)/(a0) hub / mosquitto_sub QoS 1"),
    ("ratio_b_n", "(b)/(n) hub / best Node-RED"),
)
WINDOWS = (
    ("run", "run"),
    ("a0q0_window_s", "(a0) QoS 0"),
    ("a0q1_window_s", "(a0) QoS 1"),
    ("aq0_window_s", "(a) QoS 0"),
    ("a_window_s", "(a) QoS 1"),
    ("b_window_s", "(b)"),
    ("bw_window_s", "(bw)"),
    ("b2_window_s", "(b2)"),
    ("nbatch_window_s", "(n) batch"),
    ("nout_window_s", "(n) out"),
    ("c_window_s", "(c)"),
)
COST = (
    ("run", "run"),
    ("b_hub_cpu_s_per_1k", "hub CPU-s / 1k msg"),
    ("b_hub_main_thread_cpu_s_per_1k", "of which main thread (store, ack)"),
    ("b_hub_other_threads_cpu_s_per_1k", "of which other threads (paho, parser)"),
    ("b_hub_cores", "hub cores busy"),
    ("b_hub_max_rss_mib", "hub max RSS (MiB)"),
    ("bw_hub_cpu_s_per_1k", "(bw) whole hub CPU-s / 1k msg"),
    ("bw_hub_max_rss_mib", "(bw) whole hub max RSS (MiB)"),
    ("b2_hub_cpu_s_per_1k", "(b2) both hubs CPU-s / 1k msg"),
    ("b2_hub_max_rss_mib", "(b2) larger hub max RSS (MiB)"),
    ("nbatch_cpu_s_per_1k", "Node-RED batch CPU-s / 1k msg"),
    ("nbatch_max_rss_mib", "Node-RED batch max RSS (MiB)"),
    ("nout_cpu_s_per_1k", "Node-RED out CPU-s / 1k msg"),
    ("nout_max_rss_mib", "Node-RED out max RSS (MiB)"),
    ("a0q1_sub_cpu_s_per_1k", "mosquitto_sub QoS 1 CPU-s / 1k msg"),
    ("a_subscriber_cpu_s_per_1k", "paho QoS 1 CPU-s / 1k msg"),
    ("b_influxd_cpu_s_per_1k", "influxd CPU-s / 1k msg (b)"),
    ("nbatch_influxd_cpu_s_per_1k", "influxd CPU-s / 1k msg (n batch)"),
    ("nout_influxd_cpu_s_per_1k", "influxd CPU-s / 1k msg (n out)"),
    ("b_broker_cpu_s_per_1k", "broker CPU-s / 1k msg (b)"),
    ("c_influxd_cpu_s_per_1k_points", "influxd CPU-s / 1k points (c)"),
)
TABLES = (DELIVERY, INGEST, RATIOS, WINDOWS, COST)
NOT_MEDIAN = {"run", "order"}
RSS_TARGET_MB = 150  # megabytes, 10**6 bytes


def medians(results: list[RunResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for columns in TABLES:
        for key, _ in columns:
            if key in NOT_MEDIAN:
                continue
            values = [getattr(r, key) for r in results if getattr(r, key) is not None]
            out[key] = round(statistics.median(values), 4) if values else None
    for key in ("a_publish_msgs_per_s", "b_publish_msgs_per_s", "loadavg_1m"):
        out[key] = round(statistics.median(getattr(r, key) for r in results), 4)
    return out


def summary(med: dict[str, float | None], args: argparse.Namespace) -> tuple[list[str], dict[str, bool | None]]:
    """The summary lines and the issue's three targets (None: not measured)."""

    def of(a: str, b: str) -> float | None:
        x, y = med.get(a), med.get(b)
        return round(x / y, 3) if x and y else None

    best_n = best_nodered(med.get("nout_msgs_per_s"), med.get("nbatch_msgs_per_s"))
    which_n = (
        None
        if best_n is None
        else ("join + influx batch" if best_n == med.get("nbatch_msgs_per_s") else "influxdb out")
    )
    b_n = ratio(med.get("b_msgs_per_s"), best_n)
    # The RSS target holds for the hub as a garden runs it too (bw): the larger of the two.
    rss = max((x for x in (med.get("b_hub_max_rss_mib"), med.get("bw_hub_max_rss_mib")) if x), default=None)
    r_b_a, r_b_n = med.get("ratio_b_a"), med.get("ratio_b_n")
    met = {
        "b_a_ge_0.60": None if r_b_a is None else r_b_a >= 0.60,
        "b_n_ge_3": None if r_b_n is None else r_b_n >= 3,
        "hub_rss_lt_150MB": None if rss is None else rss * 1024 * 1024 < RSS_TARGET_MB * 1e6,
    }

    def verdict(key: str) -> str:
        return {True: "met", False: "NOT met", None: "not measured"}[met[key]]

    profiled = " (py-spy attached: (b) is slowed down)" if args.py_spy else ""
    lines = [
        f"median msg/s: (a0) mosquitto_sub QoS 0 {cell(med.get('a0q0_msgs_per_s'))}, "
        f"QoS 1 {cell(med.get('a0q1_msgs_per_s'))}; (a) paho QoS 0 {cell(med.get('aq0_msgs_per_s'))}, "
        f"QoS 1 {cell(med.get('a_msgs_per_s'))}.",
        f"median msg/s into InfluxDB: (b) hub {cell(med.get('b_msgs_per_s'))}{profiled}; (b2) two hubs "
        f"{cell(med.get('b2_msgs_per_s'))} (x{cell(of('b2_msgs_per_s', 'b_msgs_per_s'))} for 1 -> 2 workers); "
        f"(n) Node-RED join + influx batch {cell(med.get('nbatch_msgs_per_s'))}, influxdb out "
        f"{cell(med.get('nout_msgs_per_s'))}; (c) InfluxDB {cell(med.get('c_points_per_s'))} points/s = "
        f"{cell(med.get('c_msgs_per_s'))} msg/s of 7 points.",
        f"(b)/(a) hub / paho QoS 1: median of the runs' ratios {cell(med.get('ratio_b_a'))}, ratio of the medians "
        f"{cell(of('b_msgs_per_s', 'a_msgs_per_s'))}. Target >= 0.60: {verdict('b_a_ge_0.60')}.",
        f"(b)/(n) hub / the better Node-RED flow ({which_n or '-'}): median of the runs' ratios "
        f"{cell(med.get('ratio_b_n'))}, ratio of the medians {cell(b_n)}. Target >= 3: {verdict('b_n_ge_3')}.",
        f"(b)/(a0) hub / mosquitto_sub QoS 1: {cell(med.get('ratio_b_a0q1'))} (no target).",
        f"(bw) the whole hub (watch and commons on): {cell(med.get('bw_msgs_per_s'))} msg/s, "
        f"{cell(med.get('bw_hub_cpu_s_per_1k'))} CPU-s per 1,000 messages, max RSS "
        f"{cell(med.get('bw_hub_max_rss_mib'))} MiB.",
        f"hub (b): {cell(med.get('b_hub_cpu_s_per_1k'))} CPU-s per 1,000 messages, max RSS "
        f"{cell(med.get('b_hub_max_rss_mib'))} MiB; the larger of (b) and (bw) {cell(rss)} MiB. "
        f"Target < {RSS_TARGET_MB} MB ({RSS_TARGET_MB * 1e6 / 2**20:.0f} MiB): {verdict('hub_rss_lt_150MB')}.",
    ]
    return lines, met


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, each measuring every part; medians (3)")
    parser.add_argument("--messages", type=int, default=20_000, help="telemetry messages per run and part (20000)")
    parser.add_argument(
        "--nodered-out-messages",
        type=int,
        default=1_000,
        help="messages for Node-RED's influxdb out flow, 7 HTTP writes per message (1000; 0: --messages)",
    )
    parser.add_argument("--nodes", type=int, default=8, help="nodes the messages are spread over (8)")
    parser.add_argument("--write-batch", type=int, default=5000, help="(c): lines per /write request (5000)")
    parser.add_argument(
        "--max-inflight", type=int, default=0, help="Mosquitto's max_inflight_messages (0: no limit; deploy/ has 20)"
    )
    parser.add_argument("--hub-toml", default="", help="extra [hub] lines for the hub, e.g. 'batch_size = 1000'")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=SKIPPABLE,
        help="leave a part out (repeatable): " + ", ".join(SKIPPABLE),
    )
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
    if not 0 <= args.nodered_out_messages <= args.messages:
        parser.error("--nodered-out-messages must be 0 to --messages")
    if not 1 <= args.write_batch <= 100_000:
        parser.error("--write-batch must be 1-100000")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_publish"]:
        return publisher_main(int(argv[1]), argv[2], Path(argv[3]))
    if argv[:1] == ["--_subscribe"]:
        return subscriber_main(int(argv[1]), argv[2], int(argv[3]), int(argv[4]) if len(argv) > 4 else 1)
    args = parse_args(argv)
    load_before = load_1m()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="garden-bench-ingest-"))
    broker = Broker(workdir, max_inflight=args.max_inflight)
    influxd = Influxd(workdir)
    results: list[RunResult] = []
    nodered_versions: dict[str, str] = {}
    n_out = args.nodered_out_messages or args.messages
    try:
        from garden.points import telemetry_lines

        if "a0" not in args.skip and not os.path.exists(MOSQUITTO_SUB):
            raise BenchError(f"{MOSQUITTO_SUB} not found: apt-get install mosquitto-clients (or --skip a0)")
        if not skipped("n", args):
            import peer_nodered

            peer_nodered.ensure_installed()
            nodered_versions = peer_nodered.versions()
        log(f"{args.messages:,} messages x {SENSORS} sensors over {args.nodes} nodes, {args.runs} run(s); {workdir}")
        messages = make_messages(args.messages, args.nodes, args.seed)
        feeds = {
            "all": feed_file(workdir / "messages.tsv", messages),
            "out": feed_file(workdir / "messages-nodered-out.tsv", messages[:n_out]),
        }
        feeds["batch"] = feeds["all"]
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
            result = one_run(run, workdir, broker, influxd, feeds, bodies, len(lines), args)
            results.append(result)
            log(
                f"run {run}: (b)/(a) = {result.ratio_b_a}, (b)/(n) = {result.ratio_b_n}"
                + (f" -- {result.problems}" if result.problems else "")
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
        elif results:
            shutil.rmtree(workdir, ignore_errors=True)

    med = medians(results)
    info = machine_info(load_before, influxd=True)
    with contextlib.suppress(Exception):
        out = subprocess.run([MOSQUITTO_SUB, "--help"], capture_output=True, text=True, timeout=5).stdout
        # "mosquitto_sub version 2.0.11 running on libmosquitto 2.0.11.", on the help's second line
        found = re.search(r"mosquitto_sub version (\S+)", out)
        info["mosquitto_sub"] = found.group(1) if found else "?"
    info.update(nodered_versions)
    ratio_of_medians = ratio(med["b_msgs_per_s"], med["a_msgs_per_s"])
    lines_out, met = summary(med, args)
    versions = ", ".join(f"{k} {info[k]}" for k in ("mosquitto", "influxd", "node", "node-red") if k in info)
    print(
        f"\nIngest benchmark: {args.messages:,} messages (7 sensors each, {args.nodes} nodes) per run and part"
        + (f", {n_out:,} for Node-RED's influxdb out flow" if n_out != args.messages and not skipped("n", args) else "")
        + f", {args.runs} run(s); {machine_summary(info)}; {versions}\n"
    )
    titles = (
        "Broker to one subscriber that only counts (msg/s)",
        "Into InfluxDB (msg/s; each message is 7 points, all stored)",
        "Ratios",
        "Windows (s)",
        "Cost",
    )
    for title, columns in zip(titles, TABLES, strict=True):
        print(f"{title}:\n")
        print(table(columns, results, med))
        print()
    print("\n".join(lines_out))
    bad = [r for r in results if not r.ok]
    write_results(
        args.json,
        info,
        args,
        median=med,
        ratio_of_medians=ratio_of_medians,
        targets_met=met,
        summary=lines_out,
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
