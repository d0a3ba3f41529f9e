"""`garden secure init`: what it writes, with which modes, and that the real programs accept it.

The command runs as its own process, as a new user would run it. Its password file
is checked against a real Mosquitto 2.0.11 (hashed by mosquitto_passwd and by our
own $7$ code), its InfluxDB script against a real influxd 1.6 with auth on (the
session fixture of tests/security/conftest.py), its output directory against
`docker-compose config` and the compose broker's own entrypoint.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.settings import load_bridge_settings
from garden.influx import InfluxSettings
from garden.influx_access import check_scopes
from garden.mosquitto_auth import (
    EXAMPLE_BRIDGES,
    EXAMPLE_GARDEN,
    BridgeNodes,
    bridges_from_config,
    hash_password,
    render_acl,
)
from garden.secure import hashed_password_file

from .conftest import ADMIN_PASSWORD, ADMIN_USER, Garden
from .mqtt_fixtures import (
    BRIDGES,
    GARDEN,
    MOSQ_DIR,
    MOSQUITTO,
    ROOT,
    Client,
    adapted,
    free_port,
    garden_cli,
    read_env,
    secure_init,
    wait_until,
)

SECRET_FILES = {
    "mqtt_bridge_shed_password", "mqtt_bridge_greenhouse_password", "mqtt_hub_password", "mqtt_volunteer_password",
    "influx_hub_password", "influx_reader_password", "influxdb_admin_password", "influxdb_admin_token",
    "grafana_admin_password",
}  # fmt: skip
DERIVED = {"mqtt_bridge_password", "mosquitto_passwd", "mosquitto_acl", "influxdb-users.influxql",
           "bridge-shed.env", "bridge-greenhouse.env", "hub.env", "cli.env", "grafana.env"}  # fmt: skip
TLS_FILES = {"ca.key", "ca.pem", "server.key", "server.pem"}


def args_for(bridges: dict[str, tuple[str, ...]] = BRIDGES) -> list[str]:
    out = []
    for bridge, nodes in bridges.items():
        out += ["--bridge", f"{bridge}={','.join(nodes)}"]
    return out


def values(directory: Path) -> dict[str, str]:
    return {name: (directory / name).read_text().strip() for name in SECRET_FILES}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """A first run, printed as a table (what a new user reads), TLS on."""
    directory = tmp_path_factory.mktemp("init") / "secrets"
    done = garden_cli("secure", "init", "--dir", str(directory), "--garden", GARDEN, "--tls", *args_for())
    assert done.returncode == 0, done.stdout + done.stderr
    yield directory, done


def test_every_file_is_0600_in_a_0700_directory(made: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    directory, _ = made
    assert {p.name for p in directory.iterdir()} == SECRET_FILES | DERIVED | {"tls"}
    assert {p.name for p in (directory / "tls").iterdir()} == TLS_FILES
    for path in [directory, directory / "tls"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in [*directory.iterdir(), *(directory / "tls").iterdir()]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} is {stat.S_IMODE(path.stat().st_mode):o}"
    for name in SECRET_FILES:
        assert re.fullmatch(r"[A-Za-z0-9]{32}\n", (directory / name).read_text()), name
    # This machine's bridge is the first: the alias is the same file.
    assert os.path.samefile(directory / "mqtt_bridge_password", directory / "mqtt_bridge_shed_password")


def test_no_secret_value_in_its_output_or_env_files(
    made: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    directory, done = made
    as_json = garden_cli("secure", "init", "--dir", str(directory), "--garden", GARDEN, "--json", *args_for())
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert {f["file"]: f["state"] for f in report["files"]}["mqtt_hub_password"] == "kept"
    secret_values = list(values(directory).values())
    secret_values += [line.split(":", 1)[1] for line in (directory / "mosquitto_passwd").read_text().splitlines()]
    for value in secret_values:
        for text in (done.stdout, done.stderr, as_json.stdout, as_json.stderr):
            assert value not in text
        for env_file in directory.glob("*.env"):
            assert value not in env_file.read_text(), env_file
    for env_file in directory.glob("*.env"):
        for line in env_file.read_text().splitlines():
            if re.match(r"\w*(PASSWORD|TOKEN)\w*=", line):
                assert re.match(r"\w+_FILE=/", line), f"{env_file.name}: {line}"
    # What a new user reads: where, which files, how the containers read them, what next.
    assert "no secret is shown" in done.stdout and "How they are read" in done.stdout
    assert "Next steps" in done.stdout and "docker-compose up -d" in done.stdout


def test_never_overwrites_a_secret_unless_rotated(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    secure_init(directory)
    first = values(directory)
    (directory / "mqtt_hub_password").chmod(0o644)  # a mode someone loosened is fixed, the value kept
    report = secure_init(directory)
    states = {f["file"]: f["state"] for f in report["files"]}
    assert states["mqtt_hub_password"] == "kept (mode fixed)"
    assert stat.S_IMODE((directory / "mqtt_hub_password").stat().st_mode) == 0o600
    assert values(directory) == first
    report = secure_init(directory, "--rotate", "mqtt_hub_password", "--rotate", "greenhouse")
    states = {f["file"]: f["state"] for f in report["files"]}
    assert states["mqtt_hub_password"] == states["mqtt_bridge_greenhouse_password"] == "rotated"
    second = values(directory)
    changed = {name for name in SECRET_FILES if first[name] != second[name]}
    assert changed == {"mqtt_hub_password", "mqtt_bridge_greenhouse_password"}
    # Rotating this machine's bridge keeps its alias the same file.
    secure_init(directory, "--rotate", "shed")
    assert (directory / "mqtt_bridge_password").read_text() == (directory / "mqtt_bridge_shed_password").read_text()
    assert (directory / "mqtt_bridge_shed_password").read_text().strip() != second["mqtt_bridge_shed_password"]
    bad = garden_cli("secure", "init", "--dir", str(directory), "--rotate", "everything", *args_for())
    assert bad.returncode == 2 and "--rotate" in bad.stderr


def _broker_with_passwd(tmp: Path, passwd: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (tmp / "passwd").write_text(passwd)
    (tmp / "passwd").chmod(0o600)
    (tmp / "m.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp}/passwd\n"
        f"user {os.environ.get('USER') or 'root'}\nlog_dest file {tmp}/log\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp / "m.conf")])

    def accepts() -> bool:
        assert proc.poll() is None, (tmp / "log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(accepts, 10, "mosquitto")
    return proc, port


@pytest.mark.parametrize("tool", ["mosquitto_passwd", None])
def test_the_password_file_is_accepted_by_mosquitto(tmp_path: Path, tool: str | None) -> None:
    """Hashed by mosquitto_passwd -U when it is there, else by our own $7$ code: the broker takes both."""
    users = {"shed": "s3cret-Shed-0123456789abcdef", "hub": "h'b\"\\ with spaces and é"}
    passwd, how = hashed_password_file(users, tmp_path, shutil.which(tool) if tool else None)
    assert ("mosquitto_passwd" in how) is bool(tool)
    assert all(
        re.fullmatch(r"\w+:\$7\$101\$[A-Za-z0-9+/=]{16}\$[A-Za-z0-9+/=]{88}", line) for line in passwd.splitlines()
    )
    assert not list(tmp_path.glob(".mosquitto_passwd.*")), "the plaintext copy is gone"
    proc, port = _broker_with_passwd(tmp_path, passwd)
    try:
        for user, password in users.items():
            client = Client(port, user, password)
            try:
                assert not client.connect().is_failure, user
            finally:
                client.close()
        wrong = Client(port, "shed", "s3cret-Shed-0123456789abcdeX")
        try:
            assert wrong.connect().is_failure
        finally:
            wrong.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_our_hash_is_mosquittos_format() -> None:
    """The same salt and password give mosquitto_passwd's line (a line it wrote, checked by hand once)."""
    line = (
        "$7$101$N2yY8nPILyt95QHe$"
        "N9KZPDNB+xMNn0oUCeKWNQcxcWIZ+5eiQ1c0yyEyxluUoKTfyo5UXmXG1HVQm8n4JK911oYASUkGKVc6h96C+g=="
    )
    salt = base64.b64decode(line.split("$")[3])
    assert hash_password("alicepw", salt) == line


def test_the_acl_template_is_what_secure_init_makes_for_the_example_garden() -> None:
    """deploy/mosquitto/acl (the hand-editable template) never drifts from the generator."""
    assert (MOSQ_DIR / "acl").read_text() == render_acl(EXAMPLE_GARDEN, EXAMPLE_BRIDGES)


def test_bridges_come_from_garden_toml(tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    config.write_text('[garden]\nid = "plot-4"\n\n[bridges.shed]\nnodes = ["bed-1", "tank"]\n\n'
                      '[bridges.porch]\nnodes = []\n')  # fmt: skip
    done = garden_cli("secure", "init", "--dir", str(tmp_path / "s"), "--json", env={"GARDEN_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["garden"] == "plot-4" and report["bridges"] == {"shed": ["bed-1", "tank"], "porch": []}
    acl = (tmp_path / "s" / "mosquitto_acl").read_text()
    assert "user shed\ntopic write garden/+/node/bed-1/telemetry" in acl
    assert "topic write homeassistant/device/plot-4_tank/config" in acl
    assert "user porch\n# no nodes yet" in acl
    # The bridge and the hub still load a garden.toml with [bridges].
    assert load_bridge_settings(config, env={"GARDEN_BRIDGE_ID": "shed"}).garden == "plot-4"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[bridges.hub]\nnodes = ["a"]\n', "bridges.hub: 'hub' is an MQTT user of its own"),
        (
            '[bridges.a]\nnodes = ["n1"]\n[bridges.b]\nnodes = ["n1"]\n',
            "bridges.b.nodes: node 'n1' is already bridge 'a''s",
        ),
        ('[bridges.a]\nnodes = ["bed 1"]\n', "bridges.a.nodes: node id 'bed 1'"),
        ('[bridges.a]\nnode = ["x"]\n', "bridges.a.node: unknown key"),
        ('[bridges.a]\nnodes = "x"\n', "bridges.a.nodes: must be a list"),
        ("", "no bridges"),
    ],
)
def test_bad_bridge_lists_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "garden.toml"
    config.write_text(toml)
    done = garden_cli("secure", "init", "--dir", str(tmp_path / "s"), env={"GARDEN_CONFIG": str(config)})
    assert done.returncode == 2 and message in " ".join(done.stderr.split()), done.stderr
    assert not (tmp_path / "s").exists(), "nothing is written for a bad config"


def test_bridge_options_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="already bridge 'a''s"):
        bridges_from_config({"bridges": {"a": {"nodes": ["x"]}, "b": {"nodes": ["x"]}}})
    assert render_acl("g", (BridgeNodes("a", ("x",)),)).count("topic write garden/+/node/x/") == 2
    done = garden_cli("secure", "init", "--dir", "/tmp/never-made", "--bridge", "a=x", "--bridge", "b=x")
    assert done.returncode == 2 and "--bridge.b.nodes" in done.stderr


def test_the_influxdb_script_makes_a_writer_and_a_reader(tmp_path: Path, scoped_garden: Garden) -> None:
    """influxdb-users.influxql, run by the stock influx CLI as the admin, on a real influxd 1.6 with auth on."""
    directory = tmp_path / "s"
    env = {"GARDEN_INFLUX_URL": scoped_garden.locked.url, "GARDEN_INFLUX_DATABASE": scoped_garden.database}
    done = garden_cli("secure", "init", "--dir", str(directory), "--json", *args_for(), "--garden", GARDEN, env=env)
    assert done.returncode == 0, done.stderr
    # The users are server-wide: names of this test's own.
    writer, reader = f"{scoped_garden.database}_ingest", f"{scoped_garden.database}_reader"
    script = (directory / "influxdb-users.influxql").read_text()
    script = script.replace('"garden_ingest"', f'"{writer}"').replace('"garden_reader"', f'"{reader}"')
    (directory / "users.influxql").write_text(script)
    host, port = scoped_garden.locked.url.removeprefix("http://").split(":")
    influx = shutil.which("influx") or "/usr/bin/influx"
    run = subprocess.run(
        [influx, "-host", host, "-port", port, "-import", "-path", str(directory / "users.influxql")],
        env={"PATH": os.environ["PATH"], "INFLUX_USERNAME": ADMIN_USER, "INFLUX_PASSWORD": ADMIN_PASSWORD},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    settings = InfluxSettings(
        url=scoped_garden.locked.url,
        database=scoped_garden.database,
        username=writer,
        password=(directory / "influx_hub_password").read_text().strip(),
        read_username=reader,
        read_password=(directory / "influx_reader_password").read_text().strip(),
    )
    rows = check_scopes(settings)
    assert [r for r in rows if r[0] != "ok"] == [], rows
    assert {r[1] for r in rows} == {"anonymous", "write credential", "read credential"}


def test_tls_certificates(made: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    directory, _ = made
    tls = directory / "tls"
    openssl = shutil.which("openssl") or "/usr/bin/openssl"
    verify = subprocess.run([openssl, "verify", "-CAfile", tls / "ca.pem", tls / "server.pem"],
                            capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run([openssl, "x509", "-in", tls / "server.pem", "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text and "TLS Web Server Authentication" in text
    ca = subprocess.run([openssl, "x509", "-in", tls / "ca.pem", "-noout", "-text"],
                        capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "CA:TRUE" in ca
    assert "BEGIN CERTIFICATE" in (tls / "ca.pem").read_text()
    assert "PRIVATE KEY" in (tls / "ca.key").read_text()


# ---------------------------------------------------------------- compose and native


def test_compose_accepts_the_directory(tmp_path: Path) -> None:
    """`docker-compose config` with GARDEN_SECRETS_DIR at what secure init made: every secret file is there."""
    directory = tmp_path / "secrets"
    secure_init(directory, "--no-chown")
    env_file = tmp_path / "test.env"
    env_file.write_text(f"GARDEN_SECRETS_DIR={directory}\nGARDEN_BRIDGE_ID=shed\nGARDEN_GARDEN={GARDEN}\n")
    done = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file), "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = re.findall(r"^\s+file: (\S+)$", done.stdout, re.M)
    assert files and all(Path(f).is_file() and Path(f).parent == directory for f in files), files
    for value in values(directory).values():
        assert value not in done.stdout


def test_the_compose_broker_runs_on_the_generated_files(tmp_path: Path) -> None:
    """deploy/mosquitto/entrypoint.sh with the compose service's secrets taken from secure init's directory,
    under umask 000: the broker is locked down, and what it writes is private (mosquitto.db 0600)."""
    directory = tmp_path / "secrets"
    secure_init(directory, "--no-chown")
    port = free_port()
    work = tmp_path / "broker"
    (work / "data").mkdir(parents=True)
    (work / "data").chmod(0o777)
    conf = work / "mosquitto.conf"
    conf.write_text(
        adapted(
            (MOSQ_DIR / "mosquitto.conf").read_text(),
            {
                "listener 1883": f"listener {port} 127.0.0.1",
                "persistence_location /mosquitto/data/": f"persistence_location {work}/data/",
                "password_file /mosquitto/auth/passwd": f"password_file {work}/auth/passwd",
                "acl_file /mosquitto/auth/acl": f"acl_file {work}/auth/acl",
            },
            extra=f"user {os.environ.get('USER') or 'root'}\n",
        )
    )
    env = {
        "PATH": os.environ["PATH"],
        # As docker-compose.yml says, with /run/secrets/<name> at the generated files.
        "GARDEN_MQTT_USERS": f"shed={directory}/mqtt_bridge_password hub={directory}/mqtt_hub_password "
        f"volunteer={directory}/mqtt_volunteer_password",
        "GARDEN_MQTT_ACL": str(directory / "mosquitto_acl"),
        "GARDEN_MQTT_AUTH_DIR": str(work / "auth"),
        "GARDEN_MOSQUITTO_CONF": str(conf),
        "GARDEN_MQTT_DATA_DIR": str(work / "data"),
        "MOSQUITTO": MOSQUITTO,
    }
    with (work / "log").open("wb") as log:
        proc = subprocess.Popen(["sh", str(MOSQ_DIR / "entrypoint.sh")], env=env, stdout=log, stderr=log,
                                preexec_fn=lambda: os.umask(0))  # fmt: skip

    def accepts() -> bool:
        assert proc.poll() is None, (work / "log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(accepts, 10, "the compose broker")
    try:
        shed = Client(port, "shed", (directory / "mqtt_bridge_shed_password").read_text().strip())
        anonymous = Client(port, None)
        try:
            assert not shed.connect().is_failure
            assert shed.publish(f"garden/{GARDEN}/node/bed-1/status", b"{}", retain=True) < 0x80
            assert shed.publish(f"garden/{GARDEN}/node/gh-1/status", b"{}", retain=True) == 0x87
            assert anonymous.connect().is_failure
        finally:
            shed.close()
            anonymous.close()
        for name in ("passwd", "acl"):
            assert stat.S_IMODE((work / "auth" / name).stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert stat.S_IMODE((work / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((work / "data" / "mosquitto.db").stat().st_mode) == 0o600


def test_mosquitto_db_and_log_are_private_natively(tmp_path: Path) -> None:
    """Debian's mosquitto.service has no UMask; our drop-in sets it, and what the broker writes is 0600."""
    drop_in = (ROOT / "deploy" / "systemd" / "mosquitto.service.d" / "garden.conf").read_text()
    umask = int(re.search(r"^UMask=(\d+)$", drop_in, re.M).group(1), 8)  # type: ignore[union-attr]
    assert umask == 0o077
    port = free_port()
    (tmp_path / "data").mkdir()
    (tmp_path / "m.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {tmp_path}/data/\n"
        f"log_dest file {tmp_path}/mosquitto.log\nuser {os.environ.get('USER') or 'root'}\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "m.conf")], preexec_fn=lambda: os.umask(umask))

    def accepts() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(accepts, 10, "mosquitto")
    client = Client(port, None)
    try:
        assert not client.connect().is_failure
        assert client.publish("garden/x/node/n/config", b"{}", retain=True) < 0x80
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert stat.S_IMODE((tmp_path / "data" / "mosquitto.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "mosquitto.log").stat().st_mode) == 0o600


def test_make_secrets_sh_makes_private_files_and_the_acl(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    done = subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(directory)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert (directory / "mosquitto_acl").read_text() == (MOSQ_DIR / "acl").read_text()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    if os.geteuid() == 0:  # given to the containers' users
        assert directory.joinpath("mqtt_hub_password").stat().st_uid == 10001
        assert directory.joinpath("grafana_admin_password").stat().st_uid == 472
    else:
        assert "sudo chown 10001" in done.stdout


def test_grafana_env_hands_the_reader_password_to_the_datasource(tmp_path: Path) -> None:
    """grafana.env as made, through deploy/grafana/entrypoint.sh: the datasource's variable holds the password."""
    directory = tmp_path / "s"
    secure_init(directory, "--no-chown")
    run = tmp_path / "run.sh"
    run.write_text('#!/bin/sh\necho "user=$GARDEN_GRAFANA_INFLUX_USERNAME password=$GARDEN_GRAFANA_INFLUX_PASSWORD"\n')
    run.chmod(0o755)
    env = read_env(directory / "grafana.env") | {"PATH": os.environ["PATH"], "GRAFANA_RUN": str(run)}
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == str(directory / "grafana_admin_password")
    out = subprocess.run(["sh", str(ROOT / "deploy" / "grafana" / "entrypoint.sh")], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    password = (directory / "influx_reader_password").read_text().strip()
    assert out.stdout.strip() == f"user=garden_reader password={password}"
    missing = subprocess.run(["sh", str(ROOT / "deploy" / "grafana" / "entrypoint.sh")],
                             env={**env, "GARDEN_GRAFANA_INFLUX_PASSWORD_FILE": str(tmp_path / "no")},
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 1 and "cannot read" in missing.stderr


# Debian's mosquitto.service (the mosquitto package's), for machines without it.
DEBIAN_MOSQUITTO_UNIT = """\
[Unit]
Description=Mosquitto MQTT Broker
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def test_the_mosquitto_drop_in_is_a_valid_unit_setting(tmp_path: Path) -> None:
    """systemd-analyze reads the drop-in next to Debian's unit; and that unit reloads with SIGHUP."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: run scripts/setup.sh (apt-get install systemd)")
    debian = Path("/lib/systemd/system/mosquitto.service")
    unit = debian.read_text() if debian.exists() else DEBIAN_MOSQUITTO_UNIT
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit, "`systemctl reload mosquitto` is a SIGHUP"
    (tmp_path / "mosquitto.service").write_text(unit)
    (tmp_path / "mosquitto.service.d").mkdir()
    shutil.copy(ROOT / "deploy" / "systemd" / "mosquitto.service.d" / "garden.conf", tmp_path / "mosquitto.service.d")
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", "mosquitto.service"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert not [line for line in done.stderr.splitlines() if "garden.conf" in line], done.stderr


def test_env_files_name_files_where_the_services_find_them(tmp_path: Path) -> None:
    """--secrets-path moves the *_FILE paths; --for native leaves the services' secrets to their units."""
    compose = tmp_path / "compose"
    secure_init(compose, "--no-chown", "--secrets-path", "/srv/garden/secrets")
    hub = read_env(compose / "hub.env")
    assert hub["GARDEN_MQTT_PASSWORD_FILE"] == "/srv/garden/secrets/mqtt_hub_password"
    assert hub["GARDEN_INFLUX_READ_PASSWORD_FILE"] == "/srv/garden/secrets/influx_reader_password"
    assert read_env(compose / "bridge-shed.env")["GARDEN_MQTT_PASSWORD_FILE"].endswith("/mqtt_bridge_shed_password")
    native = tmp_path / "native"
    secure_init(native, "--for", "native")
    for name in ("hub.env", "bridge-shed.env", "bridge-greenhouse.env", "grafana.env"):
        env = read_env(native / name)
        assert not [k for k in env if k.endswith("_FILE")], f"{name}: the unit sets these from its credentials"
        assert "loads /etc/garden/secrets/" in (native / name).read_text()
    assert read_env(native / "hub.env")["GARDEN_INFLUX_READ_USERNAME"] == "garden_reader"
    assert read_env(native / "cli.env")["GARDEN_MQTT_PASSWORD_FILE"] == str(native / "mqtt_volunteer_password")
    # The units load what the native env files say they do.
    units = (ROOT / "deploy" / "systemd" / "garden-hub.service").read_text()
    for credential in ("mqtt_hub_password", "influx_hub_password", "influx_reader_password"):
        assert f"/etc/garden/secrets/{credential}" in units
    assert (
        "/etc/garden/secrets/mqtt_bridge_password"
        in (ROOT / "deploy" / "systemd" / "garden-bridge.service").read_text()
    )


def test_this_machines_bridge_follows_garden_bridge_id(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    done = garden_cli("secure", "init", "--dir", str(directory), "--json", *args_for(),
                      env={"GARDEN_BRIDGE_ID": "greenhouse"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["local_bridge"] == "greenhouse"
    assert os.path.samefile(directory / "mqtt_bridge_password", directory / "mqtt_bridge_greenhouse_password")
    other = garden_cli("secure", "init", "--dir", str(directory), "--json", *args_for(),
                       env={"GARDEN_BRIDGE_ID": "elsewhere"})  # fmt: skip
    assert json.loads(other.stdout)["local_bridge"] == "shed"  # not one of them: the first
