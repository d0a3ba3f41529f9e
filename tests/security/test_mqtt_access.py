"""What the broker lets each credential do, with the files `garden secure init` makes.

One real Mosquitto 2.0.11 per module (tests/security/mqtt_fixtures.py): Debian's
main config, our native drop-in, and the generated password file, ACL and TLS
certificate. Garden ``sec``; bridge ``shed`` owns bed-1 and bed-2, bridge
``greenhouse`` owns gh-1. Every assertion is on what the broker answered (CONNACK,
PUBACK reason codes) or on what a subscriber actually received.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware_bridge.simulator.node import SimNode
from firmware_bridge.simulator.pty_runner import Simulation

from .mqtt_fixtures import (
    GARDEN,
    NOT_AUTHORIZED,
    Client,
    SecuredGarden,
    garden_cli,
    read_env,
    secure_init,
    start_secured_garden,
    wait_until,
)

Connect = Callable[..., Client]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredGarden]:
    g = start_secured_garden(tmp_path_factory.mktemp("secured"))
    yield g
    g.stop()


@pytest.fixture
def clients(broker: SecuredGarden) -> Iterator[Connect]:
    made: list[Client] = []

    def connect(user: str | None, *, client_id: str = "", password: str | None = None) -> Client:
        client = Client(broker.port, user, password or (broker.password(user) if user else None), client_id)
        made.append(client)
        reason = client.connect()
        assert not reason.is_failure, f"{user} was refused: {reason}"
        return client

    yield connect
    for client in made:
        client.close()


@pytest.mark.parametrize(
    ("user", "password"), [(None, None), ("shed", "wrong-password-123456"), ("nobody", "x"), ("shed", None)]
)
def test_anonymous_and_wrong_passwords_are_refused(
    broker: SecuredGarden, user: str | None, password: str | None
) -> None:
    client = Client(broker.port, user, password)
    try:
        reason = client.connect()
        assert reason.is_failure and reason.value in (0x86, 0x87), (
            f"{user}: {reason}"
        )  # bad credentials / not authorized
    finally:
        client.close()


def test_the_hub_receives_what_a_bridge_publishes_for_its_own_nodes(clients: Connect) -> None:
    hub = clients("hub")
    hub.subscribe(f"garden/{GARDEN}/node/+/telemetry")
    hub.subscribe(f"garden/{GARDEN}/node/+/status")
    hub.subscribe(f"garden/{GARDEN}/bridge/+/status")
    shed = clients("shed")
    for topic in ("node/bed-1/telemetry", "node/bed-2/status", "bridge/shed/status"):
        assert shed.publish(f"garden/{GARDEN}/{topic}", b'{"own": true}') < 0x80, topic
    got = sorted(t for t, _, _ in hub.received(3.0, stop_after=3))
    assert got == [f"garden/{GARDEN}/bridge/shed/status", f"garden/{GARDEN}/node/bed-1/telemetry",
                   f"garden/{GARDEN}/node/bed-2/status"]  # fmt: skip
    # The other bridge writes its own node and status too.
    greenhouse = clients("greenhouse")
    assert greenhouse.publish(f"garden/{GARDEN}/node/gh-1/telemetry") < 0x80
    assert hub.received(2.0, stop_after=1)[0][0] == f"garden/{GARDEN}/node/gh-1/telemetry"


# What bridge shed may not publish: the other bridge's nodes and status, and a node in no list.
FORGED = [
    "node/gh-1/telemetry",
    "node/gh-1/status",
    "bridge/greenhouse/status",
    "node/stray-9/telemetry",
    "node/stray-9/status",
    "node/bed-1/config",
]


@pytest.mark.parametrize("topic", FORGED)
def test_a_bridge_cannot_publish_as_another_bridge(clients: Connect, topic: str) -> None:
    """And what the broker refused never reaches a subscriber, retained or not."""
    hub = clients("hub")
    volunteer = clients("volunteer")
    for watcher in (hub, volunteer):
        watcher.subscribe(f"garden/{GARDEN}/#")
    full = f"garden/{GARDEN}/{topic}"
    assert clients("shed").publish(full, b'{"forged": true}', retain=True) == NOT_AUTHORIZED
    assert clients("greenhouse").publish(f"garden/{GARDEN}/bridge/greenhouse/status", b"{}") < 0x80  # a marker
    for watcher in (hub, volunteer):
        got = watcher.received(2.0, stop_after=1) + watcher.received(0.3)
        assert [t for t, p, _ in got if b"forged" in p] == [], f"{topic} reached a subscriber"
    late = clients("hub")  # nothing was retained either
    late.subscribe(full)
    assert late.received(0.4) == []


def test_home_assistant_discovery_is_per_node_too(clients: Connect) -> None:
    shed = clients("shed")
    assert shed.publish(f"homeassistant/device/{GARDEN}_bed-1/config") < 0x80
    assert shed.publish(f"homeassistant/device/{GARDEN}_gh-1/config") == NOT_AUTHORIZED
    assert shed.publish("homeassistant/device/other_bed-1/config") == NOT_AUTHORIZED


def test_a_bridge_reads_only_its_own_nodes_configs(clients: Connect) -> None:
    volunteer = clients("volunteer")
    for node in ("bed-2", "gh-1"):
        assert (
            volunteer.publish(f"garden/{GARDEN}/node/{node}/config", f'{{"bed": "{node}"}}'.encode(), retain=True)
            < 0x80
        )
    shed = clients("shed")
    shed.subscribe(f"garden/{GARDEN}/node/+/config")
    got = [t for t, _, _ in shed.received(1.0)]
    assert f"garden/{GARDEN}/node/bed-2/config" in got
    assert f"garden/{GARDEN}/node/gh-1/config" not in got


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("node/bed-1/telemetry", False),
        ("node/bed-1/status", False),
        ("bridge/shed/status", False),
        ("hub/hub/status", False),
        ("commons/claim/bed-1", False),
        ("node/bed-1/config", True),
        ("cmd/commons", True),
    ],
)
def test_the_cli_user_cannot_publish_telemetry(clients: Connect, topic: str, allowed: bool) -> None:
    code = clients("volunteer").publish(f"garden/{GARDEN}/{topic}")
    assert (code < 0x80) is allowed, f"volunteer on {topic}: {code:#x}"


@pytest.mark.parametrize("client_id", ["shed+1", "shed#", "garden-bridge-sec-+"])
def test_client_ids_with_wildcards(clients: Connect, client_id: str) -> None:
    """What Mosquitto 2.0.11 does: it accepts the connection (CONNACK success), then denies every
    `pattern` rule to that client (its own bridge status, %u), while rules given to its user by
    name (its nodes) still apply. So a crafted id cannot widen a %u/%c pattern."""
    client = clients("shed", client_id=client_id)
    assert client.connack is not None and client.connack.value == 0
    assert client.publish(f"garden/{GARDEN}/bridge/shed/status") == NOT_AUTHORIZED
    assert client.publish(f"garden/{GARDEN}/node/bed-1/telemetry") < 0x80
    assert client.publish(f"garden/{GARDEN}/node/gh-1/telemetry") == NOT_AUTHORIZED


def test_tls_with_the_generated_ca(broker: SecuredGarden) -> None:
    ca = broker.secrets / "tls" / "ca.pem"
    trusted = Client(broker.tls_port, "shed", broker.password("shed"), ca=ca, tls=True)
    try:
        assert not trusted.connect("localhost").is_failure
        assert trusted.publish(f"garden/{GARDEN}/node/bed-1/telemetry") < 0x80
    finally:
        trusted.close()
    # A client that does not trust the garden's CA (the system's CAs) is refused by TLS itself.
    stranger = Client(broker.tls_port, "shed", broker.password("shed"), tls=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        stranger.connect("localhost")
    stranger.close()


def test_the_generated_bridge_env_file_reaches_the_tls_listener(broker: SecuredGarden) -> None:
    """bridge-shed.env as made: mqtts:// to the TLS port, SSL_CERT_FILE, the password by *_FILE."""
    env = read_env(broker.secrets / "bridge-shed.env")
    assert env["GARDEN_MQTT_URL"] == f"mqtts://localhost:{broker.tls_port}"
    assert env["SSL_CERT_FILE"] == str(broker.secrets / "tls" / "ca.pem")
    done = garden_cli("bridge", "status", "--json", "--wait", "0.3", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    without_ca = {k: v for k, v in env.items() if k != "SSL_CERT_FILE"}
    refused = garden_cli("bridge", "status", "--json", "--wait", "0.3", env=without_ca)
    assert refused.returncode == 1 and "cannot reach the MQTT broker" in refused.stderr


def test_an_acl_change_applies_on_sighup(tmp_path: Path) -> None:
    """The documented way to add a node: list it, run `garden secure init` again (it keeps every
    password), install, reload. A client that stays connected gets the new rights."""
    g = start_secured_garden(tmp_path)
    made: list[Client] = []
    try:
        before = {p.name: p.read_text() for p in g.secrets.glob("*_password")}
        shed = Client(g.port, "shed", g.password("shed"))
        hub = Client(g.port, "hub", g.password("hub"))
        made += [shed, hub]
        assert not shed.connect().is_failure and not hub.connect().is_failure
        hub.subscribe(f"garden/{GARDEN}/node/+/telemetry")
        assert shed.publish(f"garden/{GARDEN}/node/bed-9/telemetry", b'{"seq": 1}') == NOT_AUTHORIZED
        report = secure_init(g.secrets, bridges={"shed": ("bed-1", "bed-2", "bed-9"), "greenhouse": ("gh-1",)})
        assert {f["file"]: f["state"] for f in report["files"]}["mqtt_bridge_shed_password"] == "kept"
        assert {p.name: p.read_text() for p in g.secrets.glob("*_password")} == before
        g.reload()
        assert shed.publish(f"garden/{GARDEN}/node/bed-9/telemetry", b'{"seq": 2}') < 0x80
        got = hub.received(2.0, stop_after=1)
        assert [(t, p) for t, p, _ in got] == [(f"garden/{GARDEN}/node/bed-9/telemetry", b'{"seq": 2}')]
        # The password file is reread too, and connected clients keep their session.
        assert shed.publish(f"garden/{GARDEN}/node/bed-1/telemetry") < 0x80
    finally:
        for client in made:
            client.close()
        g.stop()


def test_a_bridge_reports_the_readings_the_broker_refused(broker: SecuredGarden, tmp_path: Path) -> None:
    """`garden bridge run` as shed, with its node bed-1 and a node in no list (stray-1).

    Today's behaviour, through the real bridge: bed-1's readings reach the hub; each of
    stray-1's gets PUBACK 0x87, which the bridge logs as an error, counts
    (counters.refused in its retained status) and drops. `garden bridge status` shows it."""
    hub = Client(broker.port, "hub", broker.password("hub"))
    volunteer_env = read_env(broker.secrets / "cli.env")
    assert not hub.connect().is_failure
    hub.subscribe(f"garden/{GARDEN}/node/+/telemetry")
    sim = Simulation([SimNode("bed-1", seed=3, interval_s=1), SimNode("stray-1", seed=3, interval_s=1)],
                     tmp_path / "ports", speed=20.0, count=4)  # fmt: skip
    sim.open_ports()
    runner = threading.Thread(target=sim.run, daemon=True)
    env = {
        **os.environ,
        "GARDEN_CONFIG": "/dev/null",
        "GARDEN_BRIDGE_ID": "shed",
        "GARDEN_MQTT_USERNAME": "shed",
        "GARDEN_MQTT_PASSWORD_FILE": str(broker.secrets / "mqtt_bridge_shed_password"),
    }
    cmd = [sys.executable, "-m", "garden", "bridge", "run", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
           "--garden", GARDEN, "--spool", str(tmp_path / "spool.sqlite3")]  # fmt: skip
    for link in sim.links():
        cmd += ["--port", str(link)]
    log = tmp_path / "bridge.log"
    with log.open("wb") as out:
        bridge = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        runner.start()
        status: dict[str, object] = {}

        def refused_all() -> bool:
            done = garden_cli("bridge", "status", "--json", "--wait", "0.3", env=volunteer_env)
            status.update(json.loads(done.stdout)["bridges"].get("shed", {}))
            counters = status.get("counters", {})
            return isinstance(counters, dict) and counters.get("refused", 0) >= 4 and counters.get("published", 0) >= 4

        wait_until(refused_all, 30, "the bridge to publish bed-1's readings and be refused stray-1's")
        nodes = {json.loads(p)["node"] for _, p, _ in hub.received(1.0)}
        assert nodes == {"bed-1"}, nodes
        shown = garden_cli("bridge", "status", "--wait", "0.3", env=volunteer_env)
        assert "refused" in shown.stdout and "The broker refused readings from shed" in shown.stdout
    finally:
        sim.stop_event.set()
        runner.join(5)
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        hub.close()
    text = log.read_text(errors="replace")
    assert "broker refused a reading" in text and "Not authorized" in text
