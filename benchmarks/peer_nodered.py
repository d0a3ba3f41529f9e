"""Node-RED as the peer in ``bench_ingest.py`` (n): the flow a garden would run instead of the hub.

Not a benchmark itself. Node-RED and node-red-contrib-influxdb are pinned in
``nodered/package.json`` and ``nodered/package-lock.json`` and installed with
``npm ci`` into ``nodered/node_modules`` (``nodered/install.sh``, run on first
use). Each :class:`NodeRed` gets its own temp userDir with a ``settings.js``
and a ``flows.json`` made from ``nodered/flows.template.json``: one of its two
tabs (:data:`VARIANTS`), the shared ``mqtt-broker`` config node (persistent
session, fixed client id, QoS 1) and the ``influxdb`` 1.x config node.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_harness import BenchError, free_port, log, reap

HERE = Path(__file__).resolve().parent / "nodered"
RED_JS = HERE / "node_modules" / "node-red" / "red.js"
NODE = shutil.which("node") or "/usr/bin/node"

# flow tab -> what it is
VARIANTS = {
    "out": "tab-out",  # mqtt in -> json -> function (7 messages, one per measurement) -> influxdb out
    "batch": "tab-batch",  # mqtt in -> json -> join (1000 / 200 ms) -> function (all points) -> influx batch
}


def ensure_installed() -> None:
    """``nodered/install.sh`` (``npm ci`` from the lock file) unless node-red is there already."""
    if RED_JS.exists() and (HERE / "node_modules" / "node-red-contrib-influxdb" / "package.json").exists():
        return
    if not shutil.which("npm"):
        raise BenchError("npm not found: Node-RED (n) needs node >= 18.5 and npm (or pass --skip nodered)")
    log("installing Node-RED into benchmarks/nodered/node_modules (npm ci, pinned)")
    result = subprocess.run(["bash", str(HERE / "install.sh")], capture_output=True, text=True)
    if result.returncode != 0 or not RED_JS.exists():
        raise BenchError(
            f"nodered/install.sh failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def versions() -> dict[str, str]:
    out = {}
    for name in ("node-red", "node-red-contrib-influxdb"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            out[name] = json.loads((HERE / "node_modules" / name / "package.json").read_text())["version"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["node"] = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    return out


def flows(variant: str, broker_port: int, client_id: str, influx_port: int, database: str) -> list[dict[str, Any]]:
    """The template's config nodes and the one tab of ``variant``, pointed at these servers."""
    tab = VARIANTS[variant]
    out = []
    for node in json.loads((HERE / "flows.template.json").read_text()):
        if (node["type"] == "tab" and node["id"] != tab) or node.get("z", tab) != tab:
            continue
        if node["type"] == "mqtt-broker":
            node.update(port=str(broker_port), clientid=client_id)
        elif node["type"] == "influxdb":
            node.update(port=str(influx_port), database=database)
        out.append(node)
    return out


SETTINGS_JS = """\
// Made by benchmarks/peer_nodered.py for one benchmark run.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %(port)d,
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    diagnostics: {enabled: false, ui: false},
    telemetry: {enabled: false},
    externalModules: {autoInstall: false, palette: {allowInstall: false}, modules: {allowInstall: false}},
    functionExternalModules: false,
    logging: {console: {level: "info", metrics: false, audit: false}},
};
"""


class NodeRed:
    """One Node-RED process (``node red.js --userDir ... --settings ...``) running one flow variant."""

    def __init__(
        self, workdir: Path, variant: str, broker_port: int, client_id: str, influx_port: int, database: str
    ) -> None:
        self.userdir = workdir / f"nodered-{variant}"
        self.userdir.mkdir(parents=True, exist_ok=True)
        flow = flows(variant, broker_port, client_id, influx_port, database)
        (self.userdir / "flows.json").write_text(json.dumps(flow, indent=1))
        (self.userdir / "settings.js").write_text(SETTINGS_JS % {"port": free_port()})
        self.logfile = self.userdir / "node-red.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_RED", "NODE_OPTIONS"))}
        cmd = [NODE, str(RED_JS), "--userDir", str(self.userdir), "--settings", str(self.userdir / "settings.js")]
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.userdir, env=env, stdout=out, stderr=out)
        self.pid = self.proc.pid
        self.rusage: Any = None

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_connected(self, timeout: float = 60) -> None:
        """Until its log says the flows started and the mqtt-broker node connected."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise BenchError(f"Node-RED exited ({self.proc.returncode}):\n{self.tail()}")
            text = self.log_text()
            if "Started flows" in text and "Connected to broker" in text:
                return
            time.sleep(0.1)
        raise BenchError(f"Node-RED did not connect in {timeout:g}s:\n{self.tail()}")

    def errors(self) -> list[str]:
        """Its logged errors (a failed InfluxDB write is logged as ``[error] [influxdb ...]``)."""
        return [line for line in self.log_text().splitlines() if "[error]" in line]

    def stop(self) -> int | None:
        """SIGTERM (Node-RED stops its flows and exits), reaped with wait4 for its max RSS."""
        status, rusage = reap(self.proc, 20)
        if rusage is not None:
            self.rusage = rusage
        return status
