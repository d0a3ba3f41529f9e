"""`garden doctor --security`: what is open, against real servers.

An open broker (anonymous on: the integration tests' Mosquitto) fails; the broker
locked down by `garden secure init` (tests/security/mqtt_fixtures.py) with the
InfluxDB users of its script on a real influxd 1.6 with auth on passes every check.
Then one thing at a time is opened up, and the doctor names it with its fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from garden.doctor import FAIL, OK, WARN, judge_secret, judge_transport
from tests.integration.conftest import Broker

from .conftest import ADMIN_PASSWORD, ADMIN_USER, Garden
from .mqtt_fixtures import SecuredGarden, garden_cli, read_env, start_secured_garden


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredGarden]:
    g = start_secured_garden(tmp_path_factory.mktemp("doctor"))
    yield g
    g.stop()


def doctor(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = garden_cli("doctor", "--security", "--json", *args, env=env, cwd=cwd)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def states(body: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for c in body["checks"]:
        found.setdefault(c["name"], c["state"])
        if c["state"] == FAIL:
            found[c["name"]] = FAIL
    return found


def check(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in body["checks"] if c["name"] == name)


def import_influx_users(directory: Path, scoped: Garden) -> dict[str, str]:
    """Run the generated InfluxDB script as the admin (user names of this test's own); the env that uses them."""
    writer, reader = f"{scoped.database}_ingest", f"{scoped.database}_reader"
    script = (directory / "influxdb-users.influxql").read_text()
    users = directory.parent / f"users-{scoped.database}.influxql"  # not in the secrets directory: it is 0644
    for old, new in (('"garden_ingest"', f'"{writer}"'), ('"garden_reader"', f'"{reader}"'),
                     ('ON "garden"', f'ON "{scoped.database}"')):  # fmt: skip
        script = script.replace(old, new)
    users.write_text(script)
    host, port = scoped.locked.url.removeprefix("http://").split(":")
    subprocess.run(
        [shutil.which("influx") or "/usr/bin/influx", "-host", host, "-port", port, "-import",
         "-path", str(users)],
        env={"PATH": os.environ["PATH"], "INFLUX_USERNAME": ADMIN_USER, "INFLUX_PASSWORD": ADMIN_PASSWORD},
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return {
        "GARDEN_INFLUX_URL": scoped.locked.url,
        "GARDEN_INFLUX_DATABASE": scoped.database,
        "GARDEN_INFLUX_USERNAME": writer,
        "GARDEN_INFLUX_READ_USERNAME": reader,
    }


def test_an_open_broker_fails(security_broker: Broker, tmp_path: Path) -> None:
    code, body = doctor({"GARDEN_MQTT_URL": security_broker.url}, tmp_path)
    assert code == 1 and body["ok"] is False
    anonymous = check(body, "mqtt anonymous")
    assert anonymous["state"] == FAIL and "without a password" in anonymous["detail"]
    assert "allow_anonymous false" in anonymous["fix"]


def test_the_locked_down_garden_passes(locked: SecuredGarden, scoped_garden: Garden, tmp_path: Path) -> None:
    """hub.env as secure init wrote it, with the InfluxDB users its script made: nothing is open."""
    env = locked.hub_env() | import_influx_users(locked.secrets, scoped_garden)
    code, body = doctor(env, tmp_path, "--secrets-dir", str(locked.secrets))
    found = states(body)
    assert found["mqtt anonymous"] == OK
    assert found["mqtt password strength"] == OK
    assert found["mqtt tls"] == OK  # loopback
    assert found["secret file mode"] == OK
    assert found["secrets in environment"] == OK
    assert found["influxdb anonymous"] == OK
    assert found["influxdb write credential"] == OK and found["influxdb read credential"] == OK
    assert found["influxdb password strength"] == OK and found["influxdb read password strength"] == OK
    assert code == 0 and body["ok"] is True, [c for c in body["checks"] if c["state"] != OK]


def test_weak_and_direct_passwords(locked: SecuredGarden, tmp_path: Path) -> None:
    env = {"GARDEN_MQTT_URL": f"mqtt://127.0.0.1:{locked.port}", "GARDEN_MQTT_USERNAME": "hub",
           "GARDEN_MQTT_PASSWORD": "changeme"}  # fmt: skip
    code, body = doctor(env, tmp_path)
    assert code == 1
    assert check(body, "mqtt password strength")["state"] == FAIL
    assert "known default" in check(body, "mqtt password strength")["detail"]
    direct = check(body, "secrets in environment")
    assert direct["state"] == WARN and "GARDEN_MQTT_PASSWORD" in direct["detail"] and "_FILE" in direct["fix"]
    assert "changeme" not in json.dumps(body), "the doctor never shows a secret"


def test_secret_files_others_may_read(locked: SecuredGarden, tmp_path: Path) -> None:
    loose = tmp_path / "hub.password"
    shutil.copy(locked.secrets / "mqtt_hub_password", loose)
    loose.chmod(0o644)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o755)
    secrets_dir.chmod(0o755)
    (secrets_dir / "token").write_text("x" * 32)
    (secrets_dir / "token").chmod(0o640)
    env = {"GARDEN_MQTT_URL": f"mqtt://127.0.0.1:{locked.port}", "GARDEN_MQTT_USERNAME": "hub",
           "GARDEN_MQTT_PASSWORD_FILE": str(loose)}  # fmt: skip
    code, body = doctor(env, tmp_path, "--secrets-dir", str(secrets_dir))
    assert code == 1
    modes = [c for c in body["checks"] if c["name"] == "secret file mode"]
    assert {c["detail"].split(" is ")[0] for c in modes} == {str(loose), str(secrets_dir / "token")}
    assert all(c["state"] == FAIL and c["fix"].startswith("chmod 0600 ") for c in modes)
    assert any("its group may read it" in c["detail"] for c in modes)
    assert check(body, "secrets directory")["fix"] == f"chmod 0700 {secrets_dir}"
    # The broker accepted the (strong) password: only the files fail.
    assert check(body, "mqtt anonymous")["state"] == OK


def test_secrets_in_the_config_file(locked: SecuredGarden, tmp_path: Path) -> None:
    config = tmp_path / "garden.toml"
    password = locked.password("hub")
    config.write_text(
        f'[mqtt]\nurl = "mqtt://hub:{password}@127.0.0.1:{locked.port}"\n\n[notify.ntfy]\nserver = "https://ntfy.sh"\n'
        'token = "tk_0123456789abcdef"\n'
    )
    code, body = doctor({"GARDEN_CONFIG": str(config)}, tmp_path)
    assert code == 1
    found = check(body, "config secrets")
    assert found["state"] == FAIL and "mqtt.url (a password in the URL)" in found["detail"]
    assert "notify.ntfy.token" in found["detail"] and "GARDEN_*_FILE" in found["fix"]
    assert password not in json.dumps(body)


def test_a_credential_with_too_much_scope(locked: SecuredGarden, scoped_garden: Garden, tmp_path: Path) -> None:
    """The hub given InfluxDB's admin: check_scopes says so, and the doctor fails with it."""
    secret = tmp_path / "admin.password"
    secret.write_text(ADMIN_PASSWORD)
    secret.chmod(0o600)
    env = {"GARDEN_MQTT_URL": f"mqtt://127.0.0.1:{locked.port}", "GARDEN_INFLUX_URL": scoped_garden.locked.url,
           "GARDEN_INFLUX_DATABASE": scoped_garden.database, "GARDEN_INFLUX_USERNAME": ADMIN_USER,
           "GARDEN_INFLUX_PASSWORD_FILE": str(secret)}  # fmt: skip
    code, body = doctor(env, tmp_path)
    assert code == 1
    write = [c for c in body["checks"] if c["name"] == "influxdb write credential"]
    assert any(c["state"] == FAIL and "admin" in c["detail"] for c in write), write


@pytest.mark.parametrize(
    ("encrypted", "host", "state"),
    [
        (True, "hub.example.org", OK),
        (False, "127.0.0.1", OK),
        (False, "localhost", OK),
        (False, "::1", OK),
        (False, "mosquitto", WARN),  # a compose service on compose's own network
        (False, "hub.local", FAIL),  # across the garden's Wi-Fi
        (False, "192.168.1.20", FAIL),
    ],
)
def test_clear_text_is_judged_by_where_it_goes(encrypted: bool, host: str, state: str) -> None:
    assert judge_transport("mqtt tls", encrypted, host, "fix").state == state


@pytest.mark.parametrize(
    ("value", "state"),
    [("admin", FAIL), ("Password", FAIL), ("hub", FAIL), ("short-but-ok", FAIL), ("x" * 16, OK), (None, None)],
)
def test_weak_secrets(value: str | None, state: str | None) -> None:
    found = judge_secret("mqtt password", value, "hub")
    assert (found.state if found else None) == state


def test_over_tls_from_another_machine(locked: SecuredGarden, tmp_path: Path) -> None:
    """The generated bridge env: mqtts:// with the garden's CA passes the TLS check and the anonymous one."""
    env = read_env(locked.secrets / "bridge-shed.env")
    _, body = doctor(env, tmp_path)
    assert check(body, "mqtt tls")["state"] == OK and check(body, "mqtt anonymous")["state"] == OK
