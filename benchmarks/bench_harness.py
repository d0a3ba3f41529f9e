"""What the benchmarks in this directory share: private servers, process CPU, machine info, results.

Not a benchmark itself. ``bench_bridge.py``, ``bench_ingest.py`` and
``bench_commons.py`` import it (the scripts' own directory is on
``sys.path`` when they run), for:

* a private Mosquitto (:class:`Broker`) and a private influxd
  (:class:`Influxd`), each on a free loopback port with a temp config, and a
  fresh InfluxDB database (:func:`database`, :func:`drop`);
* the CPU time of other processes from ``/proc`` (:func:`cpu_seconds`,
  :func:`stat_cpu_seconds`, :func:`cpu_of`, :func:`quiet`) and reaping them
  with ``wait4`` (:func:`reap`);
* the machine the figures come from (:func:`load_1m`, :func:`machine_info`,
  :func:`machine_summary`), the JSON result file (:func:`write_results`),
  the markdown tables (:func:`table`) and the warning printed when the
  figures are not valid (:func:`warn_invalid`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def stat_cpu_seconds(path: str) -> float | None:
    """utime + stime from a ``/proc/.../stat`` file, in seconds (clock-tick resolution); None if it is gone."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a live process, all threads, in seconds (clock-tick resolution)."""
    return stat_cpu_seconds(f"/proc/{pid}/stat") if pid else None


def cpu_of(pids: dict[str, int | None]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def quiet(pids: dict[str, int | None], limit: float, most: float) -> float:
    """Wait (at most ``most`` s) until these processes together use under ``limit`` of a core."""
    start = time.monotonic()
    while True:
        before, t = cpu_of(pids), time.monotonic()
        time.sleep(0.5)
        after = cpu_of(pids)
        busy = sum((after[k] or 0) - (before[k] or 0) for k in pids) / (time.monotonic() - t)
        if busy < limit or time.monotonic() - start > most:
            return round(busy, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass(frozen=True)
class Usage:
    """A child's CPU time (from ``wait4``) and its peak RSS since it exec'd, in KiB.

    ``ru_maxrss`` from ``wait4`` alone overstates a child's memory: Linux counts the
    pages it shared with this (large) process between fork and exec, so ``/bin/true``
    started from a parent that had touched 200 MB reports 212 MiB. The peak is read
    from ``VmHWM`` in /proc/<pid>/status just before the child is stopped (exec
    starts a new address space, and its high-water mark with it); ``wait4``'s figure
    stays in ``wait4_maxrss`` for comparison.
    """

    ru_utime: float
    ru_stime: float
    ru_maxrss: int  # KiB: VmHWM when it could be read, else wait4's
    wait4_maxrss: int


def peak_rss_kib(pid: int) -> int | None:
    """``VmHWM`` of a live process (KiB), None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reap(proc: subprocess.Popen[bytes], timeout: float, sig: int = signal.SIGTERM) -> tuple[int | None, Any]:
    """Signal a child (waking it first if frozen), wait for it with wait4: (exit status, :class:`Usage`)."""
    if proc.returncode is not None:
        return proc.returncode, None
    peak = peak_rss_kib(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        if sig:
            os.kill(proc.pid, sig)
    end = time.monotonic() + timeout
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            usage = Usage(rusage.ru_utime, rusage.ru_stime, peak or rusage.ru_maxrss, rusage.ru_maxrss)
            return proc.returncode, usage
        if time.monotonic() > end:
            log(f"pid {proc.pid} did not stop in {timeout:g}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            end = time.monotonic() + 5
        time.sleep(0.02)


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a server, wait ``timeout`` s, then SIGKILL; nothing if it is gone already."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ servers


class Broker:
    """A private Mosquitto on a free loopback port, for the whole benchmark.

    ``max_inflight``: its ``max_inflight_messages`` (None: not set, Mosquitto's
    default). ``nodelay``: ``set_tcp_nodelay true`` (Nagle off; Mosquitto's
    default is false).
    """

    def __init__(self, workdir: Path, max_inflight: int | None = None, nodelay: bool = False) -> None:
        self.workdir = workdir
        self.max_inflight = max_inflight
        self.nodelay = nodelay
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not os.path.exists(MOSQUITTO):
            raise BenchError(f"mosquitto not found ({MOSQUITTO}); apt-get install mosquitto")
        for _ in range(3):  # the free port can be taken between the probe and the bind
            self.port = free_port()
            conf = self.workdir / "mosquitto.conf"
            lines = [
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                "persistence false",
                # The queue above the in-flight window is per client, online or not; at its
                # default (1000) a subscriber that falls behind, or one frozen while a run's
                # messages are published, loses QoS 1 messages.
                "max_queued_messages 0",
            ]
            if self.max_inflight is not None:
                # Outgoing QoS 1 window for clients that send no Receive Maximum (a plain
                # paho subscriber); the hub sends its own (4 x batch_size), which
                # Mosquitto 2.0 uses instead. See README.md.
                lines.append(f"max_inflight_messages {self.max_inflight}")
            if self.nodelay:
                lines.append("set_tcp_nodelay true")
            lines += ["log_dest stderr", "log_type error", "log_type warning"]
            conf.write_text("".join(f"{line}\n" for line in lines))
            logfile = (self.workdir / "mosquitto.log").open("ab")
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=logfile, stderr=logfile)
            logfile.close()
            end = time.monotonic() + 10
            while time.monotonic() < end and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise BenchError(f"mosquitto did not start; see {self.workdir / 'mosquitto.log'}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        terminate(proc, 5)


def influxd_config(workdir: Path, http_port: int, index: str | None = None) -> Path:
    """An influxd 1.x config for loopback only, its files under ``workdir/influxdb``, auth off."""
    d = workdir / "influxdb"
    conf = workdir / "influxdb.conf"
    conf.write_text(
        "reporting-enabled = false\n"
        f'bind-address = "127.0.0.1:{free_port()}"\n'
        f'[meta]\n  dir = "{d}/meta"\n'
        f'[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n  query-log-enabled = false\n'
        + (f'  index-version = "{index}"\n' if index else "")
        + "[monitor]\n  store-enabled = false\n"
        f'[http]\n  bind-address = "127.0.0.1:{http_port}"\n  log-enabled = false\n'
        '[logging]\n  level = "warn"\n'
    )
    return conf


class Influxd:
    """InfluxDB 1.x on a free loopback port, auth off, its own temp dir (as tests/servers.py).

    ``index``: influxd's index-version (its default when None); ``start_timeout_s``: how
    long ``/ping`` may take to answer (opening a year of shards takes minutes)."""

    def __init__(
        self, workdir: Path, index: str | None = None, start_timeout_s: float = 30, stop_timeout_s: float = 20
    ) -> None:
        self.workdir = workdir
        self.index = index
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import urllib3

        if not os.path.exists(INFLUXD):
            raise BenchError(f"influxd not found ({INFLUXD}); apt-get install influxdb")
        self.port = free_port()
        conf = influxd_config(self.workdir, self.port, self.index)
        with (self.workdir / "influxd.log").open("ab") as out:
            self.proc = subprocess.Popen([INFLUXD, "-config", str(conf)], stdout=out, stderr=out)
        http = urllib3.PoolManager(retries=False, timeout=1.0)
        end = time.monotonic() + self.start_timeout_s
        while time.monotonic() < end and self.proc.poll() is None:
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if http.request("GET", f"{self.url}/ping").status == 204:
                    return
            time.sleep(0.1)
        raise BenchError(f"influxd did not start; see {self.workdir / 'influxd.log'}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        terminate(proc, self.stop_timeout_s)


def database(url: str, name: str) -> Any:
    """A fresh database, made as ``garden hub init`` does (default retention policy ``raw``)."""
    from garden.influx import Influx, InfluxSettings
    from garden.schema import ensure_schema

    influx = Influx(InfluxSettings(url=url, database=name))
    influx.execute(f'DROP DATABASE "{name}"')
    ensure_schema(influx)
    return influx


def drop(influx: Any) -> None:
    with contextlib.suppress(Exception):
        influx.execute(f'DROP DATABASE "{influx.settings.database}"')
    influx.close()


# ------------------------------------------------------------------ machine


def load_1m() -> float:
    """The 1-minute load average: other work on a shared machine skews the figures."""
    return round(os.getloadavg()[0], 2)


def machine_info(load_before: float, influxd: bool = False) -> dict[str, Any]:
    """nproc, CPU, Python, kernel, date, the paho-mqtt and Mosquitto versions (and influxd's), the load before."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["paho_mqtt"] = version("paho-mqtt")
    with contextlib.suppress(Exception):
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5).stdout
        versions["mosquitto"] = out.split()[2]  # "mosquitto version 2.0.11"
    if influxd:
        with contextlib.suppress(Exception):
            out = subprocess.run([INFLUXD, "version"], capture_output=True, text=True, timeout=5).stdout
            versions["influxd"] = out.split()[1]  # "InfluxDB v1.6.7~rc0 (git: ...)"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **versions,
        "loadavg_1m_before": load_before,
    }


def machine_summary(info: dict[str, Any]) -> str:
    """The machine part of a benchmark's heading."""
    return (
        f"{info['nproc']} x {info['cpu_model']} ({info['machine']}), {info['date']}; "
        f"load average before: {info['loadavg_1m_before']}"
    )


# ------------------------------------------------------------------ results


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else (f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}")
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(
    columns: Sequence[tuple[str, str]],
    results: Sequence[Any],
    med: dict[str, float | None],
    fmt: Callable[[Any], str] = cell,
) -> str:
    """A markdown table: a row per run (attributes named by ``columns``), then the medians in bold."""
    rows = ["| " + " | ".join(title for _, title in columns) + " |"]
    rows.append("|" + "|".join("---:" for _ in columns) + "|")
    for r in results:
        rows.append("| " + " | ".join(fmt(getattr(r, key)) for key, _ in columns) + " |")
    med_cells = [
        "**median**" if key == "run" else ("" if key not in med else f"**{fmt(med[key])}**") for key, _ in columns
    ]
    rows.append("| " + " | ".join(med_cells) + " |")
    return "\n".join(rows)


def write_results(path: Path | None, info: dict[str, Any], args: Any, **fields: Any) -> None:
    """With ``--json PATH``: the machine, the arguments (but --json), then ``fields`` in their order."""
    if path is None:
        return
    document = {
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"},
        **fields,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"JSON written to {path}")


def warn_invalid(lines: Iterable[str]) -> None:
    """The loud end of a benchmark whose figures are not valid: ``!!! line`` each between two bars, on stderr."""
    bar = "!" * 78
    print(f"\n{bar}", file=sys.stderr)
    for line in lines:
        print(f"!!! {line}", file=sys.stderr)
    print(f"{bar}\n", file=sys.stderr)
