"""Issue 6: a secret never shows, in a log, in ``--json`` output or in a traceback.

One full run per module, locked down as a garden would be: the Mosquitto of
``garden secure init`` (tests/security/mqtt_fixtures.py) and the auth-enabled influxd
1.6 (tests/security/conftest.py), whose write-only and read-only users are made with
the generated passwords by ``garden hub init`` and ``garden influx users``. Simulated
nodes on ptys feed ``garden bridge run`` (bridge ``shed``, over TLS, its password by
``GARDEN_MQTT_PASSWORD_FILE``), which feeds ``garden hub run -vv`` (its three secrets by
``*_FILE``) until readings are in InfluxDB. Beside them run a bridge with a wrong MQTT
password and a hub with wrong InfluxDB passwords, which fail.

Then the CLI, as a volunteer (cli.env) and as the operator (hub.env): each command that
shows state, settings or checks, with ``--json``; and the failures most likely to echo a
secret: wrong passwords, URLs with ``user:password@`` in them, a config file holding a
password, and a traceback (a password file that is not UTF-8).

Every byte those printed or logged, and Mosquitto's log, is searched for every secret of
the run: each generated password and token, the InfluxDB admin's, the wrong and planted
ones; raw, URL-encoded, base64, and as the base64 of ``user:password`` (basic auth).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from firmware_bridge.mqtt_link import BrokerAddress, read_retained
from firmware_bridge.simulator.node import SimNode
from firmware_bridge.simulator.pty_runner import Simulation

from .conftest import ADMIN_PASSWORD, ADMIN_USER, Garden, Locked
from .mqtt_fixtures import GARDEN, Client, SecuredGarden, garden_cli, read_env, start_secured_garden, wait_until

pytestmark = pytest.mark.integration

DATABASE = "noleaks"
WRITER, READER = f"{DATABASE}_ingest", f"{DATABASE}_reader"
# Planted where they do not belong. '/', '@' and ':' make the URL-encoded form differ.
URL_SECRET = "url/Secret@9:Qx7vT2mLk4Rw8Zp"
CONFIG_SECRET = "config-Secret-5Hn3Jq8Wc1Vb6Ty"
WRONG_MQTT = "wrong-mqtt-Secret-Kd4Fg7Lm2Np9Qr"
WRONG_INFLUX = "wrong-influx-Secret-Xs3Ce6Vr9Bt2Y"
# Commands that must succeed: the run is real, or the search proves nothing.
ANSWERED = ("hub init", "influx users", "status", "readings", "bridge status", "hub status", "node list",
            "doctor", "doctor (hub)", "doctor --security")  # fmt: skip


@dataclass
class Shown:
    """Every CLI run, and all it printed, by name."""

    outputs: dict[str, bytes] = field(default_factory=dict)
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def cli(self, name: str, *args: str, env: dict[str, str], cwd: Path | None = None) -> None:
        # Wide, so that rich never folds a line in the middle of a value.
        done = garden_cli(*args, env={"COLUMNS": "1000", **env}, cwd=cwd)
        self.results[name] = done
        self.outputs[f"{name}: stdout"] = done.stdout.encode()
        self.outputs[f"{name}: stderr"] = done.stderr.encode()

    def python(self, name: str, code: str, *, env: dict[str, str]) -> None:
        """A Python snippet run as a CLI would be (its environment only)."""
        base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "GARDEN_CONFIG": "/dev/null"}
        done = subprocess.run([sys.executable, "-c", code], env=base | {"COLUMNS": "1000"} | env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        self.results[name] = done
        self.outputs[f"{name}: stdout"] = done.stdout.encode()
        self.outputs[f"{name}: stderr"] = done.stderr.encode()


# A command of the real CLI app that fails in a way nobody foresaw, with the
# volunteer's MQTT password in a local variable: typer prints the traceback.
EXPLODE = """
import os, sys
from firmware_bridge.settings import read_secret
from garden.cli.app import app

@app.command("explode")
def explode() -> None:
    password = read_secret(os.environ, "GARDEN_MQTT_PASSWORD")
    raise RuntimeError(f"an unexpected failure ({len(password or '')} characters)")

sys.argv = ["garden", "explode"]
app()
"""


class Service:
    """``garden <args> -vv`` as its own process, with only the environment its env file gives it."""

    def __init__(self, workdir: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.log = workdir / f"{name}.log"
        base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "GARDEN_CONFIG": "/dev/null"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "garden", *args, "-vv"], env=base | env,
                                         stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Run:
    shown: Shown
    logs: dict[str, str]
    secrets: dict[str, str]
    stored: int


def secret_file(path: Path, text: str | bytes) -> str:
    path.write_bytes(text if isinstance(text, bytes) else text.encode() + b"\n")
    path.chmod(0o600)
    return str(path)


def stored_readings(influx: Garden) -> int:
    rows = influx.admin_query('SELECT count("vwc_pct") FROM "soil_moisture"')
    return max((int(v) for row in rows for v in row[1:] if isinstance(v, int)), default=0)


@pytest.fixture(scope="module")
def run(locked_influxd: Locked, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("no-leaks")
    g = start_secured_garden(work, "--influx", locked_influxd.url)
    generated = {name: (g.secrets / f"influx_{name}_password").read_text().strip() for name in ("hub", "reader")}
    influx = Garden(locked_influxd, DATABASE, (WRITER, generated["hub"]), (READER, generated["reader"]))
    sim = Simulation([SimNode("bed-1", seed=5, interval_s=1), SimNode("bed-2", seed=5, interval_s=1)],
                     work / "ports", speed=4.0)  # fmt: skip
    feeder = threading.Thread(target=sim.run, daemon=True)
    services: list[Service] = []
    shown = Shown()
    try:
        files = work / "planted"
        files.mkdir(mode=0o700)
        wrong_mqtt = secret_file(files / "wrong_mqtt", WRONG_MQTT)
        wrong_influx = secret_file(files / "wrong_influx", WRONG_INFLUX)
        # The generated env files, with this module's database and InfluxDB user names.
        reader = {"GARDEN_INFLUX_DATABASE": DATABASE, "GARDEN_INFLUX_READ_USERNAME": READER}
        hub_env = read_env(g.secrets / "hub.env") | reader | {"GARDEN_INFLUX_USERNAME": WRITER}
        volunteer = read_env(g.secrets / "cli.env") | reader
        admin = secret_file(files / "admin", ADMIN_PASSWORD)
        operator = hub_env | {"GARDEN_INFLUX_ADMIN_USERNAME": ADMIN_USER, "GARDEN_INFLUX_ADMIN_PASSWORD_FILE": admin}

        # The operator makes the database and the two users, with the generated passwords.
        shown.cli("hub init", "hub", "init", "--json", env=operator)
        shown.cli("influx users", "influx", "users", "--json", env=operator)
        assert shown.results["influx users"].returncode == 0, shown.results["influx users"].stderr

        hub = Service(work, "hub", ["hub", "run"],
                      hub_env | {"GARDEN_DATA_DIR": str(work / "hub-data"), "GARDEN_HUB_ID": "hub-1"})  # fmt: skip
        bad_hub = Service(work, "hub-wrong-influx", ["hub", "run", "--no-watch", "--no-commons"],
                          hub_env | {"GARDEN_DATA_DIR": str(work / "bad-hub-data"), "GARDEN_HUB_ID": "hub-2",
                                     "GARDEN_INFLUX_PASSWORD_FILE": wrong_influx,
                                     "GARDEN_INFLUX_READ_PASSWORD_FILE": wrong_influx})  # fmt: skip
        services += [hub, bad_hub]
        as_volunteer = BrokerAddress("127.0.0.1", g.port, False, "volunteer", g.password("volunteer"))

        def online() -> bool:
            found = read_retained(as_volunteer, (f"garden/{GARDEN}/hub/+/status",), wait_s=0.3)
            return len(found) == 2 and {json.loads(p).get("state") for p in found.values()} == {"online"}

        wait_until(online, 30, "both hubs to come online (subscribed)")

        sim.open_ports()
        ports = [arg for link in sim.links() for arg in ("--port", str(link))]
        # The generated bridge env file as it is: mqtts:// to the TLS listener, with the garden's CA.
        bridge = Service(work, "bridge", ["bridge", "run", "--spool", str(work / "spool.sqlite3"), *ports],
                         read_env(g.secrets / "bridge-shed.env"))  # fmt: skip
        greenhouse = read_env(g.secrets / "bridge-greenhouse.env") | {"GARDEN_MQTT_PASSWORD_FILE": wrong_mqtt}
        bad_bridge = Service(work, "bridge-wrong-mqtt",
                             ["bridge", "run", "--spool", str(work / "bad.sqlite3"), "--port", str(work / "none")],
                             greenhouse)  # fmt: skip
        services += [bridge, bad_bridge]
        feeder.start()
        wait_until(lambda: stored_readings(influx) >= 20, 40, "readings in InfluxDB")
        wait_until(lambda: "refused our credentials" in bad_hub.text(), 20, "the wrong InfluxDB password refused")
        wait_until(lambda: "Not authorized" in bad_bridge.text(), 20, "the wrong MQTT password refused")
        run_cli(shown, g, volunteer, hub_env, work, files)
        stored = stored_readings(influx)
    finally:
        sim.stop_event.set()
        if feeder.is_alive():
            feeder.join(5)
        for service in services:
            service.stop()
        g.stop()
    shown.outputs["secure init --json"] = json.dumps(g.report).encode()
    logs = {s.log.name: s.text() for s in services} | {"mosquitto.log": g.log}
    secrets = {p.name: p.read_text().strip() for p in g.secrets.iterdir() if p.name.endswith(("_password", "_token"))}
    for key in ("ca.key", "server.key"):  # a line of each private key's body
        secrets[f"tls/{key}"] = (g.secrets / "tls" / key).read_text().splitlines()[1]
    secrets |= {"influxdb admin": ADMIN_PASSWORD, "planted in a URL": URL_SECRET, "planted in garden.toml":
                CONFIG_SECRET, "wrong mqtt": WRONG_MQTT, "wrong influx": WRONG_INFLUX}  # fmt: skip
    yield Run(shown, logs, secrets, stored)


def run_cli(shown: Shown, g: SecuredGarden, volunteer: dict[str, str], hub_env: dict[str, str], work: Path,
            files: Path) -> None:  # fmt: skip
    """What a volunteer and the operator run, and the ways they get it wrong."""
    cli = shown.cli
    cli("status", "status", "--json", env=volunteer)
    cli("readings", "readings", "bed-1", "--since", "1h", "--json", env=volunteer)
    cli("bridge status", "bridge", "status", "--json", "--wait", "0.5", env=volunteer)
    cli("hub status", "hub", "status", "--json", "--wait", "0.5", env=volunteer)
    cli("node list", "node", "list", "--json", env=volunteer)
    cli("doctor", "doctor", "--json", env=volunteer)
    cli("doctor (hub)", "doctor", "--json", env=hub_env)
    cli("doctor --security", "doctor", "--security", "--json", "--secrets-dir", str(g.secrets), env=hub_env, cwd=work)

    wrong_mqtt = volunteer | {"GARDEN_MQTT_PASSWORD_FILE": str(files / "wrong_mqtt")}
    wrong_influx = volunteer | {"GARDEN_INFLUX_READ_PASSWORD_FILE": str(files / "wrong_influx")}
    cli("wrong mqtt password", "bridge", "status", "--json", "--wait", "0.3", env=wrong_mqtt)
    cli("wrong influx password", "readings", "bed-1", "--json", env=wrong_influx)
    cli("doctor, wrong passwords", "doctor", "--json", env=wrong_mqtt | wrong_influx)

    encoded = quote(URL_SECRET, safe="")
    for name, url in (
        ("mqtt url, unreachable", f"mqtt://volunteer:{encoded}@127.0.0.1:1/"),
        ("mqtt url, bad port", f"mqtt://volunteer:{encoded}@127.0.0.1:99999/"),
        ("mqtt url, no scheme", f"volunteer:{encoded}@127.0.0.1:{g.port}"),
    ):
        cli(name, "bridge", "status", "--json", "--wait", "0.3", env=volunteer | {"GARDEN_MQTT_URL": url})
    influx_url = {"GARDEN_INFLUX_URL": f"http://{READER}:{encoded}@127.0.0.1:1/"}
    cli("influx url, readings", "readings", "bed-1", "--json", env=volunteer | influx_url)
    cli("influx url, doctor", "doctor", "--json", env=volunteer | influx_url)
    grafana = {"GARDEN_GRAFANA_URL": "http://127.0.0.1:1/", "GARDEN_GRAFANA_USER": "admin",
               "GARDEN_GRAFANA_PASSWORD": (g.secrets / "grafana_admin_password").read_text().strip()}  # fmt: skip
    cli("grafana unreachable, push", "dashboards", "push", "--json", env=grafana)
    grafana_url = {"GARDEN_GRAFANA_URL": f"http://admin:{encoded}@127.0.0.1:1/"}
    cli("grafana url, push", "dashboards", "push", "--json", env=grafana_url)
    cli("grafana url, doctor", "doctor", "--json", env=volunteer | grafana_url)

    for table in ("mqtt", "influx"):
        config = work / f"{table}-password.toml"
        config.write_text(f'[{table}]\npassword = "{CONFIG_SECRET}"\n')
        for who in ("bridge", "hub"):
            cli(f"{table}.password in garden.toml, {who}", who, "status", "--json", "--wait", "0.3",
                env=volunteer | {"GARDEN_CONFIG": str(config)})  # fmt: skip

    # Input that once crashed a command: the reader's password file with bytes after it that
    # are not UTF-8, and a hub status on the broker that is not JSON. Then a real crash.
    broken = secret_file(files / "broken", (g.secrets / "influx_reader_password").read_bytes().strip() + b"\xff\xfe")
    cli("secret file not UTF-8", "status", "--json", env=volunteer | {"GARDEN_INFLUX_READ_PASSWORD_FILE": broken})
    shown.python("traceback, forced", EXPLODE, env=volunteer)
    hub = Client(g.port, "hub", g.password("hub"))
    try:
        assert not hub.connect().is_failure
        assert hub.publish(f"garden/{GARDEN}/hub/broken/status", b"{not json", retain=True) < 0x80
    finally:
        hub.close()
    cli("hub status not JSON", "hub", "status", "--json", "--wait", "0.3", env=volunteer)


def forms(secrets: dict[str, str], users: list[str]) -> dict[bytes, str]:
    """Each secret as it could be shown: raw, URL-encoded, base64, and in basic auth as any user."""

    def b64(text: str) -> bytes:
        return base64.b64encode(text.encode())

    found: dict[bytes, str] = {}
    for name, value in secrets.items():
        found.setdefault(value.encode(), name)
        found.setdefault(quote(value, safe="").encode(), f"{name}, URL-encoded")
        found.setdefault(quote(value).encode(), f"{name}, URL-encoded")
        found.setdefault(b64(value), f"{name}, base64")
        for user in users:
            found.setdefault(b64(f"{user}:{value}"), f"{name}, basic auth as {user}")
    return found


# ------------------------------------------------------------------------ the tests


def test_the_run_stored_readings_and_the_commands_answered(run: Run) -> None:
    """Or the search below proves nothing."""
    r = run.shown.results
    failed = {name: r[name].stderr for name in ANSWERED if r[name].returncode != 0}
    assert not failed, failed
    assert run.stored >= 20
    readings = json.loads(r["readings"].stdout)["readings"]
    assert readings and {x["node"] for x in readings} == {"bed-1"}
    assert json.loads(r["bridge status"].stdout)["bridges"]["shed"]["counters"]["published"] > 0
    assert set(json.loads(r["hub status"].stdout)["hubs"]) == {"hub-1", "hub-2"}
    assert {"bed-1", "bed-2"} <= {n["node"] for n in json.loads(r["node list"].stdout)["nodes"]}
    assert json.loads(r["doctor --security"].stdout)["ok"], "the locked-down garden passes every check"
    assert " DEBUG " in run.logs["hub.log"], "the hub logs at debug (-vv)"


def test_each_failure_says_what_is_wrong(run: Run) -> None:
    r = {name: (done.returncode, " ".join(done.stderr.split())) for name, done in run.shown.results.items()}
    assert r["wrong mqtt password"][0] == 1 and "cannot reach the MQTT broker" in r["wrong mqtt password"][1]
    assert r["wrong influx password"][0] == 1
    assert f"refused our credentials: the read credential (user {READER})" in r["wrong influx password"][1]
    assert r["doctor, wrong passwords"][0] == 1
    assert not json.loads(run.shown.results["doctor, wrong passwords"].stdout)["ok"]
    assert r["mqtt url, unreachable"][0] == 1
    assert r["mqtt url, bad port"] == (2, "error: config GARDEN_MQTT_URL: bad port: it must be a number from 1 to "
                                          "65535, after the host")  # fmt: skip
    assert (
        r["mqtt url, no scheme"][0] == 2 and "GARDEN_MQTT_URL: must start with mqtt://" in r["mqtt url, no scheme"][1]
    )
    for name in ("influx url, readings", "influx url, doctor"):
        assert r[name][0] == 2 and "GARDEN_INFLUX_URL: a user or password does not belong in the URL" in r[name][1]
    assert r["grafana unreachable, push"][0] == 1 and "cannot reach Grafana" in r["grafana unreachable, push"][1]
    assert r["grafana url, push"][0] == 2 and "holds a user or password" in r["grafana url, push"][1]
    grafana = [
        c for c in json.loads(run.shown.results["grafana url, doctor"].stdout)["checks"] if c["name"] == "grafana"
    ]
    assert grafana[0]["state"] == "fail" and "holds a user or password" in grafana[0]["detail"], grafana
    for key, who in (("mqtt.password", "bridge"), ("mqtt.password", "hub"), ("influx.password", "hub")):
        code, said = r[f"{key} in garden.toml, {who}"]
        assert code == 2 and f"config {key}: secrets do not belong in the config file" in said, (key, who, said)
    assert r["influx.password in garden.toml, bridge"][0] == 0, "the bridge has no business with [influx]"
    assert "refused our credentials" in run.logs["hub-wrong-influx.log"]
    assert "Not authorized" in run.logs["bridge-wrong-mqtt.log"]
    code, said = r["secret file not UTF-8"]
    assert code == 2 and "GARDEN_INFLUX_READ_PASSWORD_FILE" in said and "Traceback" not in said, said
    code, said = r["hub status not JSON"]
    assert code == 0 and "skipped" in said and "Traceback" not in said, said
    code, said = r["traceback, forced"]
    assert code != 0 and "RuntimeError" in said and "an unexpected failure" in said, said
    assert "locals" not in said, "the traceback shows local variables (pretty_exceptions_show_locals)"


def test_no_secret_is_shown_anywhere(run: Run) -> None:
    assert len(run.secrets) >= 15, sorted(run.secrets)
    wanted = forms(run.secrets, ["shed", "greenhouse", "hub", "volunteer", WRITER, READER, ADMIN_USER])
    everything = {f"log {name}": text.encode() for name, text in run.logs.items()} | run.shown.outputs
    assert sum(map(len, everything.values())) > 50_000, "too little was shown to prove anything"
    leaks = []
    for where, data in everything.items():
        for form, name in wanted.items():
            at = data.find(form)
            if at >= 0:
                context = data[max(0, at - 80) : at + len(form) + 40].replace(form, f"<{name}>".encode())
                leaks.append(f"{name} in {where}: ...{context.decode(errors='replace')}...")
    assert not leaks, "\n".join(leaks)
