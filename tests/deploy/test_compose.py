"""The deployment files: docker-compose.yml, the Dockerfile, and Mosquitto's config and ACL.

- ``docker-compose config`` (Debian's docker-compose 1.29; no Docker engine
  needed) must accept docker-compose.yml with a throwaway env file, and the
  result must have the services, pinned images, healthchecks, ordered startup,
  Grafana's provisioning mounts and no secret values.
- deploy/mosquitto/mosquitto.conf is run for real, through the compose
  service's own entrypoint (deploy/mosquitto/entrypoint.sh, which builds the
  password file), with its port and paths moved to a temp dir; the ACL is then
  checked client by client over MQTT v5 (PUBACK/SUBACK reason codes, and what a
  subscriber actually receives). mosquitto-native.conf is run the same way as a
  drop-in under Debian's main mosquitto.conf, with a password file made by
  ``mosquitto_passwd -b``.

One broker of each kind per module.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.settings import load_bridge_settings
from garden.settings import load_hub_settings
from tests.broker_tools import Client as ProbeClient
from tests.broker_tools import adapted, debian_main_conf, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
MOSQ_DIR = ROOT / "deploy" / "mosquitto"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"

SECRET_NAMES = {
    "mqtt_bridge_password",
    "mqtt_hub_password",
    "mqtt_volunteer_password",
    "influxdb_admin_password",
    "influxdb_admin_token",
    "grafana_admin_password",
    "mosquitto_acl",  # not a password, but the garden's own: who may publish for which node
}
LONG_RUNNING = {"mosquitto", "influxdb", "grafana", "hub", "bridge"}
NOT_AUTHORIZED = 0x87


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def yaml_python() -> str | None:
    """A Python that has PyYAML: the one docker-compose itself runs on, by definition."""
    exe = shutil.which("docker-compose")
    candidates = []
    if exe:
        head = Path(exe).read_bytes()[:200]
        if head.startswith(b"#!"):
            candidates.append(head[2:].split(b"\n", 1)[0].decode().split()[0])
    candidates.append("/usr/bin/python3")
    for python in candidates:
        if Path(python).exists() and subprocess.run([python, "-c", "import yaml"], capture_output=True).returncode == 0:
            return python
    return None


def load_yaml(text: str) -> Any:
    python = yaml_python()
    assert python, "no Python with PyYAML to read docker-compose output"
    code = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    out = subprocess.run([python, "-c", code], input=text, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@dataclass
class Rendered:
    config: dict[str, Any]
    text: str
    stderr: str
    secrets: dict[str, str]
    env: dict[str, str]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed: run scripts/setup.sh (apt-get install docker-compose)")
    if yaml_python() is None:
        pytest.fail("no Python with PyYAML next to docker-compose: run scripts/setup.sh")
    work = tmp_path_factory.mktemp("compose")
    # The secrets as deploy/make-secrets.sh makes them: their values must never
    # show up in the rendered configuration.
    secrets_dir = work / "secrets"
    made = subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(secrets_dir)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "created" in made.stdout
    secrets = {p.name: p.read_text().strip() for p in secrets_dir.iterdir()}
    env = {
        "GARDEN_SECRETS_DIR": str(secrets_dir),
        "GARDEN_GARDEN": "allotment-7",
        "GARDEN_BRIDGE_ID": "greenhouse",
        "GARDEN_SERIAL_DEVICE": "/dev/serial/by-id/usb-test_Node-if00-port0",
        "GARDEN_MQTT_BIND": "0.0.0.0",
        "GARDEN_IMAGE_TAG": "9.9.9",
    }
    env_file = work / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # Nothing from the caller's environment may leak into the interpolation.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work)},
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return Rendered(load_yaml(result.stdout), result.stdout, result.stderr, secrets, env)


def test_compose_config_is_accepted_without_warnings(rendered: Rendered) -> None:
    assert "WARNING" not in rendered.stderr and "is not set" not in rendered.stderr, rendered.stderr
    assert "version" not in load_yaml(COMPOSE_FILE.read_text()), "no version key: the Compose Specification"


def test_services(rendered: Rendered) -> None:
    assert set(rendered.config["services"]) == LONG_RUNNING | {"influxdb-init"}


def test_images_are_pinned(rendered: Rendered) -> None:
    expected = {
        "mosquitto": r"eclipse-mosquitto:2\.0\.\d+",
        "influxdb": r"influxdb:2\.7\.\d+",
        "influxdb-init": r"influxdb:2\.7\.\d+",
        "grafana": r"grafana/grafana-oss:11\.\d+\.\d+",
        "hub": r"garden-commons:9\.9\.9",
        "bridge": r"garden-commons:9\.9\.9",
    }
    services = rendered.config["services"]
    for name, pattern in expected.items():
        image = services[name]["image"]
        assert re.fullmatch(pattern, image), f"{name}: image {image!r} is not pinned as {pattern}"
        assert "latest" not in image
    # The two influxdb services run the very same version.
    assert services["influxdb"]["image"] == services["influxdb-init"]["image"]
    for name in ("hub", "bridge"):
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
        assert Path(services[name]["build"]["context"]) == ROOT


def test_every_long_running_service_has_a_healthcheck(rendered: Rendered) -> None:
    services = rendered.config["services"]
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert services[name]["restart"] == "unless-stopped"
    test = {name: " ".join(services[name]["healthcheck"]["test"][1:]) for name in LONG_RUNNING}
    assert "mosquitto_sub" in test["mosquitto"] and "$$SYS/broker/uptime" in test["mosquitto"]
    assert test["influxdb"].startswith("influx ping")
    assert "/api/health" in test["grafana"]
    assert test["hub"].endswith("healthcheck.py hub")
    assert test["bridge"].endswith("healthcheck.py bridge")
    assert services["influxdb-init"]["restart"] == "no"


def test_startup_order_waits_for_health(rendered: Rendered) -> None:
    services = rendered.config["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert conditions("hub") == {
        "mosquitto": "service_healthy",
        "influxdb": "service_healthy",
        "influxdb-init": "service_completed_successfully",
    }
    assert conditions("bridge") == {"mosquitto": "service_healthy"}
    assert conditions("influxdb-init") == {"influxdb": "service_healthy"}
    assert conditions("grafana") == {
        "influxdb": "service_healthy",
        "influxdb-init": "service_completed_successfully",
    }


def test_hub_and_bridge(rendered: Rendered) -> None:
    services = rendered.config["services"]
    hub, bridge = services["hub"], services["bridge"]
    assert hub["command"] == ["hub", "run"]
    assert bridge["command"] == ["bridge", "run"]
    assert hub["environment"]["GARDEN_MQTT_URL"] == "mqtt://mosquitto:1883"
    assert hub["environment"]["GARDEN_INFLUX_URL"] == "http://influxdb:8086"
    assert hub["environment"]["GARDEN_GARDEN"] == bridge["environment"]["GARDEN_GARDEN"] == "allotment-7"
    # The serial device comes from the env file, at the same path inside, and is the bridged port.
    device = rendered.env["GARDEN_SERIAL_DEVICE"]
    assert bridge["devices"] == [f"{device}:{device}"]
    assert bridge["environment"]["GARDEN_BRIDGE_PORTS"] == device
    # The bridge id is its MQTT user, and the broker knows that user.
    assert bridge["environment"]["GARDEN_BRIDGE_ID"] == bridge["environment"]["GARDEN_MQTT_USERNAME"] == "greenhouse"
    assert "greenhouse=/run/secrets/mqtt_bridge_password" in services["mosquitto"]["environment"]["GARDEN_MQTT_USERS"]
    # The bridge's spool is on its named volume (test_data_lives_on_named_volumes);
    # the hub's goes to GARDEN_DATA_DIR, which the image sets to the same path.
    assert bridge["environment"]["GARDEN_BRIDGE_SPOOL"].startswith("/var/lib/garden/")
    assert "GARDEN_DATA_DIR=/var/lib/garden" in (ROOT / "Dockerfile").read_text()


def test_the_hub_writes_and_queries_with_two_tokens(rendered: Rendered) -> None:
    """The write-only and the read-only token that influxdb-init makes are the files the hub reads."""
    services = rendered.config["services"]
    hub, init = services["hub"]["environment"], services["influxdb-init"]["environment"]
    made = re.findall(
        r'ensure_token \S+ "\$tokens_dir/([\w.-]+)"', (ROOT / "deploy/influxdb/init-influxdb.sh").read_text()
    )
    assert made == ["hub.token", "hub-read.token", "grafana.token"]
    tokens_dir = init["GARDEN_TOKENS_DIR"]
    assert hub["GARDEN_INFLUX_TOKEN_FILE"] == f"{tokens_dir}/hub.token"
    assert hub["GARDEN_INFLUX_READ_TOKEN_FILE"] == f"{tokens_dir}/hub-read.token"
    assert services["grafana"]["environment"]["GARDEN_GRAFANA_INFLUX_TOKEN_FILE"] == f"{tokens_dir}/grafana.token"
    mounts = {v.split(":")[1]: v.split(":")[2:] for v in services["hub"]["volumes"]}
    assert mounts[tokens_dir] == ["ro"]
    assert "GARDEN_HUB_INFLUX_READ" not in init and "GARDEN_HUB_INFLUX_READ" not in hub


def test_ports_bind_to_loopback_unless_told(rendered: Rendered) -> None:
    services = rendered.config["services"]
    assert services["mosquitto"]["ports"] == ["0.0.0.0:1883:1883/tcp"]  # GARDEN_MQTT_BIND in the env file
    assert services["influxdb"]["ports"] == ["127.0.0.1:8086:8086/tcp"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000/tcp"]
    for name in ("hub", "bridge", "influxdb-init"):
        assert "ports" not in services[name]


def test_grafana_provisioning_mounts(rendered: Rendered) -> None:
    grafana = rendered.config["services"]["grafana"]
    mounts = {v.split(":")[1]: (v.split(":")[0], v.split(":")[2]) for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == (str(ROOT / "dashboards" / "provisioning"), "ro")
    assert mounts["/var/lib/grafana/dashboards/garden"] == (str(ROOT / "dashboards" / "json"), "ro")
    # What the provisioning files expect is what the compose file gives them.
    provisioning = ROOT / "dashboards" / "provisioning"
    for provider in (provisioning / "dashboards").glob("*.yaml"):
        for entry in load_yaml(provider.read_text())["providers"]:
            assert entry["options"]["path"] in mounts, f"{provider}: {entry['options']['path']} is not mounted"
    env = grafana["environment"]
    for source in (provisioning / "datasources").glob("*.yaml"):
        live = "\n".join(line for line in source.read_text().splitlines() if not line.lstrip().startswith("#"))
        for var in re.findall(r"\$\{(\w+)\}", live):
            assert var in env or f"{var}_FILE" in env, f"{source.name} needs {var}; grafana's environment lacks it"
    token_file = env["GARDEN_GRAFANA_INFLUX_TOKEN_FILE"]
    assert mounts[str(Path(token_file).parent)][1] == "ro"


def test_no_secret_values_anywhere(rendered: Rendered) -> None:
    assert set(rendered.config["secrets"]) == SECRET_NAMES == set(rendered.secrets)
    for name, spec in rendered.config["secrets"].items():
        assert spec["file"] == f"{rendered.env['GARDEN_SECRETS_DIR']}/{name}"
    for name, value in rendered.secrets.items():
        assert len(value) >= 24, f"make-secrets.sh made a short {name}"
        assert value not in rendered.text, f"the value of {name} appears in the rendered config"
    # Every variable that names a secret points at a file, never holds one.
    for service, spec in rendered.config["services"].items():
        for key, value in spec.get("environment", {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and not key.endswith(("_DIR", "_USERS")):
                assert key.endswith("_FILE"), f"{service}: {key} would hold a secret: use {key}_FILE"
                assert value.startswith(("/run/secrets/", "/garden-tokens/")), f"{service}: {key}={value}"
    # .env.example holds no secret either.
    for line in (ROOT / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert key == "GARDEN_SECRETS_DIR" or not re.search(r"PASSWORD|TOKEN|SECRET", key), line
    # And no real secret sits in the repository's default secrets directory.
    kept = {p.name for p in (ROOT / "deploy" / "secrets").iterdir()}
    assert kept <= {".gitignore", "README.md"} | SECRET_NAMES
    assert "*" in (ROOT / "deploy" / "secrets" / ".gitignore").read_text().splitlines()


def test_data_lives_on_named_volumes(rendered: Rendered) -> None:
    named = set(rendered.config["volumes"])
    expected = {
        "mosquitto": "/mosquitto/data",
        "influxdb": "/var/lib/influxdb2",
        "grafana": "/var/lib/grafana",
        "hub": "/var/lib/garden",
        "bridge": "/var/lib/garden",
    }
    for service, target in expected.items():
        sources = {v.split(":")[1]: v.split(":")[0] for v in rendered.config["services"][service]["volumes"]}
        assert sources.get(target) in named, f"{service}: {target} is not on a named volume"


def test_env_example_documents_every_variable() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"[A-Z_]+=", line)
    }
    assert used == documented, (
        f"only in docker-compose.yml: {used - documented}; only in .env.example: {documented - used}"
    )
    # The defaults in .env.example are the compose file's own defaults.
    defaults = dict(re.findall(r"\$\{(\w+):-([^}]*)\}", COMPOSE_FILE.read_text()))
    for line in (ROOT / ".env.example").read_text().splitlines():
        if re.match(r"[A-Z_]+=", line):
            key, value = line.split("=", 1)
            assert defaults.get(key) == value, (
                f".env.example says {key}={value}, the compose default is {defaults.get(key)}"
            )


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert re.search(r"pip install \.( |$)", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["garden"\]', text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    # The uid the token files are made for is the image's user.
    compose = COMPOSE_FILE.read_text()
    uid = re.search(r"--uid (\d+)", text)
    assert uid and f'GARDEN_HUB_UID: "{uid.group(1)}"' in compose


def test_grafana_entrypoint_exports_the_token(tmp_path: Path) -> None:
    run = tmp_path / "run.sh"
    run.write_text('#!/bin/sh\necho "token=$GARDEN_GRAFANA_INFLUX_TOKEN args=$*"\n')
    run.chmod(0o755)
    token = tmp_path / "grafana.token"
    token.write_text("s3cr3t-token\n")
    script = str(ROOT / "deploy" / "grafana" / "entrypoint.sh")
    env = {"PATH": os.environ["PATH"], "GRAFANA_RUN": str(run), "GARDEN_GRAFANA_INFLUX_TOKEN_FILE": str(token)}
    out = subprocess.run(["sh", script, "a"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "token=s3cr3t-token args=a"
    out = subprocess.run(["sh", script], env={**env, "GARDEN_GRAFANA_INFLUX_TOKEN": "preset"},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "token=preset args="
    missing = subprocess.run(["sh", script], env={**env, "GARDEN_GRAFANA_INFLUX_TOKEN_FILE": str(tmp_path / "no")},
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1 and "influxdb-init" in missing.stderr


# ================================================================== Mosquitto


def conf_values(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            values.setdefault(key, []).append(value.strip())
    return values


PASSWORDS = {"shed": "shed-pw-123", "hub": "hub-pw-456", "volunteer": "volunteer-pw-789"}


@dataclass
class Broker:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    tls_port: int = 0

    @property
    def auth_dir(self) -> Path:
        return self.workdir / "auth"

    def log(self) -> str:
        return (self.workdir / "broker.log").read_text(errors="replace")


def start_broker(cmd: list[str], workdir: Path, port: int, env: dict[str, str] | None = None) -> Broker:
    with (workdir / "broker.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def accepts() -> bool:
        assert proc.poll() is None, f"the broker exited:\n{(workdir / 'broker.log').read_text()}"
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
    return Broker(port, workdir, proc)


def stop_broker(broker: Broker) -> None:
    broker.proc.send_signal(signal.SIGTERM)
    broker.proc.wait(10)


def require_mosquitto() -> None:
    for tool in (MOSQUITTO, MOSQUITTO_PASSWD, MOSQUITTO_SUB):
        if not Path(tool).exists():
            pytest.fail(f"{tool} is missing: run scripts/setup.sh (apt-get install mosquitto mosquitto-clients)")


def make_certificates(work: Path) -> None:
    """A throwaway CA (ca.pem) and a server certificate for localhost signed by it."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=garden-test-ca")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (work / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """deploy/mosquitto/mosquitto.conf, started by the compose service's entrypoint.

    Its commented-out TLS listener is switched on too (docs/deploy.md, "TLS"),
    with a certificate from a throwaway CA.
    """
    require_mosquitto()
    work = tmp_path_factory.mktemp("mosquitto-compose")
    port, tls_port = free_port(), free_port()
    make_certificates(work)
    (work / "data").mkdir()
    secrets = work / "secrets"
    secrets.mkdir()
    users = []
    for user, password in PASSWORDS.items():
        (secrets / user).write_text(f"  {password}\n")  # blanks are stripped, as read_secret does
        users.append(f"{user}={secrets / user}")
    conf = work / "mosquitto.conf"
    conf.write_text(
        adapted(
            (MOSQ_DIR / "mosquitto.conf").read_text(),
            {
                "listener 1883": f"listener {port} 127.0.0.1",
                "persistence_location /mosquitto/data/": f"persistence_location {work}/data/",
                "password_file /mosquitto/auth/passwd": f"password_file {work}/auth/passwd",
                "acl_file /mosquitto/auth/acl": f"acl_file {work}/auth/acl",
                "#listener 8883": f"listener {tls_port} 127.0.0.1",
                "#protocol mqtt": "protocol mqtt",
                "#certfile /mosquitto/certs/fullchain.pem": f"certfile {work}/server.pem",
                "#keyfile /mosquitto/certs/privkey.pem": f"keyfile {work}/server.key",
                "#tls_version tlsv1.2": "tls_version tlsv1.2",
            },
            # The tests' temp dir is private to whoever runs them.
            extra=f"user {getpass.getuser()}\n",
        )
    )
    env = {
        "PATH": os.environ["PATH"],
        "GARDEN_MQTT_USERS": " ".join(users),
        "GARDEN_MQTT_AUTH_DIR": str(work / "auth"),
        "GARDEN_MOSQUITTO_CONF": str(conf),
        "GARDEN_MQTT_ACL": str(MOSQ_DIR / "acl"),
        "GARDEN_MQTT_DATA_DIR": str(work / "data"),
        "MOSQUITTO": MOSQUITTO,
    }
    b = start_broker(["sh", str(MOSQ_DIR / "entrypoint.sh")], work, port, env)
    b.tls_port = tls_port
    yield b
    stop_broker(b)


@pytest.fixture(scope="module")
def native_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Debian's main mosquitto.conf with deploy/mosquitto/mosquitto-native.conf as its drop-in."""
    require_mosquitto()
    work = tmp_path_factory.mktemp("mosquitto-native")
    port = free_port()
    (work / "data").mkdir()
    (work / "conf.d").mkdir()
    (work / "mosquitto.conf").write_text(debian_main_conf(work))
    (work / "conf.d" / "garden.conf").write_text(
        adapted(
            (MOSQ_DIR / "mosquitto-native.conf").read_text(),
            {
                "listener 1883 127.0.0.1": f"listener {port} 127.0.0.1",
                "password_file /etc/mosquitto/garden.passwd": f"password_file {work}/garden.passwd",
                "acl_file /etc/mosquitto/garden.acl": f"acl_file {work}/garden.acl",
            },
        )
    )
    shutil.copy(MOSQ_DIR / "acl", work / "garden.acl")
    passwd = work / "garden.passwd"
    for i, (user, password) in enumerate(PASSWORDS.items()):
        flags = ["-c", "-b"] if i == 0 else ["-b"]
        subprocess.run([MOSQUITTO_PASSWD, *flags, str(passwd), user, password], check=True, capture_output=True)
    b = start_broker([MOSQUITTO, "-c", str(work / "mosquitto.conf")], work, port)
    yield b
    stop_broker(b)


class Client(ProbeClient):
    """The shared probe client; a user's password defaults to the one in PASSWORDS."""

    def __init__(self, port: int, user: str | None, password: str | None = None, client_id: str = "") -> None:
        super().__init__(port, user, password if password is not None or user is None else PASSWORDS.get(user),
                         client_id)  # fmt: skip


@pytest.fixture
def clients(broker: Broker) -> Iterator[Any]:
    made: list[Client] = []

    def connect(user: str | None, password: str | None = None, client_id: str = "") -> Client:
        client = Client(broker.port, user, password, client_id)
        made.append(client)
        reason = client.connect()
        assert not reason.is_failure, f"{user} was refused: {reason}"
        return client

    yield connect
    for client in made:
        client.close()


def test_both_broker_configs_share_persistence_and_queue_settings() -> None:
    compose, native = conf_values(MOSQ_DIR / "mosquitto.conf"), conf_values(MOSQ_DIR / "mosquitto-native.conf")
    shared = ("per_listener_settings", "allow_anonymous", "persistence", "autosave_interval",
              "autosave_on_changes", "max_queued_messages", "max_queued_bytes", "max_inflight_messages",
              "queue_qos0_messages", "persistent_client_expiration", "max_packet_size")  # fmt: skip
    for key in shared:
        assert key in compose, f"mosquitto.conf does not set {key}"
        assert compose[key] == native.get(key), f"{key}: compose {compose[key]} != native {native.get(key)}"
    assert compose["allow_anonymous"] == ["false"] and compose["persistence"] == ["true"]
    assert 10 <= int(compose["autosave_interval"][0]) <= 300, "bounded loss on a power cut"
    assert int(compose["max_queued_messages"][0]) >= 100_000, "far above Mosquitto's default of 1000"
    assert 0 < int(compose["max_queued_bytes"][0]) <= 1 << 30, "the queue is bounded by bytes"
    assert re.fullmatch(r"\d+[hdwmy]", compose["persistent_client_expiration"][0])
    # Debian's main file sets the location; a second one is an error for Mosquitto.
    assert "persistence_location" not in native


def test_password_file_is_built_from_the_secret_files(broker: Broker) -> None:
    passwd = (broker.auth_dir / "passwd").read_text()
    users = [line.split(":", 1)[0] for line in passwd.splitlines()]
    assert users == [*PASSWORDS, "health"]
    for password in PASSWORDS.values():
        assert password not in passwd, "passwords are stored hashed"
    assert (broker.auth_dir / "passwd").stat().st_mode & 0o077 == 0
    assert (broker.auth_dir / "acl").read_text() == (MOSQ_DIR / "acl").read_text()


# (user, topic, may publish). Garden "demo", bridge "shed".
PUBLISH_RULES = [
    ("shed", "garden/demo/node/bed-1/telemetry", True),
    ("shed", "garden/demo/node/bed-1/status", True),
    ("shed", "garden/demo/bridge/shed/status", True),
    ("shed", "homeassistant/device/demo_bed-1/config", True),
    ("shed", "garden/demo/node/bed-1/config", False),
    ("shed", "garden/demo/bridge/greenhouse/status", False),
    ("shed", "garden/demo/hub/hub/status", False),
    ("shed", "garden/demo/alert/dry/bed-1", False),
    ("shed", "garden/demo/event/watering", False),
    ("shed", "garden/demo/node/bed-1/telemetry/extra", False),
    ("hub", "garden/demo/hub/hub/status", True),
    ("hub", "garden/demo/alert/dry/bed-1", True),
    ("hub", "garden/demo/event/watering", True),
    ("hub", "garden/demo/node/bed-1/telemetry", False),
    ("hub", "garden/demo/node/bed-1/status", False),
    ("hub", "garden/demo/node/bed-1/config", False),
    ("hub", "homeassistant/device/demo_bed-1/config", False),
    ("volunteer", "garden/demo/node/bed-1/config", True),
    ("volunteer", "garden/demo/node/bed-1/telemetry", False),
    ("volunteer", "garden/demo/node/bed-1/status", False),
    ("volunteer", "garden/demo/bridge/shed/status", False),
    ("volunteer", "garden/demo/hub/hub/status", False),
    ("volunteer", "garden/demo/alert/dry/bed-1", False),
    # the watch: bed profiles from volunteers, needs and answers from the hub
    ("hub", "garden/demo/bed/bed-1/need", True),
    ("hub", "garden/demo/reply/cli-1a2b", True),
    ("hub", "garden/demo/bed/bed-1/config", False),
    ("volunteer", "garden/demo/bed/bed-1/config", True),
    ("volunteer", "garden/demo/cmd/alerts", True),
    ("volunteer", "garden/demo/event/config", True),
    # the commons: the hub publishes its state, volunteers only ask (cmd/commons)
    ("hub", "garden/demo/commons/claim/bed-1", True),
    ("volunteer", "garden/demo/commons/claim/bed-1", False),
    ("volunteer", "garden/demo/cmd/commons", True),
    ("shed", "garden/demo/commons/claim/bed-1", False),
    ("volunteer", "garden/demo/event/watering", False),
    ("volunteer", "garden/demo/bed/bed-1/need", False),
    ("volunteer", "garden/demo/reply/cli-1a2b", False),
    ("shed", "garden/demo/cmd/alerts", False),
    ("shed", "garden/demo/bed/bed-1/need", False),
]


@pytest.mark.parametrize(("user", "topic", "allowed"), PUBLISH_RULES)
def test_acl_publish(clients: Any, user: str, topic: str, allowed: bool) -> None:
    code = clients(user).publish(topic)
    assert (code < 0x80) is allowed, f"{user} publishing to {topic}: reason code {code:#x}"
    if not allowed:
        assert code == NOT_AUTHORIZED


# (reader, its subscription, a topic it matches, who publishes there, may the reader get it).
# Mosquitto 2 grants every SUBSCRIBE and checks read access on each message it
# delivers, so what counts is what arrives. One garden per row: no retained
# message of one row reaches another.
READ_RULES = [
    ("shed", "garden/r1/node/+/config", "garden/r1/node/bed-1/config", "volunteer", True),
    ("shed", "garden/r2/node/+/telemetry", "garden/r2/node/bed-1/telemetry", "shed", False),
    ("shed", "garden/#", "garden/r3/node/bed-1/config", "volunteer", True),
    ("shed", "garden/#", "garden/r4/hub/hub/status", "hub", False),
    ("hub", "garden/r5/node/+/telemetry", "garden/r5/node/bed-1/telemetry", "shed", True),
    ("hub", "$share/hubs/garden/r6/node/+/telemetry", "garden/r6/node/bed-1/telemetry", "shed", True),
    ("hub", "garden/r7/node/+/status", "garden/r7/node/bed-1/status", "shed", True),
    ("hub", "garden/r8/bridge/+/status", "garden/r8/bridge/shed/status", "shed", True),
    ("hub", "garden/r9/node/+/config", "garden/r9/node/bed-1/config", "volunteer", True),
    ("hub", "homeassistant/#", "homeassistant/device/demo_bed-1/config", "shed", False),  # the ACL names garden demo
    ("volunteer", "garden/r11/node/+/status", "garden/r11/node/bed-1/status", "shed", True),
    ("volunteer", "garden/r12/bridge/+/status", "garden/r12/bridge/shed/status", "shed", True),
    ("volunteer", "garden/r13/hub/+/status", "garden/r13/hub/hub/status", "hub", True),
    ("volunteer", "garden/r14/alert/#", "garden/r14/alert/dry/bed-1", "hub", True),
    ("volunteer", "garden/r15/node/+/telemetry", "garden/r15/node/bed-1/telemetry", "shed", False),
    ("volunteer", "$SYS/broker/uptime", None, None, False),
    ("hub", "garden/r16/bed/+/config", "garden/r16/bed/bed-1/config", "volunteer", True),
    ("hub", "garden/r17/cmd/#", "garden/r17/cmd/alerts", "volunteer", True),
    ("volunteer", "garden/r18/bed/+/need", "garden/r18/bed/bed-1/need", "hub", True),
    ("volunteer", "garden/r24/hub/+/commons", "garden/r24/hub/hub/commons", "hub", True),
    ("shed", "garden/r20/cmd/#", "garden/r20/cmd/alerts", "volunteer", False),
    ("volunteer", "garden/r21/commons/#", "garden/r21/commons/share/s1", "hub", True),
    ("hub", "garden/r22/cmd/commons", "garden/r22/cmd/commons", "volunteer", True),
    ("shed", "garden/r23/commons/#", "garden/r23/commons/claim/bed-1", "hub", False),
]


def test_acl_each_cli_reads_only_its_own_answers(clients: Any) -> None:
    """Answers may hold a member's own contact details: a volunteer's client reads its own reply topic only."""
    mine = clients("volunteer", client_id="cli-1a2b")
    other = clients("volunteer", client_id="cli-9f9f")
    for receiver in (mine, other):
        receiver.subscribe("garden/r19/reply/#")
    assert clients("hub").publish("garden/r19/reply/cli-1a2b", b"{}") < 0x80
    assert mine.received(0.4, stop_after=1)
    assert not other.received(0.4, stop_after=1)


@pytest.mark.parametrize(("reader", "subscription", "topic", "publisher", "allowed"), READ_RULES)
def test_acl_read(
    clients: Any, reader: str, subscription: str, topic: str | None, publisher: str | None, allowed: bool
) -> None:
    receiver = clients(reader)
    receiver.subscribe(subscription)
    if topic is not None and publisher is not None:
        assert clients(publisher).publish(topic, b"{}") < 0x80, f"{publisher} may publish to {topic}"
    got = receiver.received(0.4, stop_after=1)
    assert bool(got) is allowed, f"{reader} on {subscription}: got {got}"


def test_bridge_cannot_write_a_node_config(clients: Any) -> None:
    """The brief's case: a volunteer listening on config topics sees the volunteer's write, never the bridge's."""
    volunteer = clients("volunteer")
    assert volunteer.subscribe("garden/acl/node/+/config") < 0x80
    assert clients("shed").publish("garden/acl/node/bed-1/config", b'{"bed": "forged"}', retain=True) == NOT_AUTHORIZED
    assert volunteer.publish("garden/acl/node/bed-2/config", b'{"bed": "bed-2"}') < 0x80
    got = volunteer.received(2.0, stop_after=1) + volunteer.received(0.2)
    assert [(t, p) for t, p, _ in got] == [("garden/acl/node/bed-2/config", b'{"bed": "bed-2"}')]
    # Nothing was retained either: a new subscriber gets nothing for bed-1.
    late = clients("volunteer")
    late.subscribe("garden/acl/node/bed-1/config")
    assert late.received(0.3) == []


def test_the_hub_receives_what_the_bridge_publishes(clients: Any) -> None:
    hub = clients("hub")
    assert hub.subscribe("$share/hubs/garden/flow/node/+/telemetry") < 0x80
    assert hub.subscribe("garden/flow/bridge/+/status") < 0x80
    bridge = clients("shed")
    assert bridge.publish("garden/flow/node/bed-1/telemetry", b'{"seq": 1}') < 0x80
    assert bridge.publish("garden/flow/bridge/shed/status", b'{"state": "online"}', retain=True) < 0x80
    topics = sorted(t for t, _, _ in hub.received(2.0, stop_after=2))
    assert topics == ["garden/flow/bridge/shed/status", "garden/flow/node/bed-1/telemetry"]


@pytest.mark.parametrize(("user", "password"), [("shed", "wrong"), ("nobody", "x"), (None, None), ("health", "guess")])
def test_unknown_users_and_wrong_passwords_are_refused(broker: Broker, user: str | None, password: str | None) -> None:
    client = Client(broker.port, user, password)
    try:
        assert client.connect().is_failure
    finally:
        client.close()


def test_compose_healthcheck_command_works(broker: Broker, clients: Any) -> None:
    """The mosquitto service's healthcheck, as written in docker-compose.yml, against this broker."""
    services = load_yaml(COMPOSE_FILE.read_text()) if yaml_python() else None
    if services is None:
        pytest.fail("no Python with PyYAML to read docker-compose.yml: run scripts/setup.sh")
    kind, command = services["services"]["mosquitto"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = (
        command.replace("$$", "$")  # compose's escape for a literal $
        .replace("-p 1883", f"-p {broker.port}")
        .replace("/mosquitto/auth/", f"{broker.auth_dir}/")
    )
    assert subprocess.run(["sh", "-c", command], capture_output=True, timeout=15).returncode == 0
    # The health user can read the broker's uptime and nothing else.
    health = Client(broker.port, "health", (broker.auth_dir / "health.password").read_text().strip())
    try:
        assert not health.connect().is_failure
        health.subscribe("$SYS/broker/uptime")
        assert health.received(2.0, stop_after=1), "the health user reads the broker's uptime"
        health.subscribe("garden/health-check/#")
        assert clients("volunteer").publish("garden/health-check/node/bed-1/config") < 0x80
        # (the broker republishes $SYS/broker/uptime every sys_interval: that one may come again)
        got = [m for m in health.received(0.4) if m[0] != "$SYS/broker/uptime"]
        assert got == [], "and nothing else"
        assert health.publish("garden/demo/node/bed-1/config") == NOT_AUTHORIZED
    finally:
        health.close()


@pytest.mark.parametrize("client_id", ["shed+1", "shed#", "garden-bridge-demo-+"])
def test_wildcard_client_ids(clients: Any, client_id: str) -> None:
    """Mosquitto 2 accepts a client id holding + or #, but denies it whatever a `pattern` rule would grant.

    Rules given to the user by name still apply. Our own client ids can never hold
    them (next test), so this only stops a crafted id from widening a pattern.
    """
    client = clients("shed", client_id=client_id)
    assert client.connack is not None and not client.connack.is_failure
    assert client.publish("garden/demo/bridge/shed/status") == NOT_AUTHORIZED  # pattern ... %u
    assert client.publish("garden/demo/node/bed-1/telemetry") < 0x80  # user shed's own rule


@pytest.mark.parametrize("bad", ["shed+1", "shed#", "a/b"])
def test_our_ids_can_never_hold_wildcards(bad: str) -> None:
    """Client ids are garden-bridge-<garden>-<bridge> and garden-hub-<garden>-<hub>; each part is
    checked, and the error names where the bad value came from (here the environment)."""
    base = {"GARDEN_CONFIG": "/dev/null"}
    with pytest.raises(ConfigError, match=r"GARDEN_BRIDGE_ID"):
        load_bridge_settings(env={**base, "GARDEN_BRIDGE_ID": bad})
    with pytest.raises(ConfigError, match=r"GARDEN_GARDEN"):
        load_bridge_settings(env={**base, "GARDEN_GARDEN": bad, "GARDEN_BRIDGE_ID": "shed"})
    with pytest.raises(ConfigError, match=r"GARDEN_HUB_ID"):
        load_hub_settings(env={**base, "GARDEN_HUB_ID": bad})


def healthcheck(kind: str, broker: Broker, user: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    secret = tmp_path / f"{user}.password"
    secret.write_text(PASSWORDS[user] + "\n")
    run_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GARDEN_CONFIG": "/dev/null",
        "GARDEN_GARDEN": "health",
        "GARDEN_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
        "GARDEN_MQTT_USERNAME": user,
        "GARDEN_MQTT_PASSWORD_FILE": str(secret),
        **env,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "docker" / "healthcheck.py"), kind, "--wait", "0.3"],
        env=run_env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_container_healthcheck_follows_the_retained_status(broker: Broker, clients: Any, tmp_path: Path) -> None:
    for kind, user, topic, env in (
        ("bridge", "shed", "garden/health/bridge/shed/status", {"GARDEN_BRIDGE_ID": "shed"}),
        ("hub", "hub", "garden/health/hub/hub/status", {"GARDEN_HUB_ID": "hub"}),
    ):
        first = healthcheck(kind, broker, user, tmp_path, **env)
        assert first.returncode == 1 and "no retained status" in first.stdout, first.stdout + first.stderr
        publisher = clients(user)
        assert publisher.publish(topic, b'{"state": "online"}', retain=True) < 0x80
        online = healthcheck(kind, broker, user, tmp_path, **env)
        assert online.returncode == 0, online.stdout + online.stderr
        assert publisher.publish(topic, b'{"state": "offline"}', retain=True) < 0x80
        offline = healthcheck(kind, broker, user, tmp_path, **env)
        assert offline.returncode == 1 and "offline" in offline.stdout
    wrong = healthcheck("bridge", broker, "shed", tmp_path, GARDEN_BRIDGE_ID="shed", GARDEN_MQTT_USERNAME="nobody")
    assert wrong.returncode == 1 and "cannot reach the MQTT broker" in wrong.stdout


def test_tls_listener_as_documented(broker: Broker, clients: Any, tmp_path: Path) -> None:
    """A bridge on mqtts:// with a private CA (SSL_CERT_FILE) reaches the TLS listener; without the CA it can't."""
    topic = "garden/tls/bridge/shed/status"
    assert clients("shed").publish(topic, b'{"state": "online"}', retain=True) < 0x80
    env = {
        "GARDEN_GARDEN": "tls",
        "GARDEN_BRIDGE_ID": "shed",
        "GARDEN_MQTT_URL": f"mqtts://localhost:{broker.tls_port}",
    }
    trusted = healthcheck("bridge", broker, "shed", tmp_path, SSL_CERT_FILE=str(broker.workdir / "ca.pem"), **env)
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    untrusted = healthcheck("bridge", broker, "shed", tmp_path, SSL_CERT_FILE=str(tmp_path / "no-ca.pem"), **env)
    assert untrusted.returncode == 1 and "cannot reach the MQTT broker" in untrusted.stdout


def test_entrypoint_refuses_a_missing_or_empty_secret(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for users, message in (
        (f"shed={tmp_path / 'missing'}", "cannot read the password of MQTT user 'shed'"),
        (f"shed={empty}", "is empty"),
        ("shed", "has no '=/path/to/secret'"),
        (f"bad:name={empty}", "bad MQTT user name"),
        ("", "GARDEN_MQTT_USERS is empty"),
    ):
        env = {
            "PATH": os.environ["PATH"],
            "GARDEN_MQTT_USERS": users,
            "GARDEN_MQTT_AUTH_DIR": str(tmp_path / "auth"),
            "GARDEN_MOSQUITTO_CONF": str(MOSQ_DIR / "mosquitto.conf"),
            "GARDEN_MQTT_ACL": str(MOSQ_DIR / "acl"),
            "MOSQUITTO": "/bin/false",
        }
        result = subprocess.run(["sh", str(MOSQ_DIR / "entrypoint.sh")], env=env, capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr, (users, result.stderr)


def test_native_drop_in_runs_under_debians_main_config(native_broker: Broker) -> None:
    bridge = Client(native_broker.port, "shed")
    volunteer = Client(native_broker.port, "volunteer")
    anonymous = Client(native_broker.port, None)
    try:
        assert not bridge.connect().is_failure
        assert bridge.publish("garden/demo/node/bed-1/telemetry") < 0x80
        assert bridge.publish("garden/demo/node/bed-1/config") == NOT_AUTHORIZED
        assert not volunteer.connect().is_failure
        assert volunteer.publish("garden/demo/node/bed-1/config") < 0x80
        assert anonymous.connect().is_failure
    finally:
        for client in (bridge, volunteer, anonymous):
            client.close()
    assert "Error" not in (native_broker.workdir / "mosquitto.log").read_text()
