#!/usr/bin/env python3
"""The commons: request latency, throughput under contention, the hub's own ceiling, a CLI end to end.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_commons.py [--runs 3] [--json out.json]

One private Mosquitto and one private influxd (temp dirs, free loopback
ports, as in bench_ingest.py) and one ``garden hub run --no-watch`` in its own
process for the whole benchmark. Each run measures four things side by side,
in a rotating order (run 1: a b c d, run 2: b c d a, run 3: c d a b, ...):

(a) **request latency**: ``--requests`` sequential ``garden.commands.request``
    calls from this process, alternating ``water.claim`` and ``water.release``
    on one bed by one member. Interleaved with them, as many bare connects
    (``connected_client`` with no subscription) and as many request set-ups
    (connect, subscribe to the reply and status topics, wait for the SUBACKs
    and the commons' retained status), so the round trip can be split into
    connection set-up and the rest.
(b) **throughput under contention**: ``--threads`` threads, each sending
    ``harvest.claim`` requests of 1 g on one fresh 10,000 kg share for
    ``--seconds``. Applied requests per second; afterwards, the share's
    granted total must equal the successful claims x 1 g, and no request may
    have failed. The hub's CPU over the window is read from /proc.
(c) **the hub's ceiling**: the same claims applied by ``Commons.command()`` in
    this process (a fresh ``Commons`` on a temp data dir, never connected,
    never flushed), one at a time, for the same time. (b)/(c) is what MQTT and
    the round trip cost next to the SQLite transaction itself.
(d) **a volunteer's command**: the wall time of ``python -m garden me``, next
    to ``python -c "import garden.cli.app"`` and ``python -c pass``.

The exit status is 1 when any request or CLI run failed, or a share's granted
total does not match the successful claims, or the hub exited non-zero; 2 when
the benchmark cannot be set up. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
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
    cpu_seconds,
    database,
    drop,
    load_1m,
    log,
    machine_info,
    machine_summary,
    quiet,
    reap,
    table,
    warn_invalid,
    write_results,
)

from firmware_bridge.errors import BridgeError
from firmware_bridge.mqtt_link import BrokerAddress, connected_client, parse_broker_url
from firmware_bridge.topics import Topics
from garden.commands import STATUS_WAIT_S, request
from garden.commons.service import Commons
from garden.commons.settings import CommonsSettings
from garden.errors import GardenError
from garden.settings import HubSettings
from garden.watch_settings import WatchSettings

GARDEN = "bench"
HUB_ID = "bench"
BED = "bed-1"
WATERER = "ana"  # (a) and (d)
GROWER = "grower"  # logs the shares; a member cannot claim their own
SHARE = "10000kg"  # never runs out: 10,000,000 claims of 1 g
CLAIM = "1g"


# ------------------------------------------------------------------ helpers


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def claimers(threads: int) -> list[str]:
    return [f"c{i}" for i in range(1, threads + 1)]


class Hub:
    """``garden hub run --no-watch`` in its own process, with a temp garden.toml and data dir."""

    def __init__(self, workdir: Path, broker: Broker, influx_url: str, db: str) -> None:
        exe = Path(sys.executable).parent / "garden"  # the venv's console script
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "garden"]
        cmd += ["hub", "run", "--no-watch", "--mqtt", broker.url, "--influx", influx_url, "--garden", GARDEN]
        # No GARDEN_* from the caller's shell, and a config of our own, so neither
        # /etc/garden/garden.toml nor ~/.config's is read. The commons' rules are the defaults.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
        config = workdir / "garden.toml"
        config.write_text(f'[hub]\nid = "{HUB_ID}"\n\n[influx]\ndatabase = "{db}"\n')
        env.update(GARDEN_CONFIG=str(config), GARDEN_DATA_DIR=str(workdir / "hub-data"))
        self.logfile = workdir / "hub.log"
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=out)
        self.pid = self.proc.pid
        self.rusage: Any = None

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the hub exited ({self.proc.returncode}):\n{self.tail()}")

    def stop(self) -> int | None:
        status, rusage = reap(self.proc, 20)
        if rusage is not None:
            self.rusage = rusage
        return status

    def rss_mib(self) -> float | None:
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{self.pid}/status") as handle:
            for row in handle:
                if row.startswith("VmRSS:"):
                    return round(int(row.split()[1]) / 1024, 1)
        return None

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Asker:
    """Requests to the hub's commons, as ``garden.cli._shared.ask_hub`` makes them."""

    def __init__(self, broker: BrokerAddress) -> None:
        self.broker = broker
        self.topics = Topics(GARDEN)
        self.status = self.topics.hub_commons("+")

    def __call__(self, action: str, who: str, **body: Any) -> dict[str, Any]:
        return request(self.broker, self.topics, "commons", {"action": action, "who": who, **body},
                       status_topic=self.status)  # fmt: skip

    def wait_ready(self, hub: Hub, timeout: float = 60.0) -> float:
        """Until a ``rota.show`` is answered: the hub is up and its commons subscribed."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            hub.alive()
            try:
                self("rota.show", WATERER)
                return round(time.monotonic() - start, 2)
            except (BridgeError, GardenError) as err:
                last = str(err)
            time.sleep(0.3)
        raise BenchError(f"the commons did not answer in {timeout:g}s (last: {last}):\n{hub.tail()}")


def bare_connect(broker: BrokerAddress) -> float:
    """Connect (CONNACK) and disconnect, as request() does, with no subscription: seconds."""
    t0 = time.perf_counter()
    with connected_client(broker, timeout_s=3.0):
        pass
    return time.perf_counter() - t0


def request_setup(asker: Asker) -> float:
    """What request() does before it publishes: seconds.

    Connect, subscribe to a reply topic and the commons' status, wait for both
    SUBACKs and the retained status, disconnect.
    """
    subacks = threading.Semaphore(0)
    status = threading.Event()

    def setup(client: Any) -> None:
        client.on_subscribe = lambda *a: subacks.release()
        client.on_message = lambda c, u, m: status.set()

    reply = asker.topics.reply(f"cli-bench{os.getpid()}")
    t0 = time.perf_counter()
    with connected_client(asker.broker, subscribe=(reply, asker.status), setup=setup, timeout_s=3.0):
        ok = subacks.acquire(timeout=3.0) and subacks.acquire(timeout=3.0) and status.wait(STATUS_WAIT_S)
    elapsed = time.perf_counter() - t0
    if not ok:
        raise BenchError("request set-up: no SUBACK or no retained commons status")
    return elapsed


def share_total(asker: Asker, sid: str) -> tuple[int, int, int, int, int]:
    """(granted total, claims, remaining, offered, bytes of its state) of one share, as the hub tells it."""
    shares = asker("harvest.shares", GROWER, all=True).get("shares", [])
    for s in shares:
        if s.get("id") == sid:
            claims = s.get("claims") or []
            granted = sum(int(c.get("granted") or 0) for c in claims)
            return granted, len(claims), int(s["remaining"]), int(s["offered"]), len(json.dumps(s))
    raise BenchError(f"share {sid} is not in harvest.shares --all")


# ---------------------------------------------------------------------- run


@dataclass
class RunResult:
    run: int
    order: str
    loadavg_1m: float
    # (a) latency, one client at a time
    a_requests: int = 0
    a_failed: int = 0
    a_median_ms: float | None = None
    a_p95_ms: float | None = None
    a_claim_median_ms: float | None = None
    a_release_median_ms: float | None = None
    a_connect_median_ms: float | None = None
    a_connect_p95_ms: float | None = None
    a_setup_median_ms: float | None = None
    a_setup_p95_ms: float | None = None
    a_after_setup_ms: float | None = None  # request median - set-up median
    a_hub_cpu_ms_per_req: float | None = None
    # (b) K threads of harvest.claim through the hub
    b_threads: int = 0
    b_window_s: float = 0.0
    b_ok: int = 0
    b_failed: int = 0
    b_per_s: float = 0.0
    b_first_half_per_s: float = 0.0
    b_second_half_per_s: float = 0.0
    b_median_ms: float | None = None
    b_p95_ms: float | None = None
    b_granted: int = 0
    b_claims: int = 0
    b_share_state_kb: float | None = None
    b_hub_cpu_s: float | None = None
    b_hub_cores: float | None = None
    b_hub_cpu_ms_per_req: float | None = None
    b_hub_rss_mib: float | None = None
    b_broker_cpu_s: float | None = None
    b_influxd_cpu_s: float | None = None
    b_bench_cores: float | None = None  # this process: the 8 client threads and their paho threads
    # (c) Commons.command() in this process
    c_window_s: float = 0.0
    c_commands: int = 0
    c_per_s: float = 0.0
    c_first_half_per_s: float = 0.0
    c_second_half_per_s: float = 0.0
    c_median_ms: float | None = None
    c_cpu_ms_per_cmd: float | None = None
    c_granted: int = 0
    c_same_claims_per_s: float | None = None  # (c) over its first (b)-many claims
    ratio_b_c: float | None = None
    ratio_b_c_same: float | None = None
    # (d) the CLI end to end
    d_cli_median_s: float | None = None
    d_cli_min_s: float | None = None
    d_cli_max_s: float | None = None
    d_import_median_s: float | None = None
    d_python_median_s: float | None = None
    d_startup_share: float | None = None  # import median / CLI median
    d_failed: int = 0
    ok: bool = True
    problems: list[str] = field(default_factory=list)


def measure_a(r: RunResult, asker: Asker, hub: Hub, n: int) -> None:
    """Sequential claim/release round trips, interleaved with bare connects and request set-ups."""
    lat: dict[str, list[float]] = {"water.claim": [], "water.release": []}
    connects: list[float] = []
    setups: list[float] = []
    failed = 0
    cpu0 = cpu_seconds(hub.pid)
    for i in range(n):
        action = "water.claim" if i % 2 == 0 else "water.release"
        t0 = time.perf_counter()
        try:
            asker(action, WATERER, bed=BED)
            lat[action].append(time.perf_counter() - t0)
        except (BridgeError, GardenError) as err:
            failed += 1
            if failed <= 3:
                r.problems.append(f"(a) {action}: {err}")
        connects.append(bare_connect(asker.broker))
        setups.append(request_setup(asker))
    cpu1 = cpu_seconds(hub.pid)
    both = lat["water.claim"] + lat["water.release"]
    r.a_requests, r.a_failed = len(both), failed
    r.a_median_ms, r.a_p95_ms = ms(med(both)), ms(percentile(both, 95))
    r.a_claim_median_ms = ms(med(lat["water.claim"]))
    r.a_release_median_ms = ms(med(lat["water.release"]))
    r.a_connect_median_ms, r.a_connect_p95_ms = ms(med(connects)), ms(percentile(connects, 95))
    r.a_setup_median_ms, r.a_setup_p95_ms = ms(med(setups)), ms(percentile(setups, 95))
    if r.a_median_ms is not None and r.a_setup_median_ms is not None:
        r.a_after_setup_ms = round(r.a_median_ms - r.a_setup_median_ms, 2)
    if cpu0 is not None and cpu1 is not None and both:
        r.a_hub_cpu_ms_per_req = round((cpu1 - cpu0) / len(both) * 1000, 3)
    if failed:
        r.problems.append(f"(a) {failed} of {n} requests failed")


def measure_b(r: RunResult, asker: Asker, hub: Hub, servers: dict[str, int | None], args: argparse.Namespace) -> str:
    """K threads claiming 1 g at a time from one fresh share until the time is up. Returns the share's id."""
    logged = asker("harvest.log", GROWER, bed=BED, crop="beans", quantity=SHARE, share=SHARE)
    sid = str(logged["share"]["id"])
    start = threading.Event()
    lock = threading.Lock()
    done: list[float] = []  # completion times of successful claims
    lat: list[float] = []
    errors: list[str] = []
    t_start = 0.0
    deadline = 0.0

    def worker(who: str) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                asker("harvest.claim", who, share=sid, quantity=CLAIM)
            except (BridgeError, GardenError) as err:
                with lock:
                    errors.append(f"{who}: {err}")
                time.sleep(0.05)
                continue
            t1 = time.perf_counter()
            with lock:
                done.append(t1)
                lat.append(t1 - t0)

    threads = [threading.Thread(target=worker, args=(who,), daemon=True) for who in claimers(args.threads)]
    for t in threads:
        t.start()
    pids = {"hub": hub.pid, **servers}
    before = {k: cpu_seconds(v) for k, v in pids.items()}
    bench0 = time.process_time()
    t_start = time.perf_counter()
    deadline = t_start + args.seconds
    start.set()
    for t in threads:
        t.join(args.seconds + 30)
    t_end = max([*done, deadline])
    after = {k: cpu_seconds(v) for k, v in pids.items()}
    bench_cpu = time.process_time() - bench0
    if any(t.is_alive() for t in threads):
        raise BenchError("(b) a client thread did not finish")
    r.b_hub_rss_mib = hub.rss_mib()
    window = t_end - t_start
    half = t_start + args.seconds / 2
    first = sum(1 for t in done if t < half)
    r.b_threads, r.b_window_s = args.threads, round(window, 3)
    r.b_ok, r.b_failed = len(done), len(errors)
    r.b_per_s = round(len(done) / window, 1)
    r.b_first_half_per_s = round(first / (half - t_start), 1)
    r.b_second_half_per_s = round((len(done) - first) / (t_end - half), 1)
    r.b_median_ms, r.b_p95_ms = ms(med(lat)), ms(percentile(lat, 95))

    def used(name: str) -> float | None:
        a, b = before.get(name), after.get(name)
        return None if a is None or b is None else round(b - a, 2)

    r.b_hub_cpu_s, r.b_broker_cpu_s, r.b_influxd_cpu_s = used("hub"), used("broker"), used("influxd")
    if r.b_hub_cpu_s is not None:
        r.b_hub_cores = round(r.b_hub_cpu_s / window, 2)
        r.b_hub_cpu_ms_per_req = round(r.b_hub_cpu_s / max(1, len(done)) * 1000, 3)
    r.b_bench_cores = round(bench_cpu / window, 2)
    hub.alive()
    granted, claims, remaining, offered, size = share_total(asker, sid)
    r.b_granted, r.b_claims, r.b_share_state_kb = granted, claims, round(size / 1024, 1)
    if errors:
        r.problems.append(f"(b) {len(errors)} claim request(s) failed, e.g. {errors[0]}")
    if granted != len(done) or claims != len(done) or remaining != offered - len(done):
        r.problems.append(
            f"(b) share {sid}: {len(done)} successful claims of 1 g, but the hub granted {granted} g in {claims} "
            f"claims, {remaining} g of {offered} g left"
        )
    return sid


def measure_c(r: RunResult, rundir: Path, args: argparse.Namespace) -> list[float]:
    """The same claims through Commons.command() directly, one at a time, no MQTT.

    Returns when each claim was done, in seconds from the start."""
    commons = Commons(HubSettings(garden=f"{GARDEN}-c", hub_id="c", data_dir=rundir / "direct"), CommonsSettings(),
                      WatchSettings())  # fmt: skip
    # Never connected: every publish would stay queued in paho, and the retained share state
    # grows with each claim. Keep one; the state is still built and encoded for each claim.
    commons._client.max_queued_messages_set(1)
    try:
        now = time.time_ns() // 1_000_000
        for who in (GROWER, *claimers(args.threads)):
            commons.command({"action": "member.add", "who": who, "name": who}, now)
        logged = commons.command({"action": "harvest.log", "who": GROWER, "bed": BED, "crop": "beans",
                                  "quantity": SHARE, "share": SHARE}, now)  # fmt: skip
        sid = str(logged["share"]["id"])
        names = claimers(args.threads)
        done: list[float] = []
        lat: list[float] = []
        cpu0 = time.process_time()
        t_start = time.perf_counter()
        deadline = t_start + args.seconds
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            body = {"action": "harvest.claim", "who": names[i % len(names)], "share": sid, "quantity": CLAIM}
            commons.command(body, time.time_ns() // 1_000_000)
            t1 = time.perf_counter()
            done.append(t1)
            lat.append(t1 - t0)
            i += 1
        t_end = max([*done, deadline])
        cpu = time.process_time() - cpu0
        row = commons.store.one("SELECT COALESCE(SUM(granted), 0) AS g, COUNT(*) AS n FROM share_claims "
                                "WHERE share_id = ?", (int(sid[1:]),))  # fmt: skip
    finally:
        commons.store.close()
    window = t_end - t_start
    half = t_start + args.seconds / 2
    first = sum(1 for t in done if t < half)
    r.c_window_s, r.c_commands = round(window, 3), len(done)
    r.c_per_s = round(len(done) / window, 1)
    r.c_first_half_per_s = round(first / (half - t_start), 1)
    r.c_second_half_per_s = round((len(done) - first) / (t_end - half), 1)
    r.c_median_ms = ms(med(lat))
    r.c_cpu_ms_per_cmd = round(cpu / max(1, len(done)) * 1000, 3)
    r.c_granted = int(row["g"]) if row else -1
    if row is None or r.c_granted != len(done) or int(row["n"]) != len(done):
        r.problems.append(f"(c) {len(done)} claims of 1 g applied, but the store has {row}")
    return [t - t_start for t in done]


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, timeout=60)
    return time.perf_counter() - t0, done


def measure_d(r: RunResult, rundir: Path, broker: Broker, n: int) -> None:
    """The real CLI, `python -m garden me`, against interpreter start-up plus imports, interleaved."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_")}
    env.update(GARDEN_USER=WATERER, GARDEN_CONFIG="/dev/null")
    cli = [sys.executable, "-m", "garden", "me", "--mqtt", broker.url, "--garden", GARDEN]
    imports = [sys.executable, "-c", "import garden.cli.app"]
    bare = [sys.executable, "-c", "pass"]
    times: dict[str, list[float]] = {"cli": [], "import": [], "python": []}
    failed = 0
    for _ in range(n):
        for name, cmd in (("cli", cli), ("import", imports), ("python", bare)):
            seconds, done = timed(cmd, env, rundir)
            if done.returncode != 0:
                failed += 1
                if failed <= 3:
                    tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-3:]
                    r.problems.append(f"(d) {name} exited {done.returncode}: {' / '.join(tail)}"[:400])
                continue
            times[name].append(seconds)
    r.d_failed = failed
    r.d_cli_median_s = round(statistics.median(times["cli"]), 3) if times["cli"] else None
    r.d_cli_min_s = round(min(times["cli"]), 3) if times["cli"] else None
    r.d_cli_max_s = round(max(times["cli"]), 3) if times["cli"] else None
    r.d_import_median_s = round(statistics.median(times["import"]), 3) if times["import"] else None
    r.d_python_median_s = round(statistics.median(times["python"]), 3) if times["python"] else None
    if r.d_cli_median_s and r.d_import_median_s:
        r.d_startup_share = round(r.d_import_median_s / r.d_cli_median_s, 3)
    if failed:
        r.problems.append(f"(d) {failed} of {3 * n} processes failed")


def one_run(
    run: int,
    workdir: Path,
    asker: Asker,
    hub: Hub,
    broker: Broker,
    servers: dict[str, int | None],
    args: argparse.Namespace,
) -> RunResult:
    rundir = workdir / f"run-{run}"
    rundir.mkdir()
    order = "abcd"[(run - 1) % 4 :] + "abcd"[: (run - 1) % 4]
    r = RunResult(run=run, order=" ".join(order), loadavg_1m=load_1m())
    everyone = {"hub": hub.pid, **servers}
    c_times: list[float] = []
    for what in order:
        busy = quiet(everyone, 0.1, args.settle)  # the hub flushes its outbox to InfluxDB each second
        if busy >= 0.1:
            log(f"run {run} ({what}): hub and servers still using {busy:.2f} cores; going ahead")
        hub.alive()
        if what == "a":
            measure_a(r, asker, hub, args.requests)
            log(
                f"run {run} (a) {r.a_requests} requests: median {r.a_median_ms} ms, p95 {r.a_p95_ms} ms; "
                f"bare connect {r.a_connect_median_ms} ms, set-up {r.a_setup_median_ms} ms"
            )
        elif what == "b":
            measure_b(r, asker, hub, servers, args)
            log(
                f"run {run} (b) {r.b_threads} threads: {r.b_ok} claims in {r.b_window_s:.2f}s, {r.b_per_s} /s "
                f"({r.b_first_half_per_s} then {r.b_second_half_per_s}), {r.b_failed} failed; "
                f"hub {r.b_hub_cores} cores"
            )
        elif what == "c":
            c_times = measure_c(r, rundir, args)
            log(
                f"run {run} (c) direct: {r.c_commands} claims in {r.c_window_s:.2f}s, {r.c_per_s} /s "
                f"({r.c_first_half_per_s} then {r.c_second_half_per_s})"
            )
        else:
            measure_d(r, rundir, broker, args.cli_runs)
            log(
                f"run {run} (d) CLI: `garden me` {r.d_cli_median_s}s, import {r.d_import_median_s}s, "
                f"python {r.d_python_median_s}s"
            )
    if r.c_per_s > 0:
        r.ratio_b_c = round(r.b_per_s / r.c_per_s, 3)
    # Each claim costs the hub a little more as its share has more claims (its totals are summed
    # over them): (c) over as many claims as (b) got is the like-for-like ceiling.
    if 0 < r.b_ok <= len(c_times) and c_times[r.b_ok - 1] > 0:
        r.c_same_claims_per_s = round(r.b_ok / c_times[r.b_ok - 1], 1)
        r.ratio_b_c_same = round(r.b_per_s / r.c_same_claims_per_s, 3)
    r.ok = not r.problems
    return r


# ------------------------------------------------------------------- report

LATENCY = (
    ("run", "run"),
    ("order", "order"),
    ("a_median_ms", "(a) request median ms"),
    ("a_p95_ms", "(a) p95 ms"),
    ("a_claim_median_ms", "claim median ms"),
    ("a_release_median_ms", "release median ms"),
    ("a_connect_median_ms", "bare connect median ms"),
    ("a_connect_p95_ms", "bare connect p95 ms"),
    ("a_setup_median_ms", "set-up median ms"),
    ("a_after_setup_ms", "request - set-up"),
    ("a_hub_cpu_ms_per_req", "hub CPU-ms / request"),
)
THROUGHPUT = (
    ("run", "run"),
    ("b_per_s", "(b) via MQTT /s"),
    ("b_first_half_per_s", "(b) 1st half /s"),
    ("b_second_half_per_s", "(b) 2nd half /s"),
    ("c_per_s", "(c) direct /s"),
    ("c_first_half_per_s", "(c) 1st half /s"),
    ("c_second_half_per_s", "(c) 2nd half /s"),
    ("ratio_b_c", "(b)/(c)"),
    ("c_same_claims_per_s", "(c) over (b)'s count /s"),
    ("ratio_b_c_same", "(b)/(c) at (b)'s count"),
    ("b_median_ms", "(b) median ms"),
    ("b_p95_ms", "(b) p95 ms"),
    ("c_median_ms", "(c) median ms"),
    ("b_ok", "(b) claims"),
    ("c_commands", "(c) claims"),
)
COST = (
    ("run", "run"),
    ("b_hub_cpu_s", "hub CPU-s (b)"),
    ("b_hub_cores", "hub cores busy"),
    ("b_hub_cpu_ms_per_req", "hub CPU-ms / claim"),
    ("c_cpu_ms_per_cmd", "(c) CPU-ms / claim"),
    ("b_broker_cpu_s", "broker CPU-s (b)"),
    ("b_influxd_cpu_s", "influxd CPU-s (b)"),
    ("b_bench_cores", "client process cores (b)"),
    ("b_share_state_kb", "share state KiB at the end"),
    ("b_hub_rss_mib", "hub RSS MiB"),
)
CLI = (
    ("run", "run"),
    ("d_cli_median_s", "(d) `garden me` s"),
    ("d_cli_min_s", "min s"),
    ("d_cli_max_s", "max s"),
    ("d_import_median_s", "import garden.cli.app s"),
    ("d_python_median_s", "python -c pass s"),
    ("d_startup_share", "import / CLI"),
)
NOT_MEDIAN = {"run", "order"}


def medians(results: list[RunResult]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _ in LATENCY + THROUGHPUT + COST + CLI:
        if key in NOT_MEDIAN:
            continue
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        out[key] = round(statistics.median(values), 4) if values else None
    out["loadavg_1m"] = round(statistics.median(r.loadavg_1m for r in results), 2)
    return out


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs, each measuring (a) to (d); medians (3)")
    parser.add_argument("--requests", type=int, default=100, help="(a): sequential requests per run (100)")
    parser.add_argument("--threads", type=int, default=8, help="(b): client threads (8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="(b) and (c): how long (10)")
    parser.add_argument("--cli-runs", type=int, default=10, help="(d): processes of each kind per run (10)")
    parser.add_argument(
        "--nagle",
        action="store_true",
        help="Mosquitto with its default set_tcp_nodelay false (default: true, as deploy/mosquitto ships it)",
    )
    parser.add_argument("--settle", type=float, default=5.0, help="wait at most this for an idle hub (s)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, hub data)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not 2 <= args.requests <= 10_000 or not 1 <= args.threads <= 64:
        parser.error("--runs must be >= 1, --requests 2-10000, --threads 1-64")
    if not 1 <= args.seconds <= 120 or not 1 <= args.cli_runs <= 100:
        parser.error("--seconds must be 1-120, --cli-runs 1-100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.requests += args.requests % 2  # claim, release, ...: each run ends with the bed free
    load_before = load_1m()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds like Ctrl-C: the finally stops every child
    workdir = Path(tempfile.mkdtemp(prefix="garden-bench-commons-"))
    broker = Broker(workdir, max_inflight=0, nodelay=not args.nagle)
    influxd = Influxd(workdir)
    hub: Hub | None = None
    influx: Any = None
    results: list[RunResult] = []
    hub_exit: int | None = None
    t_begin = time.monotonic()
    try:
        log(f"{args.runs} run(s); {workdir}")
        broker.start()
        influxd.start()
        influx = database(influxd.url, "bench_commons")
        hub = Hub(workdir, broker, influxd.url, influx.settings.database)
        asker = Asker(parse_broker_url(broker.url))
        waited = asker.wait_ready(hub)
        for who in (WATERER, GROWER, *claimers(args.threads)):
            asker("member.add", who, name=who)
        log(f"mosquitto on 127.0.0.1:{broker.port}, influxd on {influxd.url}; the commons answered after {waited}s")
        servers = {
            "broker": broker.proc.pid if broker.proc else None,
            "influxd": influxd.proc.pid if influxd.proc else None,
        }
        for run in range(1, args.runs + 1):
            result = one_run(run, workdir, asker, hub, broker, servers, args)
            results.append(result)
            log(f"run {run}: (b)/(c) = {result.ratio_b_c}" + (f" -- {result.problems}" if result.problems else ""))
    except (BenchError, BridgeError, GardenError) as err:
        log(f"error: {err}")
        args.keep = True
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        if hub is not None:
            hub_exit = hub.stop()
        if influx is not None:
            drop(influx)
        broker.stop()
        influxd.stop()
        if args.keep or any(not r.ok for r in results) or hub_exit not in (0, None):
            log(f"kept {workdir}")
        elif results:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = round(time.monotonic() - t_begin, 1)
    if hub_exit != 0 and results:
        results[-1].problems.append(f"the hub exited with status {hub_exit}")
        results[-1].ok = False

    m = medians(results)
    info = machine_info(load_before, influxd=True)
    ratio_of_medians = round(m["b_per_s"] / m["c_per_s"], 3) if m["b_per_s"] and m["c_per_s"] else None
    print(
        f"\nCommons benchmark: {args.runs} run(s) in {elapsed}s; Mosquitto set_tcp_nodelay "
        f"{'false (its default)' if args.nagle else 'true (as shipped)'}; (a) {args.requests} requests, "
        f"(b) {args.threads} threads x {args.seconds:g}s, (c) {args.seconds:g}s, "
        f"(d) {args.cli_runs} processes of each kind; "
        f"{machine_summary(info)}\n"
    )
    for columns in (LATENCY, THROUGHPUT, COST, CLI):
        print(table(columns, results, m))
        print()
    print(
        f"median: (a) a request takes {cell(m['a_median_ms'])} ms (p95 {cell(m['a_p95_ms'])}); a bare connect "
        f"{cell(m['a_connect_median_ms'])} ms, the set-up before publishing {cell(m['a_setup_median_ms'])} ms, "
        f"leaving {cell(m['a_after_setup_ms'])} ms for publish, hub and answer.\n"
        f"(b) {cell(m['b_per_s'])} claims/s through MQTT with {args.threads} threads (hub "
        f"{cell(m['b_hub_cores'])} cores busy, {cell(m['b_hub_cpu_ms_per_req'])} CPU-ms a claim); "
        f"(c) {cell(m['c_per_s'])} claims/s by Commons.command() alone ({cell(m['c_same_claims_per_s'])} over its "
        f"first (b)-many). (b)/(c): median of the runs' ratios {m['ratio_b_c']}, ratio of the medians "
        f"{ratio_of_medians}; at (b)'s claim count {m['ratio_b_c_same']}.\n"
        f"(d) `garden me` takes {cell(m['d_cli_median_s'])} s; importing garden.cli.app "
        f"{cell(m['d_import_median_s'])} s of it, the bare interpreter {cell(m['d_python_median_s'])} s."
    )
    bad = [r for r in results if not r.ok]
    write_results(
        args.json,
        info,
        args,
        seconds=elapsed,
        median=m,
        ratio_b_c_of_medians=ratio_of_medians,
        runs=[asdict(r) for r in results],
        hub_exit=hub_exit,
        ok=not bad,
    )
    if bad:
        warn_invalid(
            [
                "WARNING: A REQUEST FAILED, OR THE GRANTED TOTALS DO NOT MATCH THE CLAIMS:",
                "these figures are not valid",
                *(f"RUN {r.run}: {problem}" for r in bad for problem in r.problems),
            ]
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
