"""Run the soak: start the pipeline, sample it, inject the planned faults, drain, count, report.

``python -m benchmarks.soak --help`` lists the options; :mod:`benchmarks.soak`
says what runs. One thread does everything here: each fault is a generator
that injects the fault, waits, removes it and waits for the pipeline to
recover, yielding whenever it waits, so that sampling goes on meanwhile and
no two faults ever overlap.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_harness import BenchError, database, load_1m, log, machine_info, warn_invalid, write_results
from benchmarks.soak import report
from benchmarks.soak.garden_sim import GardenSim, node_ids
from benchmarks.soak.ledger import Ledger
from benchmarks.soak.observe import LogWatch, StatusMonitor, process_sample, stored_count, stored_keys
from benchmarks.soak.schedule import Durations, Planned, plan
from benchmarks.soak.servers import AUTOSAVE_S, InfluxDB, Mosquitto, end_group, spawn
from tests.faults.tools import LinkProxy

GARDEN = "soak"
REPO = Path(__file__).resolve().parents[2]
RECOVERY_TIMEOUT_S = 300.0  # a fault not recovered from by then is a failure
DRAIN_TIMEOUT_S = 300.0  # at the end: how long to wait for the last readings to be stored
UNPLUG_SHARE = 0.1  # of the nodes, per unplug fault


@dataclass
class FaultRecord:
    n: int
    kind: str
    planned_s: float
    duration_s: float
    at_s: float = 0.0  # started, seconds from the soak's start
    t0: float = 0.0  # wall time it was injected
    t_end: float | None = None  # wall time it was removed: server up, link back, last port back
    details: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, float | None] = field(default_factory=dict)
    recovered: bool = False
    note: str = ""


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.durations = Durations.scaled(args.scale)
        self.run_s = args.minutes * 60.0
        self.plan = plan(args.seed, self.run_s, self.durations, args.rounds)
        self.rng = random.Random(f"{args.seed}:unplugged-nodes")
        self.samples: list[dict[str, Any]] = []
        self.faults: list[FaultRecord] = []
        self.port_events: list[dict[str, Any]] = []
        self.failures: list[str] = []  # a fault not injected or not recovered from
        self.fatal: list[str] = []  # a process that died: the soak stops
        self.broker = Mosquitto(workdir)
        self.influxd = InfluxDB(workdir)
        self.proxy: LinkProxy | None = None
        self.sim: GardenSim | None = None
        self.bridge: Any = None
        self.hub: Any = None
        self.monitor: StatusMonitor | None = None
        self.influx: Any = None
        self.ledger = Ledger(workdir / "ledger.jsonl")
        self.logs = {"bridge": LogWatch("bridge", workdir / "bridge.log"), "hub": LogWatch("hub", workdir / "hub.log")}
        self.t_start = 0.0  # wall
        self.mono_start = 0.0
        self.exits: dict[str, int | None] = {}
        self.sim_totals: dict[str, Any] = {}
        self.final_status: dict[str, dict[str, Any]] = {}
        self.drain_s: float | None = None

    # ---------------------------------------------------------------- setup

    def start(self) -> None:
        a = self.args
        self.broker.start()
        self.influxd.start()
        self.influx = database(self.influxd.url, GARDEN)
        self.proxy = LinkProxy(self.broker.port)
        log(f"mosquitto on {self.broker.port} (proxy {self.proxy.port}), influxd on {self.influxd.port}")
        self.sim = GardenSim(self.workdir, a.nodes, a.interval, a.speed, a.seed)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
        (self.workdir / "garden.toml").write_text("")
        env["GARDEN_CONFIG"] = str(self.workdir / "garden.toml")
        garden_exe = Path(sys.executable).parent / "garden"
        exe = [str(garden_exe)] if garden_exe.exists() else [sys.executable, "-m", "garden"]
        bridge_cmd = [*exe, "bridge", "run", "--mqtt", self.proxy.url, "--garden", GARDEN,
                      "--spool", str(self.workdir / "bridge-spool.sqlite3"), "-v"]  # fmt: skip
        for link in self.sim.links:
            bridge_cmd += ["--port", link]
        hub_env = {**env, "GARDEN_HUB_ID": "soak", "GARDEN_DATA_DIR": str(self.workdir / "hub-data"),
                   "GARDEN_INFLUX_DATABASE": GARDEN}  # fmt: skip
        hub_cmd = [*exe, "hub", "run", "--mqtt", self.broker.url, "--influx", self.influxd.url,
                   "--garden", GARDEN, "-v"]  # fmt: skip
        if a.hub_no_watch:
            hub_cmd.append("--no-watch")
        self.monitor = StatusMonitor("127.0.0.1", self.broker.port, GARDEN)
        self.hub = spawn(hub_cmd, self.workdir / "hub.log", env=hub_env)
        # The hub's persistent session must exist before the first reading is
        # published, or the broker has no one to keep it for (in a garden it
        # exists from the hub's first start on). Its "online" status comes
        # after its SUBSCRIBE, on the same connection.
        end = time.monotonic() + 60
        while self.monitor.get("hub").get("state") != "online":
            if self.hub.poll() is not None or time.monotonic() > end:
                raise BenchError(f"the hub did not come online; see {self.workdir / 'hub.log'}")
            time.sleep(0.1)
        # The nodes hold their lines until the bridge opens their ports.
        self.bridge = spawn(bridge_cmd, self.workdir / "bridge.log", env={**env, "GARDEN_BRIDGE_ID": "soak"})
        self.t_start, self.mono_start = time.time(), time.monotonic()

    def stop_all(self) -> None:
        """Everything we started, whatever state it is in (called from ``finally``)."""
        if self.monitor is not None:
            self.monitor.close()
        for name in ("bridge", "hub"):
            proc = getattr(self, name)
            if proc is not None and proc.returncode is None:
                self.exits.setdefault(name, end_group(proc, signal.SIGTERM, timeout=30))
        if self.sim is not None:
            self.sim.end()
        if self.proxy is not None:
            self.proxy.close()
        if self.influx is not None:
            with contextlib.suppress(Exception):
                self.influx.close()
        self.influxd.stop()
        self.broker.stop()

    # -------------------------------------------------------------- running

    def now_s(self) -> float:
        return time.monotonic() - self.mono_start

    def run(self) -> None:
        pending = list(self.plan)
        current: Iterator[float] | None = None
        ready_at = 0.0
        next_sample = self.args.sample_s  # the first sample once the bridge has its ports open
        wait = 0.5
        log(
            f"running {self.args.minutes:g} min; faults planned: "
            + ", ".join(f"{p.kind}@{p.at_s:.0f}s" for p in pending)
        )
        while self.now_s() < self.run_s or current is not None:
            self._poll()
            if self.fatal:
                log(f"stopping early: {'; '.join(self.fatal)}")
                return
            if self.now_s() >= next_sample:
                self.sample("warmup" if self.now_s() < self.durations.warmup_s else "run")
                next_sample += self.args.sample_s
            if current is None and pending and self.now_s() >= max(pending[0].at_s, ready_at):
                planned = pending.pop(0)
                if self.now_s() + planned.duration_s > self.run_s - self.durations.tail_s / 3:
                    self.failures.append(f"fault {planned.kind} (planned at {planned.at_s:.0f} s) had no room left")
                    continue
                current = self._fault(planned)
            if current is not None:
                try:
                    wait = next(current)
                except StopIteration:
                    current = None
                    ready_at = self.now_s() + self.durations.gap_s / 3
                    wait = 0.0
            until_sample = max(0.0, next_sample - self.now_s())
            time.sleep(max(0.05, min(wait if current is not None else 0.5, until_sample, 0.5)))
        for planned in pending:
            self.failures.append(f"fault {planned.kind} (planned at {planned.at_s:.0f} s) was never injected")
        self.sample("run")

    def _poll(self) -> None:
        """Port events from the garden, new log lines, and whether anything died that should not have."""
        assert self.sim is not None
        self.port_events += self.sim.poll_events()
        for watch in self.logs.values():
            watch.refresh()
        for name, proc in (("bridge", self.bridge), ("hub", self.hub), ("simulated garden", self.sim.proc)):
            if proc.poll() is not None:
                self.fatal.append(f"the {name} exited with status {proc.returncode} at {self.now_s():.0f} s")
        for name, server in (("mosquitto", self.broker), ("influxd", self.influxd)):
            if server.proc is not None and server.proc.poll() is not None:
                self.fatal.append(f"{name} exited by itself ({server.proc.returncode}) at {self.now_s():.0f} s")

    def sample(self, phase: str) -> None:
        assert self.monitor is not None and self.sim is not None
        self.ledger.refresh()
        bridge_status, hub_status = self.monitor.get("bridge"), self.monitor.get("hub")
        active = next((f.kind for f in self.faults if not f.recovered and not f.note), None)
        row = {
            "t_s": round(self.now_s(), 1),
            "phase": phase,
            "fault": active,
            "bridge": process_sample(self.bridge.pid),
            "hub": process_sample(self.hub.pid),
            "mosquitto": process_sample(self.broker.pid),
            "influxd": process_sample(self.influxd.pid),
            "garden_sim": process_sample(self.sim.pid),
            "soak": process_sample(os.getpid()),
            "produced": len(self.ledger.produced),
            "stored": stored_count(self.influx),
            "bridge_spool": bridge_status.get("spool", {}).get("depth"),
            "bridge_inflight": bridge_status.get("inflight"),
            "hub_backlog": hub_status.get("backlog_batches"),
            "hub_influx": hub_status.get("influx"),
            "load_1m": load_1m(),
        }
        self.samples.append(row)
        b, h = row["bridge"] or {}, row["hub"] or {}
        log(
            f"{row['t_s']:6.0f}s {phase:6} produced {row['produced']:6} stored {row['stored']}  "
            f"bridge {b.get('rss_kb', 0) / 1024:.1f} MiB {b.get('fds')} fds {b.get('threads')} thr  "
            f"hub {h.get('rss_kb', 0) / 1024:.1f} MiB {h.get('fds')} fds {h.get('threads')} thr  "
            f"spool {row['bridge_spool']} backlog {row['hub_backlog']}" + (f"  [{active}]" if active else "")
        )

    # --------------------------------------------------------------- faults

    def _fault(self, planned: Planned) -> Iterator[float]:
        record = FaultRecord(len(self.faults) + 1, planned.kind, planned.at_s, planned.duration_s)
        record.at_s = round(self.now_s(), 1)
        self.faults.append(record)
        log(f"fault {record.n}: {planned.kind} for {planned.duration_s:g} s")
        steps = {
            "influx_kill": self._influx_kill,
            "broker_term": lambda r: self._broker_restart(r, signal.SIGTERM),
            "broker_kill": lambda r: self._broker_restart(r, signal.SIGKILL),
            "link_cut": self._link_cut,
            "unplug": self._unplug,
        }
        yield from steps[planned.kind](record)
        self.ledger.refresh()
        record.recovered = all(v is not None for v in record.recovery.values())
        if not record.recovered:
            missing = [k for k, v in record.recovery.items() if v is None]
            record.note = f"not recovered in {RECOVERY_TIMEOUT_S:g} s: {', '.join(missing)}"
            self.failures.append(f"fault {record.n} ({record.kind}): {record.note}")
        log(f"fault {record.n}: {record.kind} done; recovery {record.recovery}")

    def _sleep(self, seconds: float) -> Iterator[float]:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            yield min(left, 0.5)

    def _caught_up(self, since: float, until: float) -> Generator[float, None, float | None]:
        """Wait until every reading written in [since, until] is in InfluxDB; when it was (None: never)."""
        from garden.influx import InfluxError

        end = time.monotonic() + RECOVERY_TIMEOUT_S
        while time.monotonic() < end:
            self.ledger.refresh()
            wanted = self.ledger.between(since, until)
            try:
                stored = set(stored_keys(self.influx, int((since - 1) * 1000)))
            except InfluxError:
                stored = set()
            if wanted <= stored:
                return time.time()
            yield 1.0
        return None

    def _mark(
        self, process: str, event: str, after: float, text: str = "", timeout: float = 120
    ) -> Generator[float, None, float | None]:
        """Wait until the process's log has the event after ``after``; its time (None: not in ``timeout``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.logs[process].refresh()
            mark = self.logs[process].first(event, after, text)
            if mark is not None:
                return mark.t
            yield 0.2
        return None

    def _influx_kill(self, r: FaultRecord) -> Iterator[float]:
        r.t0 = time.time()
        self.influxd.stop(signal.SIGKILL)
        r.details["signal"] = "SIGKILL"
        yield from self._sleep(r.duration_s)
        r.t_end = self.influxd.start()
        r.details["down_s"] = round(r.t_end - r.t0, 1)
        self.ledger.refresh()
        r.details["readings_meanwhile"] = len(self.ledger.between(r.t0, r.t_end))
        drained = yield from self._caught_up(r.t0 - 5, r.t_end)
        r.recovery["backlog_drained_s"] = _after(drained, r.t_end)
        down = self.logs["hub"].first("influx_down", r.t0)
        r.details["hub_noticed_s"] = _after(down.t if down else None, r.t0)

    def _broker_restart(self, r: FaultRecord, sig: int) -> Iterator[float]:
        assert self.proxy is not None
        r.details["signal"] = signal.Signals(sig).name
        r.t0 = time.time()
        self.broker.stop(sig)
        r.t_end = self.broker.start()
        r.details["down_s"] = round(r.t_end - r.t0, 2)
        seen = yield from self._mark("bridge", "connected", r.t0)
        r.recovery["bridge_reconnect_s"] = _after(seen, r.t_end)
        seen = yield from self._mark("hub", "connected", r.t0)
        r.recovery["hub_reconnect_s"] = _after(seen, r.t_end)
        mark = self.logs["hub"].first("connected", r.t0)
        r.details["hub_session_present"] = mark is not None and "session present: True" in mark.text
        caught_up = yield from self._caught_up(r.t0 - 5, r.t_end)
        r.recovery["caught_up_s"] = _after(caught_up, r.t_end)

    def _link_cut(self, r: FaultRecord) -> Iterator[float]:
        assert self.proxy is not None
        r.t0 = time.time()
        self.proxy.cut()
        yield from self._sleep(r.duration_s)
        self.proxy.restore()
        r.t_end = time.time()
        self.logs["bridge"].refresh()
        lost = self.logs["bridge"].first("disconnected", r.t0)
        r.details["bridge_noticed_s"] = _after(lost.t if lost and lost.t <= r.t_end else None, r.t0)
        self.ledger.refresh()
        r.details["readings_meanwhile"] = len(self.ledger.between(r.t0, r.t_end))
        seen = yield from self._mark("bridge", "connected", r.t_end)
        r.recovery["bridge_reconnect_s"] = _after(seen, r.t_end)
        caught_up = yield from self._caught_up(r.t0 - 5, r.t_end)
        r.recovery["caught_up_s"] = _after(caught_up, r.t_end)

    def _unplug(self, r: FaultRecord) -> Iterator[float]:
        from garden.influx import InfluxError

        assert self.sim is not None
        ids = node_ids(self.args.nodes)
        nodes = sorted(self.rng.sample(ids, max(1, round(len(ids) * UNPLUG_SHARE))))
        r.details["nodes"] = nodes
        links = dict(zip(ids, self.sim.links, strict=True))
        taken_back = self.ledger.taken_back
        read_upto = len(self.port_events)
        r.t0 = time.time()
        self.sim.unplug(nodes, r.duration_s)
        back: dict[str, float] = {}
        end = time.monotonic() + r.duration_s + 60
        while len(back) < len(nodes) and time.monotonic() < end:
            for event in self.port_events[read_upto:]:
                if event["event"] == "back" and event["node"] in nodes:
                    back[event["node"]] = float(event["t"])
            read_upto = len(self.port_events)
            yield 0.2
        r.t_end = max(back.values()) if back else None
        r.details["ports_back"] = len(back)
        # The bridge's reader notices the new pty behind the symlink (its backoff is capped at 2 s).
        reopened: list[float | None] = []
        for node, t in back.items():
            at = yield from self._mark("bridge", "port_back", r.t0, text=f"port {links[node]} back", timeout=60)
            reopened.append(_after(at, t))
        if reopened and None not in reopened and len(back) == len(nodes):
            r.recovery["bridge_reopened_s"] = max(x for x in reopened if x is not None)
        else:
            r.recovery["bridge_reopened_s"] = None
        # The first reading of each node's new boot, in InfluxDB.
        first_stored: list[float] = []
        wait_end = time.monotonic() + RECOVERY_TIMEOUT_S
        pending = dict(back)
        while pending and time.monotonic() < wait_end:
            self.ledger.refresh()
            with contextlib.suppress(InfluxError):
                stored = set(stored_keys(self.influx, int((min(pending.values()) - 1) * 1000)))
                for node, t in list(pending.items()):
                    first = self.ledger.first_after(node, t)
                    if first is not None and first[0] in stored:
                        first_stored.append(time.time() - t)
                        del pending[node]
            if pending:
                yield 1.0
        r.recovery["first_new_reading_stored_s"] = (
            round(max(first_stored), 1) if first_stored and not pending and len(back) == len(nodes) else None
        )
        self.ledger.refresh()
        r.details["taken_back_by_unplug"] = self.ledger.taken_back - taken_back

    # ------------------------------------------------------------ finishing

    def finish(self) -> None:
        """Stop the garden, wait for the last readings to be stored, stop the bridge and the hub."""
        assert self.sim is not None and self.monitor is not None
        log("stopping the simulated garden")
        self.sim_totals = self.sim.stop()
        self.ledger.refresh()
        wanted = set(self.ledger.produced)
        t0, last_change, last = time.monotonic(), time.monotonic(), -1
        while time.monotonic() - t0 < DRAIN_TIMEOUT_S and time.monotonic() - last_change < 60:
            self._poll_logs_only()
            count = stored_count(self.influx) or 0
            if count != last:
                last, last_change = count, time.monotonic()
            if count >= len(wanted) and wanted <= set(stored_keys(self.influx)):
                break
            time.sleep(2)
        self.drain_s = round(time.monotonic() - t0, 1)
        time.sleep(2)  # anything duplicated or late would land now
        self.sample("drained")
        for name in ("bridge", "hub"):
            self.exits[name] = end_group(getattr(self, name), signal.SIGTERM, timeout=30)
        time.sleep(1.0)  # their last retained status, "offline", has their final counters
        self.final_status = {"bridge": self.monitor.get("bridge"), "hub": self.monitor.get("hub")}
        for watch in self.logs.values():
            watch.refresh()

    def _poll_logs_only(self) -> None:
        for watch in self.logs.values():
            watch.refresh()

    def results(self) -> dict[str, Any]:
        stored = stored_keys(self.influx, settled=True)
        kills = [f.t0 for f in self.faults if f.kind == "broker_kill"]
        counts = report.count_loss(self.ledger.produced, stored, kills, AUTOSAVE_S)
        processes = {
            name: report.process_figures(self.samples, name, self.durations.warmup_s)
            for name in ("bridge", "hub", "garden_sim", "soak")
        }
        checks = report.checks(counts, processes, self.faults, self.exits, self.fatal + self.failures)
        return {
            "settings": {
                "nodes": self.args.nodes,
                "interval_s": self.args.interval,
                "speed": self.args.speed,
                "readings_per_s": round(self.args.nodes * self.args.speed / self.args.interval, 2),
                "minutes": self.args.minutes,
                "scale": self.args.scale,
                "durations": asdict(self.durations),
                "broker_autosave_interval_s": AUTOSAVE_S,
                "sample_s": self.args.sample_s,
                "hub_watch": not self.args.hub_no_watch,
            },
            "counts": counts,
            "ledger": {"taken_back_by_unplug": self.ledger.taken_back, **self.sim_totals},
            "drain_at_end_s": self.drain_s,
            "processes": processes,
            "faults": [asdict(f) for f in self.faults],
            "exits": self.exits,
            "final_status": self.final_status,
            "log_problems": {name: w.problems for name, w in self.logs.items()},
            "log_examples": {name: w.examples for name, w in self.logs.items()},
            "tracebacks": {name: w.tracebacks for name, w in self.logs.items()},
            "checks": checks,
            "ok": all(c["ok"] for c in checks),
            "samples": self.samples,
        }


def _after(t: float | None, since: float | None) -> float | None:
    return None if t is None or since is None else round(t - since, 2)


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak: simulated nodes -> bridge -> (cuttable link) -> Mosquitto -> hub -> InfluxDB, with faults.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the garden runs (30)")
    parser.add_argument(
        "--quick", action="store_true", help="3 minutes, faults shortened to a tenth: checks the harness"
    )
    parser.add_argument("--nodes", type=int, default=50, help="simulated nodes, one pty each (50)")
    parser.add_argument("--speed", type=float, default=10.0, help="simulated seconds per wall second (10)")
    parser.add_argument("--interval", type=int, default=30, help="simulated seconds between a node's readings (30)")
    parser.add_argument(
        "--seed", type=int, default=1, help="seeds the data, the fault times and the unplugged nodes (1)"
    )
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument(
        "--hub-no-watch",
        action="store_true",
        help="diagnosis: run the hub with --no-watch, to tell the ingest's memory from the watch's history",
    )
    parser.add_argument("--json", type=Path, help="results file (default /tmp/garden-soak-<time>.json)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (logs, ledger, data) even if all is well"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = 3.0
    if args.minutes < 3 or not 1 <= args.nodes <= 64:
        parser.error("--minutes must be at least 3, --nodes 1-64")
    # Faults and warm-up keep their length from 30 minutes up and shrink in proportion below.
    args.scale = min(1.0, args.minutes / 30.0)
    args.rounds = 2 if args.minutes >= 20 else 1
    if args.json is None:
        args.json = Path(tempfile.gettempdir()) / f"garden-soak-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = load_1m()
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the finally below ends every child.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(143))
    os.chdir(REPO)
    workdir = Path(tempfile.mkdtemp(prefix="garden-soak-"))
    log(f"temp dir {workdir}")
    soak = Soak(args, workdir)
    results: dict[str, Any] | None = None
    try:
        soak.start()
        soak.run()
        soak.finish()
        results = soak.results()
    except BenchError as err:
        log(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        soak.stop_all()
        keep = args.keep or results is None or not results["ok"]
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["workdir"] = str(workdir) if keep else None
    info = machine_info(load_before, influxd=True)
    write_results(args.json, info, args, **results)
    print()
    print(report.markdown(results, info))
    if not results["ok"]:
        warn_invalid(f"{c['name']}: {c['value']} (must be {c['must']})" for c in results["checks"] if not c["ok"])
        return 1
    return 0
