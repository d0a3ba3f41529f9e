"""Federation: a garden's broker forwards its data to a regional broker.

The config texts are built by pure functions (:func:`bridge_config`,
:func:`regional_acl`, :func:`regional_listener`); :func:`write_uplink` and
:func:`make_region` write them, and the secrets, as private files.

A garden keeps its own Mosquitto; a Mosquitto *bridge* in it (``connection`` section)
opens one MQTT connection to the regional broker, over TLS, with a user name and
password of its own, and forwards what the region needs (:data:`FORWARDED`) at QoS 1.
Topics already name their garden (``garden/<g>/...``, :mod:`firmware_bridge.topics`),
so every topic line maps ``garden/<g>/`` onto itself: the garden's data lands under
its own prefix and nowhere else. Every topic goes ``out`` only: nothing from the region
(requests, configs, answers) ever comes back into a garden.

While the uplink is down, the garden broker keeps working for everyone on it, and keeps
what the bridge has not sent yet in the bridge's own queue, in memory (and in
``mosquitto.db`` at each autosave), bounded by ``max_queued_messages`` and
``max_queued_bytes`` (:class:`QueueBound`): past either, Mosquitto drops new messages
for the bridge (never the garden's own clients'). The bridge reconnects with jittered
backoff (``restart_timeout base cap``) and sends the queue in order; its session on the
regional broker is kept (``cleansession false``) so a message sent but not yet
acknowledged when the link fell is sent again, never lost.

The regional side (:func:`regional_acl`, :func:`regional_listener`): one user per
garden's bridge, which may write ``garden/<its garden>/#`` and read nothing; the regional
hub's user, which reads what gardens forward and writes its own status.

Exceptions: :class:`firmware_bridge.errors.ConfigError`, whose ``path`` names the
option (``--garden``, ``--regional``, ...), for anything that cannot be;
:class:`garden.secure.SecureError` for a file that cannot be read or written, or a
tool (openssl, mosquitto_passwd) that failed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.topics import NAME_RE, ROOT
from garden.secure import (
    SecureError,
    hashed_password_file,
    make_tls,
    random_secret,
    read_existing,
    write_private,
)

# What a garden forwards, relative to ``garden/<g>/``: readings, the health of its
# nodes, bridges and hub, the journal, alerts and bed needs. Not forwarded: configs
# and bed profiles (the garden's own business), the commons (members' names and
# contact details stay in the garden), requests and answers (cmd/, reply/), the
# watch's counters, Home Assistant discovery.
FORWARDED: tuple[str, ...] = (
    "node/+/telemetry",
    "node/+/status",
    "bridge/+/status",
    "hub/+/status",
    "event/#",
    "alert/#",
    "bed/+/need",
)
PROTOCOLS = ("mqttv311", "mqttv50")
TLS_VERSIONS = ("tlsv1.2", "tlsv1.3")
# A telemetry message as the bridge publishes it, topic and MQTT header included: about
# 310 bytes of JSON for a node with four sensors (docs/mqtt.md), rounded up.
TYPICAL_MESSAGE_BYTES = 400
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_USER_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class QueueBound:
    """The garden broker's limit on each client's queue, the bridge's included.

    Mosquitto applies both to every client of the broker, counting messages beyond the
    ``max_inflight_messages`` in flight; ``max_queued_bytes`` counts payload bytes."""

    messages: int = 200_000
    bytes: int = 100 * 1024 * 1024

    def outage_hours(self, messages_per_minute: float, message_bytes: int = TYPICAL_MESSAGE_BYTES) -> float:
        """How long an uplink outage the queue holds at that rate, before it drops."""
        if messages_per_minute <= 0:
            raise ConfigError("--rate", "must be more than 0 messages a minute")
        by_count = self.messages / messages_per_minute
        by_bytes = self.bytes / (messages_per_minute * message_bytes)
        return min(by_count, by_bytes) / 60


def garden_rate(nodes: int, interval_s: float, status_interval_s: float = 60.0) -> float:
    """Messages a minute a garden forwards: each node's readings and its status, plus the
    statuses of one bridge and one hub (alerts, events and needs are rare beside them)."""
    if nodes < 1:
        raise ConfigError("--nodes", "must be at least 1")
    if interval_s <= 0:
        raise ConfigError("--interval", "must be more than 0 seconds")
    per_status = 60 / status_interval_s
    return nodes * (60 / interval_s + per_status) + 2 * per_status


@dataclass(frozen=True, slots=True)
class Uplink:
    """One garden's bridge to the regional broker."""

    garden: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    cafile: Path
    connection: str = ""  # default: uplink-<garden>; also the client id on the regional broker
    protocol: str = "mqttv311"
    tls_version: str = "tlsv1.2"
    keepalive_s: int = 60
    restart_base_s: int = 5
    restart_cap_s: int = 60
    queue: QueueBound = QueueBound()

    @property
    def name(self) -> str:
        return self.connection or f"uplink-{self.garden}"

    @property
    def notification_topic(self) -> str:
        """Retained ``1`` while the uplink is up, ``0`` (its last will) when it is down."""
        return f"{ROOT}/{self.garden}/federation/{self.name}/state"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` (``--regional``); the port defaults to 8883, MQTT over TLS."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, "8883"
    if not _HOST_RE.fullmatch(host):
        raise ConfigError("--regional", f"{text!r}: expected host:port, e.g. region.example.org:8883")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError("--regional", f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def check_uplink(u: Uplink) -> None:
    """Raise :class:`ConfigError` naming the option of the first problem."""
    if not NAME_RE.fullmatch(u.garden):
        raise ConfigError("--garden", f"{u.garden!r} must be 1-32 letters, digits, '-' or '_'")
    if not _HOST_RE.fullmatch(u.host):
        raise ConfigError("--regional", f"{u.host!r} is not a host name or an IP address")
    if not 0 < u.port < 65536:
        raise ConfigError("--regional", f"port {u.port} must be from 1 to 65535")
    if not _USER_RE.fullmatch(u.username):
        raise ConfigError("--user", f"{u.username!r} must be 1-64 letters, digits, '-', '_' or '.'")
    if not u.password or any(c.isspace() for c in u.password) or "#" in u.password:
        # Mosquitto's config is split on blanks and a '#' may start a comment.
        raise ConfigError("--password-file", "the password must be one word, without blanks or '#'")
    if u.connection and not NAME_RE.fullmatch(u.connection):
        raise ConfigError("--connection", f"{u.connection!r} must be 1-32 letters, digits, '-' or '_'")
    if u.protocol not in PROTOCOLS:
        raise ConfigError("--protocol", f"{u.protocol!r}: expected one of {list(PROTOCOLS)}")
    if u.tls_version not in TLS_VERSIONS:
        raise ConfigError("--tls-version", f"{u.tls_version!r}: expected one of {list(TLS_VERSIONS)}")
    if any(c.isspace() for c in str(u.cafile)) or not str(u.cafile):
        raise ConfigError("--ca", f"{str(u.cafile)!r}: a path without blanks (Mosquitto splits on them)")
    if not 5 <= u.keepalive_s <= 65535:
        raise ConfigError("--keepalive", "must be from 5 to 65535 seconds (Mosquitto's minimum is 5)")
    if not 1 <= u.restart_base_s <= u.restart_cap_s:
        raise ConfigError("--restart", "the base must be at least 1 s and at most the cap")
    if u.queue.messages < 1:
        raise ConfigError("--max-queued-messages", "must be at least 1")
    if u.queue.bytes < 1024:
        raise ConfigError("--max-queued-bytes", "must be at least 1024")


def bridge_config(u: Uplink) -> str:
    """The garden broker's config file for the uplink: the queue bound, then the bridge.

    Holds the password (Mosquitto 2.0 takes a bridge's password only inline), so it is
    written 0600 and never printed."""
    check_uplink(u)
    prefix = f"{ROOT}/{u.garden}/"
    lines = [
        f"# Garden {u.garden}: its uplink to the regional broker {u.host}:{u.port}, by `garden federate config`.",
        "# Holds the bridge's password: keep it 0600, owned by mosquitto. docs/federation.md says how it works.",
        "#",
        "# The bound on every client's queue in this broker, the bridge's included: what it keeps while",
        "# the uplink is down. Past either limit, new messages for the bridge are dropped. This file must",
        "# be read after any other that sets them (Mosquitto keeps the last value): conf.d is read in",
        "# name order, so it is uplink.conf, after garden.conf.",
        f"max_queued_messages {u.queue.messages}",
        f"max_queued_bytes {u.queue.bytes}",
        "",
        f"connection {u.name}",
        f"address {u.host}:{u.port}",
        f"bridge_protocol_version {u.protocol}",
        f"remote_clientid {u.name}",
        f"remote_username {u.username}",
        f"remote_password {u.password}",
        # The regional broker keeps the bridge's session: what was sent but not yet
        # acknowledged when the link fell is sent again, not lost.
        "cleansession false",
        "start_type automatic",
        f"restart_timeout {u.restart_base_s} {u.restart_cap_s}",
        f"keepalive_interval {u.keepalive_s}",
        # A bridge may say it is one: the regional broker then keeps retain flags as sent.
        "try_private true",
        "notifications true",
        f"notification_topic {u.notification_topic}",
        # Only out-topics: nothing to unsubscribe from on the regional broker.
        "bridge_attempt_unsubscribe false",
        f"bridge_cafile {u.cafile}",
        f"bridge_tls_version {u.tls_version}",
        "bridge_insecure false",
    ]
    lines += [f"topic {t} out 1 {prefix} {prefix}" for t in FORWARDED]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- the region


def check_gardens(gardens: Sequence[str], users: Sequence[str]) -> None:
    if not gardens:
        raise ConfigError("--garden", "give at least one garden")
    if len(set(gardens)) != len(gardens):
        raise ConfigError("--garden", "a garden is given twice")
    for g in gardens:
        if not NAME_RE.fullmatch(g):
            raise ConfigError("--garden", f"{g!r} must be 1-32 letters, digits, '-' or '_'")
    for user in users:
        if not _USER_RE.fullmatch(user):
            raise ConfigError("--hub-user", f"{user!r} must be 1-64 letters, digits, '-', '_' or '.'")


def uplink_user(garden: str) -> str:
    """The regional broker's user for a garden's bridge."""
    return f"uplink-{garden}"


def regional_acl(gardens: Sequence[str], hub_user: str = "hub") -> str:
    """The regional broker's ACL: each garden's bridge writes its own tree, the hub reads them."""
    check_gardens(gardens, [hub_user])
    if hub_user in {uplink_user(g) for g in gardens}:
        raise ConfigError("--hub-user", f"{hub_user!r} is a garden's bridge user")
    out = [
        "# The regional broker's ACL, by `garden federate regional`. Anything not allowed is denied.",
        "# Each garden's bridge may write its own garden's tree only, and read nothing: a",
        "# bridge that publishes into another garden's tree is refused (and the message dropped).",
    ]
    for g in gardens:
        out += ["", f"user {uplink_user(g)}", f"topic write {ROOT}/{g}/#"]
    out += [
        "",
        "# The regional hub (garden hub run --all-gardens): what gardens forward, and its own status.",
        f"user {hub_user}",
        *(f"topic read {ROOT}/+/{t}" for t in FORWARDED if not t.startswith("hub/")),
        f"topic readwrite {ROOT}/+/hub/#",
        f"topic read {ROOT}/+/federation/#",
    ]
    return "\n".join(out) + "\n"


def regional_listener(port: int, directory: Path, bind: str = "") -> str:
    """The regional broker's listener, auth and queue settings, with the files in ``directory``."""
    if not 0 < port < 65536:
        raise ConfigError("--port", f"{port} must be from 1 to 65535")
    if bind and not _HOST_RE.fullmatch(bind):
        raise ConfigError("--bind", f"{bind!r} is not an address")
    if any(c.isspace() for c in str(directory)):
        raise ConfigError("--dir", f"{str(directory)!r}: a path without blanks (Mosquitto splits on them)")
    listen = f"listener {port} {bind}".rstrip()
    return (
        "# The regional broker: MQTT over TLS only, passwords, the ACL. By `garden federate regional`.\n"
        "# Persistence (persistence true, a persistence_location) keeps the bridges' and the hub's\n"
        "# sessions across a restart: set it in the main file.\n"
        "per_listener_settings false\n"
        f"{listen}\n"
        "protocol mqtt\n"
        f"certfile {directory / 'tls' / 'server.pem'}\n"
        f"keyfile {directory / 'tls' / 'server.key'}\n"
        "tls_version tlsv1.2\n"
        "allow_anonymous false\n"
        f"password_file {directory / 'mosquitto_passwd'}\n"
        f"acl_file {directory / 'mosquitto_acl'}\n"
        # The regional hub's session holds what arrives while it is down: every garden's.
        "max_queued_messages 1000000\n"
        "max_queued_bytes 268435456\n"
        "max_inflight_messages 20\n"
        "persistent_client_expiration 14d\n"
        "set_tcp_nodelay true\n"
    )


# ------------------------------------------------------------------- the files

UPLINK_FILE = "uplink.conf"


@dataclass(frozen=True, slots=True)
class Written:
    """What a ``garden federate`` command wrote: files (name, what, mode) and next steps."""

    directory: Path
    files: tuple[tuple[str, str, str], ...]
    next_steps: tuple[str, ...]
    facts: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "files": [{"file": f, "what": w, "mode": m} for f, w, m in self.files],
            **dict(self.facts),
            "next_steps": list(self.next_steps),
        }


def _mode(path: Path) -> str:
    return f"{path.stat().st_mode & 0o7777:04o}"


def _private_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)
    except OSError as err:
        raise SecureError(str(directory), f"cannot make the directory: {err.strerror}") from None


def read_password(path: Path) -> str:
    """The one-line password in ``path`` (``--password-file``)."""
    value = read_existing(path)
    if value is None:
        raise ConfigError("--password-file", f"{path}: no such file, or empty")
    return value


def write_uplink(u: Uplink, directory: Path, rate_per_minute: float) -> Written:
    """Write the garden broker's ``uplink.conf`` (0600: it holds the password) into ``directory``."""
    text = bridge_config(u)
    _private_dir(directory)
    path = directory / UPLINK_FILE
    write_private(path, text)
    hours = u.queue.outage_hours(rate_per_minute)
    steps = (
        f"sudo install -m 0600 -o mosquitto -g mosquitto {path} /etc/mosquitto/conf.d/{UPLINK_FILE}",
        f"the regional broker's CA must stay at {u.cafile}, readable by user mosquitto (0644)",
        "sudo systemctl restart mosquitto (a reload does not start a bridge)",
        f"mosquitto_sub -t '{u.notification_topic}' -v: 1 once the uplink is up, 0 while it is down",
    )
    return Written(
        directory,
        ((UPLINK_FILE, f"bridge {u.name} to {u.host}:{u.port}, with its password", _mode(path)),),
        steps,
        (
            ("garden", u.garden),
            ("regional", f"{u.host}:{u.port}"),
            ("connection", u.name),
            ("forwarded", [f"{ROOT}/{u.garden}/{t}" for t in FORWARDED]),
            ("notification_topic", u.notification_topic),
            ("max_queued_messages", u.queue.messages),
            ("max_queued_bytes", u.queue.bytes),
            ("rate_per_minute", round(rate_per_minute, 1)),
            ("outage_hours", round(hours, 1)),
        ),
    )


def make_region(
    directory: Path,
    gardens: Sequence[str],
    *,
    hub_user: str = "hub",
    port: int = 8883,
    bind: str = "",
    tls_hosts: Sequence[str] = (),
    passwd_tool: str | None = None,
    openssl: str | None = None,
) -> Written:
    """The regional broker's files in ``directory`` (0700): a password per garden's bridge and
    one for the hub (kept when they exist), the hashed password file, the ACL, the listener's
    config and, with ``tls_hosts``, a CA and the broker's certificate (kept when they exist)."""
    acl = regional_acl(gardens, hub_user)
    listener = regional_listener(port, directory.absolute(), bind)
    _private_dir(directory)
    files: list[tuple[str, str, str]] = []
    users: dict[str, str] = {}
    for user, what in [(uplink_user(g), f"password of garden {g}'s bridge (give it to {g})") for g in gardens] + [
        (hub_user, "password of the regional hub")
    ]:
        path = directory / f"mqtt_{user}_password"
        password = read_existing(path)
        if password is None:
            password = random_secret()
            write_private(path, password + "\n")
        users[user] = password
        files.append((path.name, what, _mode(path)))
    text, _ = hashed_password_file(users, directory, passwd_tool)
    for name, body, what in (
        ("mosquitto_passwd", text, "hashed passwords"),
        ("mosquitto_acl", acl, "each garden's bridge writes its own tree only"),
        ("regional.conf", listener, "listener, TLS, auth and queues"),
    ):
        write_private(directory / name, body)
        files.append((name, what, _mode(directory / name)))
    tls_dir = directory / "tls"
    if tls_hosts:
        if not (tls_dir / "server.pem").exists():
            _private_dir(tls_dir)
            make_tls(tls_dir, "region", tls_hosts, openssl)
        for name, what in (("ca.pem", "the CA: give it to every garden"), ("server.pem", "the broker's certificate")):
            files.append((f"tls/{name}", what, _mode(tls_dir / name)))
    steps = [
        f"copy {directory.absolute() / 'regional.conf'} into the regional Mosquitto's conf.d "
        "(persistence on in its main file) and restart it",
        *(
            f"give garden {g} its password file mqtt_{uplink_user(g)}_password and tls/ca.pem, privately; "
            f"there: garden federate config --garden {g} --user {uplink_user(g)} --password-file ... --ca ..."
            for g in gardens
        ),
        f"run the regional hub as MQTT user {hub_user}: garden hub run --all-gardens --garden <region> "
        f"(GARDEN_MQTT_USERNAME={hub_user}, GARDEN_MQTT_PASSWORD_FILE={directory.absolute()}/mqtt_{hub_user}_password)",
    ]
    return Written(
        directory,
        tuple(files),
        tuple(steps),
        (("gardens", list(gardens)), ("users", list(users))),
    )
