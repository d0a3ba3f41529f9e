"""The soak's processes: a restartable Mosquitto, a killable InfluxDB, and how every child is started and ended.

Unlike ``bench_harness.Broker`` and ``bench_harness.Influxd``, these keep their
port and their data across a restart, because the bridge, the proxy and the
hub keep the addresses they were started with, and the broker's persistence
and InfluxDB's WAL are what is being tested.

Every child is started in its own session (its own process group), so that
:func:`end_group` takes its children with it, and, where ``setpriv`` exists,
with a parent-death signal, so that nothing outlives a soak that was itself
SIGKILLed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from benchmarks.bench_harness import INFLUXD, MOSQUITTO, BenchError, free_port, influxd_config, log
from tests.faults.tools import PRODUCTION_QUEUES

SETPRIV = shutil.which("setpriv")
AUTOSAVE_S = 1  # the broker's autosave_interval here; production has 60 (deploy/mosquitto)


def spawn(
    cmd: list[str],
    logfile: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own, output appended to ``logfile``; SIGKILLed if we die."""
    if SETPRIV:
        cmd = [SETPRIV, "--pdeathsig", "KILL", "--", *cmd]
    with logfile.open("ab") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=out if stdout is None else stdout,
            stderr=out,
            start_new_session=True,
        )


def end_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
    """Signal a child's process group, wait for the child, SIGKILL the group if it lingers. Its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} did not stop in {timeout:g} s after signal {sig}; SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    # Whatever it left in its group (nothing, normally) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """Debian's Mosquitto on a fixed loopback port, persistence on, production queue settings.

    ``autosave_interval`` is :data:`AUTOSAVE_S` (production: 60): what a
    SIGKILL can lose is what the broker acknowledged since its last save and
    had not yet handed to the hub.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (workdir / "mosquitto-data").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # stay who we are, so it can write its temp dir
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/mosquitto-data/\n"
            f"autosave_interval {AUTOSAVE_S}\n"
            "autosave_on_changes false\n" + PRODUCTION_QUEUES + "set_tcp_nodelay true\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
            "log_timestamp true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> float:
        """Start it and wait until it accepts connections; the wall time it did."""
        if not os.path.exists(MOSQUITTO):
            raise BenchError(f"mosquitto not found ({MOSQUITTO}); apt-get install mosquitto")
        self.proc = spawn([MOSQUITTO, "-c", str(self.conf)], self.workdir / "mosquitto.out")
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"mosquitto exited ({self.proc.returncode}); see {self.log_path}")
            if _accepts(self.port):
                return time.time()
            time.sleep(0.02)
        raise BenchError(f"mosquitto did not listen in 15 s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM) -> float:
        """Stop it with ``sig`` and wait for it to exit; the wall time it had."""
        proc, self.proc = self.proc, None
        end_group(proc, sig, timeout=15)
        return time.time()


class InfluxDB:
    """InfluxDB 1.x (``influxd``) on a fixed loopback port, auth off, WAL and data in the soak's dir."""

    def __init__(self, workdir: Path) -> None:
        import urllib3

        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = influxd_config(workdir, self.port)
        self._http = urllib3.PoolManager(retries=False, timeout=1.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> float:
        """Start it and wait until ``/ping`` answers; the wall time it did."""
        import urllib3

        if not os.path.exists(INFLUXD):
            raise BenchError(f"influxd not found ({INFLUXD}); apt-get install influxdb")
        self.proc = spawn([INFLUXD, "-config", str(self.conf)], self.workdir / "influxd.log")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"influxd exited ({self.proc.returncode}); see {self.workdir / 'influxd.log'}")
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if self._http.request("GET", f"{self.url}/ping").status == 204:
                    return time.time()
            time.sleep(0.1)
        raise BenchError(f"influxd did not answer in 60 s; see {self.workdir / 'influxd.log'}")

    def stop(self, sig: int = signal.SIGTERM) -> float:
        proc, self.proc = self.proc, None
        end_group(proc, sig, timeout=30)
        return time.time()
