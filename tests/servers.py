"""Real servers for tests, started once per session: InfluxDB (Debian's influxd 1.6).

Each runs on a free loopback port with its own temp directory and config.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import urllib3

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Influxd:
    """InfluxDB 1.x (``influxd``) on loopback. ``url`` is its HTTP API.

    Auth is off, unless ``auth``: then ``[http] auth-enabled = true``, and until
    someone creates an admin user, InfluxDB refuses everything but that.
    """

    def __init__(self, workdir: Path, *, auth: bool = False) -> None:
        if not Path(INFLUXD).exists():
            pytest.fail("influxd is not installed: run scripts/setup.sh (apt-get install influxdb)")
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "influxdb.conf"
        self.conf.write_text(
            "reporting-enabled = false\n"
            f'bind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{workdir}/meta"\n'
            f'[data]\n  dir = "{workdir}/data"\n  wal-dir = "{workdir}/wal"\n  query-log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            + ("  auth-enabled = true\n" if auth else "")
            + '[logging]\n  level = "warn"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.workdir / "influxd.log").open("ab") as log:
            self.proc = subprocess.Popen([INFLUXD, "-config", str(self.conf)], stdout=log, stderr=log)
        http = urllib3.PoolManager(retries=False, timeout=1.0)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if http.request("GET", f"{self.url}/ping").status == 204:
                    return
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"influxd did not start; see {self.workdir / 'influxd.log'}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(20)
            self.proc = None
