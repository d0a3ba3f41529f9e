"""Real servers for tests, started once per session: InfluxDB (Debian's influxd 1.6).

Each runs on a free loopback port with its own temp directory and config.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

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


class V2WriteProxy:
    """What InfluxDB 1.8 does inside, in front of the real 1.6: ``/api/v2/write?bucket=<db>/<rp>``
    becomes ``/write?db=<db>&rp=<rp>``, and ``Authorization: Token <user>:<password>`` (how
    influxdb-client logs in to 1.8) becomes basic auth. Everything else passes unchanged, and
    ``/ping`` reports 1.8.10 so the adapter takes its v2 write path. The points land in the
    real engine, which decides alone whether the user may write. Used by tests/integration
    (the v2 write path, auth off) and tests/security (which user it writes as)."""

    def __init__(self, upstream: str) -> None:
        http = urllib3.PoolManager(retries=False)
        self.users: list[str] = []  # who each token-authenticated v2 write came as
        self.seen: list[str] = []  # the v2 write requests, as sent
        users, seen = self.users, self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self, method: str) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                target = f"{upstream}{self.path}"
                if parts.path == "/api/v2/write":
                    seen.append(self.path)
                    query = parse_qs(parts.query)
                    db, _, rp = query["bucket"][0].partition("/")
                    precision = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}[query.get("precision", ["ns"])[0]]
                    target = (
                        f"{upstream}/write?{urlencode({'db': db, 'precision': precision} | ({'rp': rp} if rp else {}))}"
                    )
                    auth = headers.get("Authorization", "")
                    if auth.startswith("Token "):
                        user_password = auth.removeprefix("Token ")
                        users.append(user_password.split(":", 1)[0])
                        headers["Authorization"] = "Basic " + base64.b64encode(user_password.encode()).decode()
                response = http.request(method, target, body=body, headers=headers)
                self.send_response(response.status)
                for key, value in response.headers.items():
                    if key.lower() in ("content-length", "transfer-encoding", "connection", "date"):
                        continue
                    self.send_header(key, "1.8.10" if key.lower() == "x-influxdb-version" else value)
                self.send_header("Content-Length", str(len(response.data)))
                self.end_headers()
                self.wfile.write(response.data)

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
