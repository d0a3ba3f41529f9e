"""A real Mosquitto locked down by `garden secure init`, and an MQTT v5 client that reports what the broker said.

:func:`secured_garden` runs the real command (``garden secure init``, in a subprocess,
as a new user would) into a temp dir, then starts Debian's mosquitto 2.0.11 with
Debian's main config plus our drop-in (deploy/mosquitto/mosquitto-native.conf), its
``password_file`` and ``acl_file`` pointed at the generated ``mosquitto_passwd`` and
``mosquitto_acl``, and its commented-out TLS listener switched on with the generated
``tls/server.pem``. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.broker_tools import Client as Client  # re-exported for the tests here
from tests.broker_tools import adapted, debian_main_conf
from tests.broker_tools import wait_until as wait_until

ROOT = Path(__file__).resolve().parents[2]
MOSQ_DIR = ROOT / "deploy" / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
NOT_AUTHORIZED = 0x87
GARDEN = "sec"
BRIDGES = {"shed": ("bed-1", "bed-2"), "greenhouse": ("gh-1",)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def garden_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``garden ...`` as its own process, with no config file unless the caller gives one."""
    run_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "GARDEN_CONFIG": "/dev/null"}
    run_env |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "garden", *args], env=run_env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def secure_init(secrets: Path, *extra: str, bridges: dict[str, tuple[str, ...]] = BRIDGES) -> dict[str, Any]:
    """Run ``garden secure init --json``; its report."""
    args = ["secure", "init", "--dir", str(secrets), "--garden", GARDEN, "--json", *extra]
    for bridge, nodes in bridges.items():
        args += ["--bridge", f"{bridge}={','.join(nodes)}"]
    done = garden_cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@dataclass
class SecuredGarden:
    workdir: Path
    secrets: Path
    port: int
    tls_port: int
    proc: subprocess.Popen[bytes]
    report: dict[str, Any]

    def password(self, user: str) -> str:
        name = {"hub": "mqtt_hub_password", "volunteer": "mqtt_volunteer_password"}.get(
            user, f"mqtt_bridge_{user}_password"
        )
        return (self.secrets / name).read_text().strip()

    @property
    def log(self) -> str:
        return (self.workdir / "mosquitto.log").read_text(errors="replace")

    def reload(self) -> None:
        """What `systemctl reload mosquitto` does (Debian's unit: ExecReload=/bin/kill -HUP $MAINPID)."""
        before = self.log.count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log.count("Reloading config") > before, 5, "mosquitto to reload")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def hub_env(self) -> dict[str, str]:
        """The generated hub.env, as `set -a; . hub.env` would give it."""
        return read_env(self.secrets / "hub.env")


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def start_secured_garden(workdir: Path, *init_args: str) -> SecuredGarden:
    """`garden secure init` (TLS on), then the native broker config with its files."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed: run scripts/setup.sh (apt-get install mosquitto)")
    port, tls_port = free_port(), free_port()
    secrets = workdir / "secrets"
    report = secure_init(
        secrets, "--tls", "--tls-host", "localhost", "--tls-host", "127.0.0.1", "--mqtt",
        f"mqtt://127.0.0.1:{port}", "--bridge-mqtt", f"mqtts://localhost:{tls_port}", *init_args,
    )  # fmt: skip
    (workdir / "data").mkdir()
    (workdir / "conf.d").mkdir()
    (workdir / "mosquitto.conf").write_text(debian_main_conf(workdir))
    (workdir / "conf.d" / "garden.conf").write_text(
        adapted(
            (MOSQ_DIR / "mosquitto-native.conf").read_text(),
            {
                "listener 1883 127.0.0.1": f"listener {port} 127.0.0.1",
                "password_file /etc/mosquitto/garden.passwd": f"password_file {secrets}/mosquitto_passwd",
                "acl_file /etc/mosquitto/garden.acl": f"acl_file {secrets}/mosquitto_acl",
                "#listener 8883": f"listener {tls_port} 127.0.0.1",
                "#protocol mqtt": "protocol mqtt",
                "#certfile /etc/mosquitto/certs/fullchain.pem": f"certfile {secrets}/tls/server.pem",
                "#keyfile /etc/mosquitto/certs/privkey.pem": f"keyfile {secrets}/tls/server.key",
                "#tls_version tlsv1.2": "tls_version tlsv1.2",
            },
        )
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")], stderr=subprocess.DEVNULL)

    def accepts() -> bool:
        assert proc.poll() is None, f"mosquitto exited: {(workdir / 'mosquitto.log').read_text(errors='replace')}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    try:
        wait_until(accepts, 10, "mosquitto to listen")
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return SecuredGarden(workdir, secrets, port, tls_port, proc, report)
