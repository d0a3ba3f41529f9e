#!/usr/bin/env python3
"""Bridge throughput and CPU cost: simulated nodes on ptys -> ``garden bridge run`` -> Mosquitto.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_bridge.py [--runs 5] [--readings 20000] [--nodes 4] [--json out.json]

Three processes per run, plus one broker for all runs, so that the bridge's
CPU time can be read on its own:

* a private Mosquitto on a free loopback port (temp config, no persistence);
* a *feeder* (this script in ``--_feeder`` mode) that puts one pty pair per
  simulated node behind a symlink (the simulator's :class:`PtyPort`) and
  writes that node's lines (made beforehand by :class:`SimNode`, no faults)
  as fast as the port takes them, keeping whatever the pty would not take
  (flow control), so every reading is delivered intact and the bridge, not
  the source, sets the pace;
* the bridge, as ``garden bridge run`` with the venv's console script;
* in this process, a paho-mqtt (MQTT v5, QoS 1) subscriber on
  ``garden/bench/node/+/telemetry`` that counts what reaches the broker.

The window is from the first telemetry message received to the last one.
Medians over the runs are printed as a markdown table (and JSON with ``--json``).
Readings/s is ``(received - 1) / window``; bridge CPU is utime + stime from
``/proc/<pid>/stat`` read when the first and the last message arrive, per
1,000 readings; max RSS is the bridge's peak since exec (``VmHWM`` before the stop; bench_harness.Usage).

The exit status is 1 when what the feeder wrote and what the subscriber
received differ in any run (count, duplicates or missing sequence numbers),
or the bridge exits non-zero; 2 when a run cannot be set up. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_harness import (
    BenchError,
    Broker,
    cpu_seconds,
    load_1m,
    log,
    machine_info,
    machine_summary,
    table,
    wait_until,
    warn_invalid,
    write_results,
)

GARDEN = "bench"
BRIDGE_ID = "bench"
TOPIC = f"garden/{GARDEN}/node/+/telemetry"
SAMPLE_EVERY = 500  # also read the bridge's CPU every this many messages (fallback if some go missing)
MAX_READINGS = 150_000  # stays well under the spool's default max_rows (200,000)


# --------------------------------------------------------------- subscriber


@dataclass
class Received:
    """What the subscriber saw, filled in paho's network thread."""

    expected: int
    bridge_pid: int = 0
    other_pids: dict[str, int] = field(default_factory=dict)
    payloads: list[bytes] = field(default_factory=list)
    first_t: float = 0.0
    last_t: float = 0.0
    first_cpu: dict[str, float | None] = field(default_factory=dict)
    last_cpu: dict[str, float | None] = field(default_factory=dict)
    last_cpu_n: int = 0
    last_cpu_t: float = 0.0

    def cpu_now(self) -> dict[str, float | None]:
        pids = {"bridge": self.bridge_pid, **self.other_pids}
        out = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        out["subscriber"] = time.process_time()
        return out


class Subscriber:
    def __init__(self, port: int, run: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.port = port
        self.data = Received(expected=0)
        self.subscribed = threading.Event()
        self.failure: str | None = None
        self._mqtt = mqtt
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}-{run}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=30, clean_start=True)
        self.client.loop_start()
        wait_until(lambda: self.subscribed.is_set() or self.failure, 10, "the subscriber's SUBACK")
        if self.failure:
            raise BenchError(f"subscriber: {self.failure}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.loop_stop()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.failure = f"connect refused: {reason}"
            self.subscribed.set()
            return
        client.subscribe(TOPIC, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self.failure = f"subscribe refused: {reasons}"
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.monotonic()
        d = self.data
        d.payloads.append(message.payload)
        n = len(d.payloads)
        d.last_t = now
        if n == 1:
            d.first_t = now
            d.first_cpu = d.cpu_now()
        elif n == d.expected or n % SAMPLE_EVERY == 0:
            d.last_cpu, d.last_cpu_n, d.last_cpu_t = d.cpu_now(), n, now


# ------------------------------------------------------------------- feeder


def make_feeds(directory: Path, nodes: int, count: int, seed: int) -> list[tuple[str, Path]]:
    """Each node's bytes (hello, then ``count`` data lines) in a file; made once."""
    from firmware_bridge.simulator.node import Faults, SimNode

    feeds = []
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, nodes + 1):
        node = SimNode(f"bed-{i}", seed=seed, interval_s=1, faults=Faults(boot_garbage=False))
        parts = [node.boot().data]
        for _ in range(count):
            (emission,) = node.tick()
            assert emission.reading is not None
            parts.append(emission.data)
        path = directory / f"{node.node_id}.feed"
        path.write_bytes(b"".join(parts))
        feeds.append((node.node_id, path))
    return feeds


def feeder_main(directory: Path, feed_files: list[str]) -> int:
    """Child process: pty pairs behind symlinks, written as fast as the host reads.

    Talks to the parent in JSON lines on stdout; keeps the ports open, once
    everything is written, until its stdin closes, so no line is lost in the
    kernel's buffer when a port goes away.
    """
    from firmware_bridge.simulator.pty_runner import SETTLE_S, PtyPort

    def say(**event: Any) -> None:
        print(json.dumps(event), flush=True)

    data = [Path(f).read_bytes() for f in feed_files]
    names = [Path(f).stem for f in feed_files]
    directory.mkdir(parents=True, exist_ok=True)
    ports = [PtyPort(directory / name) for name in names]
    try:
        say(event="ready", ports=[str(p.link) for p in ports])
        end = time.monotonic() + 60
        while not all(p.host_present() for p in ports):
            if time.monotonic() > end:
                say(event="error", error="the bridge never opened every port")
                return 1
            time.sleep(0.01)
        time.sleep(SETTLE_S)  # pyserial flushes its input when it opens a port
        offsets = [0] * len(ports)
        say(event="writing", t=time.monotonic())
        poller = select.poll()
        for p in ports:
            poller.register(p.master, select.POLLOUT)
        by_fd = {p.master: i for i, p in enumerate(ports)}
        views = [memoryview(d) for d in data]
        while any(off < len(d) for off, d in zip(offsets, data, strict=True)):
            for fd, ev in poller.poll(1000):
                i = by_fd[fd]
                if ev & (select.POLLHUP | select.POLLERR):
                    written = sum(d[:o].count(b"\n") - 1 for d, o in zip(data, offsets, strict=True))
                    say(event="error", error=f"port {names[i]} closed by the host", written=written)
                    return 1
                if offsets[i] >= len(data[i]):
                    continue
                with contextlib.suppress(BlockingIOError):  # the pty is full: poll again
                    offsets[i] += os.write(fd, views[i][offsets[i] :])
                if offsets[i] >= len(data[i]):
                    poller.unregister(fd)
        written = sum(d.count(b"\n") - 1 for d in data)  # every line but the hello
        say(event="done", t=time.monotonic(), written=written)
        sys.stdin.read()  # until the parent closes our stdin
        return 0
    finally:
        for p in ports:
            with contextlib.suppress(OSError):
                p.close()


class Feeder:
    def __init__(self, workdir: Path, feeds: list[tuple[str, Path]]) -> None:
        self.workdir = workdir
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        with (workdir / "feeder.log").open("ab") as errors:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--_feeder",
                    str(workdir / "ports"),
                    *[str(p) for _, p in feeds],
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def next_event(self, timeout: float, bridge: BridgeProc | None = None) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=0.1)
                break
            except queue.Empty:
                if bridge is not None and bridge.proc.poll() is not None:
                    raise BenchError(f"the bridge exited ({bridge.proc.returncode}):\n{bridge.tail()}") from None
                if time.monotonic() > end:
                    raise BenchError(f"no word from the feeder in {timeout:g}s") from None
        if event["event"] in ("error", "exit"):
            raise BenchError(f"feeder: {event}; see {self.workdir / 'feeder.log'}")
        return event

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------- bridge


class BridgeProc:
    def __init__(self, workdir: Path, ports: list[str], broker_port: int) -> None:
        garden = Path(sys.executable).parent / "garden"  # the venv's console script
        cmd = [str(garden)] if garden.exists() else [sys.executable, "-m", "garden"]
        cmd += ["bridge", "run", "--mqtt", f"mqtt://127.0.0.1:{broker_port}", "--garden", GARDEN]
        cmd += ["--spool", str(workdir / "spool.sqlite3"), "-v"]
        for p in ports:
            cmd += ["--port", p]
        # No GARDEN_* from the caller's shell, and an empty config file, so
        # neither /etc/garden/garden.toml nor ~/.config's is read.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
        (workdir / "bench.toml").write_text("")
        env.update(GARDEN_CONFIG=str(workdir / "bench.toml"), GARDEN_BRIDGE_ID=BRIDGE_ID)
        self.logfile = workdir / "bridge.log"
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=out)
        self.pid = self.proc.pid
        self.rusage: Any = None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the bridge's graceful stop), reap with wait4 for its rusage."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.rusage = rusage
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode
            if time.monotonic() > end:
                log(f"bridge did not stop in {timeout:g}s; killing it")
                os.kill(self.pid, signal.SIGKILL)
                end = time.monotonic() + 5
                timeout = 5
            time.sleep(0.02)

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""


# ---------------------------------------------------------------------- run


@dataclass
class RunResult:
    run: int
    written: int
    received: int
    distinct: int
    missing: int
    window_s: float
    readings_per_s: float
    bridge_cpu_s: float
    bridge_cpu_s_per_1k: float
    bridge_cores: float
    bridge_max_rss_mib: float
    broker_cpu_s_per_1k: float | None
    subscriber_cpu_s_per_1k: float | None
    feeder_cpu_s: float | None
    bridge_cpu_total_s: float | None
    intake_s: float | None
    bridge_exit: int | None
    ok: bool
    problem: str = ""


def check(payloads: list[bytes], nodes: int, count: int) -> tuple[int, int]:
    """(distinct readings, readings missing) against bed-1..N, seq 1..count, boot 1."""
    seen = set()
    for raw in payloads:
        body = json.loads(raw)
        seen.add((body["node"], body["boot"], body["seq"]))
    wanted = {(f"bed-{i}", 1, s) for i in range(1, nodes + 1) for s in range(1, count + 1)}
    return len(seen), len(wanted - seen)


def one_run(
    run: int, broker: Broker, workdir: Path, feeds: list[tuple[str, Path]], args: argparse.Namespace
) -> RunResult:
    expected = args.nodes * args.count
    sub = Subscriber(broker.port, run)
    feeder: Feeder | None = None
    bridge: BridgeProc | None = None
    try:
        sub.start()
        feeder = Feeder(workdir, feeds)
        ports = feeder.next_event(30)["ports"]
        bridge = BridgeProc(workdir, ports, broker.port)
        d = sub.data
        d.expected = expected
        d.bridge_pid = bridge.pid
        d.other_pids = {"broker": broker.proc.pid if broker.proc else 0, "feeder": feeder.proc.pid}
        feeder.next_event(30, bridge)  # writing: the bridge has every port open
        done = feeder.next_event(args.timeout, bridge)
        written = int(done["written"])
        # Wait for the last message, or for the messages to stop coming.
        end = time.monotonic() + args.timeout
        while len(d.payloads) < written and time.monotonic() < end:
            if bridge.proc.poll() is not None:
                break
            if d.payloads and time.monotonic() - d.last_t > args.idle:
                break
            time.sleep(0.02)
        received = len(d.payloads)
        if received == 0:
            raise BenchError(f"the subscriber received nothing. Bridge log:\n{bridge.tail()}")
        if d.last_cpu_n == 0:  # a single message, or none sampled since the first
            d.last_cpu, d.last_cpu_n, d.last_cpu_t = d.first_cpu, 1, d.first_t
        if received != written:
            log(
                f"run {run}: last CPU sample at message {d.last_cpu_n} of {received}; "
                "the CPU figure covers only that part"
            )
        bridge_exit = bridge.stop()
        feeder_cpu = None
        if feeder is not None:
            feeder_cpu = cpu_seconds(feeder.proc.pid)
    finally:
        if bridge is not None:
            bridge.stop()
        if feeder is not None:
            feeder.stop()
        sub.stop()

    def per_1k(name: str) -> float | None:
        a, b = d.first_cpu.get(name), d.last_cpu.get(name)
        if a is None or b is None or d.last_cpu_n <= 1:
            return None
        return (b - a) / (d.last_cpu_n - 1) * 1000

    window = d.last_t - d.first_t
    cpu_window = d.last_cpu_t - d.first_t
    bridge_cpu = (d.last_cpu.get("bridge") or 0.0) - (d.first_cpu.get("bridge") or 0.0)
    distinct, missing = check(d.payloads, args.nodes, args.count)
    problems = []
    if received != written:
        problems.append(f"written {written} != received {received}")
    if distinct != received:
        problems.append(f"{received - distinct} duplicate(s)")
    if missing:
        problems.append(f"{missing} reading(s) never received")
    if bridge_exit != 0:
        problems.append(f"the bridge exited with status {bridge_exit}")
    ru = bridge.rusage if bridge is not None else None
    return RunResult(
        run=run,
        written=written,
        received=received,
        distinct=distinct,
        missing=missing,
        window_s=round(window, 3),
        readings_per_s=round((received - 1) / window, 1) if window > 0 else 0.0,
        bridge_cpu_s=round(bridge_cpu, 2),
        bridge_cpu_s_per_1k=round(per_1k("bridge") or 0.0, 4),
        bridge_cores=round(bridge_cpu / cpu_window, 2) if cpu_window > 0 else 0.0,
        bridge_max_rss_mib=round(ru.ru_maxrss / 1024, 1) if ru is not None else 0.0,
        broker_cpu_s_per_1k=_round(per_1k("broker")),
        subscriber_cpu_s_per_1k=_round(per_1k("subscriber")),
        feeder_cpu_s=_round(feeder_cpu, 2),
        bridge_cpu_total_s=_round(ru.ru_utime + ru.ru_stime, 2) if ru is not None else None,
        intake_s=round(float(done["t"]) - d.first_t, 3),
        bridge_exit=bridge_exit,
        ok=not problems,
        problem="; ".join(problems),
    )


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ------------------------------------------------------------------- report

COLUMNS = (
    ("run", "run"),
    ("written", "written"),
    ("received", "received"),
    ("window_s", "window (s)"),
    ("intake_s", "fed by (s)"),
    ("readings_per_s", "readings/s"),
    ("bridge_cpu_s_per_1k", "bridge CPU-s / 1k"),
    ("bridge_cores", "bridge cores busy"),
    ("bridge_max_rss_mib", "bridge max RSS (MiB)"),
    ("broker_cpu_s_per_1k", "broker CPU-s / 1k"),
)
MEDIAN_KEYS = (
    "window_s",
    "intake_s",
    "readings_per_s",
    "bridge_cpu_s_per_1k",
    "bridge_cores",
    "bridge_max_rss_mib",
    "broker_cpu_s_per_1k",
    "subscriber_cpu_s_per_1k",
)


def medians(results: list[RunResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in MEDIAN_KEYS:
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        out[key] = round(statistics.median(values), 4) if values else None
    return out


def cell(value: Any) -> str:
    """A table cell: no decimals from 10 up (bench_harness.cell keeps one below 100)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs; medians are reported (default 5)")
    parser.add_argument("--readings", type=int, default=20_000, help="readings per run, all nodes (20000)")
    parser.add_argument("--nodes", type=int, default=4, help="simulated nodes, one pty each (4)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (1)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on a run's feeder or messages after (s)")
    parser.add_argument("--idle", type=float, default=10.0, help="stop waiting when no message for (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, spools)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.nodes < 1 or args.nodes > 64:
        parser.error("--runs must be >= 1 and --nodes 1-64")
    if not args.nodes <= args.readings <= MAX_READINGS:
        parser.error(f"--readings must be from --nodes to {MAX_READINGS}")
    args.count = args.readings // args.nodes
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_feeder"]:
        return feeder_main(Path(argv[1]), argv[2:])
    args = parse_args(argv)
    load_before = load_1m()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="garden-bench-"))
    broker = Broker(workdir)
    results: list[RunResult] = []
    try:
        log(f"{args.nodes} node(s) x {args.count} readings, {args.runs} run(s); temp dir {workdir}")
        feeds = make_feeds(workdir / "feeds", args.nodes, args.count, args.seed)
        broker.start()
        log(f"mosquitto on 127.0.0.1:{broker.port}")
        for run in range(1, args.runs + 1):
            rundir = workdir / f"run-{run}"
            rundir.mkdir()
            result = one_run(run, broker, rundir, feeds, args)
            results.append(result)
            log(
                f"run {run}: {result.received}/{result.written} in {result.window_s:.2f}s, "
                f"{result.readings_per_s:,.0f} readings/s, "
                f"{result.bridge_cpu_s_per_1k:.3f} bridge CPU-s/1k, "
                f"RSS {result.bridge_max_rss_mib} MiB" + (f" -- {result.problem}" if result.problem else "")
            )
    except BenchError as err:
        log(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        broker.stop()
        if args.keep or any(not r.ok for r in results):
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    med = medians(results)
    info = machine_info(load_before)
    print(
        f"\nBridge benchmark: {args.nodes} nodes, {args.count * args.nodes:,} readings per run, "
        f"{args.runs} run(s); {machine_summary(info)}\n"
    )
    print(table(COLUMNS, results, med, cell))
    print(
        f"\nmedian: {med['readings_per_s']:,.0f} readings/s pty -> broker; "
        f"{med['bridge_cpu_s_per_1k']:.3f} bridge CPU-s per 1,000 readings (target < 0.5); "
        f"bridge max RSS {med['bridge_max_rss_mib']} MiB"
    )
    bad = [r for r in results if not r.ok]
    write_results(args.json, info, args, median=med, runs=[asdict(r) for r in results], ok=not bad)
    if bad:
        warn_invalid(f"RUN {r.run}: WRITTEN AND RECEIVED DIFFER: {r.problem}" for r in bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
