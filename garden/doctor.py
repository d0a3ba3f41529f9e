"""``garden doctor``: is everything the garden needs there, and if not, what fixes it.

Each check gives a state (``ok``, ``fail``, ``warn``, ``skip``), what it saw,
and for a failure or warning the command that fixes it. Only ``fail`` makes
the doctor exit 1: a warning (no readings yet, an old newest reading) is
normal on a fresh install.

Checks, in order: the broker (connects; accepts our credentials), InfluxDB
(``/ping`` and its version; our credentials; the database; which write path
the hub uses), Grafana (optional: ``/api/health``, and the datasource the
dashboards use when credentials are given), the clock (this machine
against InfluxDB's ``Date`` header, and against the newest reading's time,
which the bridge stamps), the watch's config (readable, a latitude,
people to tell, a mail server that answers), and the commons (its config, a
hub that answers volunteers' requests, a rota whose people can be reached).

``garden doctor --security`` runs :func:`run_security_checks` instead: what is
open, each with its fix. Anonymous MQTT (it tries to connect without
credentials), weak or default secrets, InfluxDB credentials with too much scope
(:func:`garden.influx_access.check_scopes`), broker and InfluxDB URLs that send
passwords in clear text over a network, secret files that others may read, and
secrets written in the config file or straight into the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3

from firmware_bridge.errors import BridgeError, BrokerUnreachable, ConfigError
from firmware_bridge.mqtt_link import BrokerAddress, read_retained
from firmware_bridge.topics import Topics
from garden.commons.settings import CommonsSettings
from garden.garden_status import READING_MEASUREMENTS, format_age
from garden.influx import (
    Influx,
    InfluxAuthError,
    InfluxError,
    InfluxMissingDatabase,
    InfluxUnreachable,
    ServerInfo,
)
from garden.schema import RETENTION
from garden.settings import HubSettings
from garden.watch_settings import WatchSettings

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
MAX_SKEW_S = 5.0  # HTTP Date has whole seconds; more than this is a clock to fix
FUTURE_TOLERANCE_S = 60.0  # the newest reading may be this far ahead (bridge vs here)
STALE_AFTER_S = 3600.0  # a newest reading older than this: is the pipeline running?
LOOKBACK_MS = 30 * 86_400_000
RETENTION_POLICIES = tuple(name for name, _duration, _default in RETENTION)  # `garden hub init` makes them on 1.x

FIX_NTP = "sudo timedatectl set-ntp true   (on the machine whose clock is off; check with: timedatectl)"
FIX_PIPELINE = "garden up   (or: garden bridge status; garden hub status)"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    state: str
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.state == FAIL

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class GrafanaTarget:
    url: str
    token: str | None = None
    user: str | None = None
    password: str | None = None


def _is_auth_refusal(problem: str) -> bool:
    text = problem.lower()
    return "authori" in text or "password" in text or "bad user" in text


def check_broker(settings: HubSettings) -> list[Check]:
    broker = settings.broker
    who = f"as {broker.username}" if broker.username else "anonymously"
    try:
        read_retained(broker, (), wait_s=0.0)
    except BrokerUnreachable as err:
        if _is_auth_refusal(err.problem):
            return [
                Check("broker", OK, f"{broker!r} answers"),
                Check(
                    "broker auth",
                    FAIL,
                    f"refused us {who}: {err.problem}",
                    "export GARDEN_MQTT_USERNAME=<user> GARDEN_MQTT_PASSWORD=<password>   "
                    "(on the broker: sudo mosquitto_passwd /etc/mosquitto/passwd <user>)",
                ),
            ]
        return [
            Check(
                "broker",
                FAIL,
                f"{broker!r}: {err.problem}",
                "sudo systemctl start mosquitto   (or bash scripts/run.sh; or set GARDEN_MQTT_URL)",
            ),
            Check("broker auth", SKIP, "not checked: no broker"),
        ]
    return [Check("broker", OK, f"{broker!r} answers"), Check("broker auth", OK, f"connected {who}")]


def _auth_kind(influx: Influx) -> str:
    s = influx.settings
    return "our token" if s.token else (f"user {s.username}" if s.username else "us without credentials")


def check_influx(influx: Influx) -> tuple[list[Check], ServerInfo | None]:
    s = influx.settings
    try:
        server = influx.ping()
    except InfluxError as err:
        skipped = [
            Check(name, SKIP, "not checked: no InfluxDB") for name in ("influxdb auth", "database", "write path")
        ]
        return [
            Check(
                "influxdb",
                FAIL,
                str(err).split(". Is it")[0],
                "sudo systemctl start influxdb   (or docker compose up -d influxdb; or set GARDEN_INFLUX_URL)",
            ),
            *skipped,
        ], None
    checks = [Check("influxdb", OK, f"{s.url} answers, version {server.version}")]
    try:
        # A SELECT, not SHOW MEASUREMENTS: 1.x answers that one for a missing database too.
        influx.query('SELECT "seq" FROM "soil_moisture" LIMIT 1')
        policies = _retention_policies(influx) if server.major < 2 else None
    except InfluxAuthError as err:
        checks.append(
            Check(
                "influxdb auth",
                FAIL,
                str(err).split(". Check")[0],
                "export GARDEN_INFLUX_TOKEN=<token>   (2.x/3.x), or "
                "GARDEN_INFLUX_USERNAME=<user> GARDEN_INFLUX_PASSWORD=<password>   (1.x)",
            )
        )
        checks.append(Check("database", SKIP, "not checked: credentials refused"))
    except InfluxMissingDatabase:
        checks.append(Check("influxdb auth", OK, f"accepted {_auth_kind(influx)}"))
        fix = "garden hub init" if server.major < 2 else "influx bucket create, then garden hub init (DBRP mapping)"
        checks.append(Check("database", FAIL, f"no database or bucket {s.database!r}", fix))
    except InfluxUnreachable as err:
        checks.append(Check("influxdb auth", FAIL, str(err), "sudo systemctl status influxdb"))
        checks.append(Check("database", SKIP, "not checked"))
    except InfluxError as err:
        checks.append(Check("influxdb auth", OK, f"accepted {_auth_kind(influx)}"))
        checks.append(Check("database", FAIL, str(err), "garden hub init"))
    else:
        checks.append(Check("influxdb auth", OK, f"accepted {_auth_kind(influx)}"))
        missing = sorted(set(RETENTION_POLICIES) - policies) if policies is not None else []
        if missing:
            detail = f"{s.database!r} has no retention policy {', '.join(missing)}"
            checks.append(Check("database", FAIL, detail, "garden hub init"))
        else:
            checks.append(Check("database", OK, f"{s.database!r} answers InfluxQL"))
    path = "v2 (/api/v2/write)" if server.has_v2_write else "v1 (/write)"
    checks.append(Check("write path", OK, f"{path}, for InfluxDB {server.version}"))
    return checks, server


def _retention_policies(influx: Influx) -> set[str]:
    """The database's retention policies (1.x; the database comes from the request, not the text)."""
    return {str(row[0]) for series in influx.query("SHOW RETENTION POLICIES") for row in series.values}


def server_skew_s(date_header: str, sent_at: float, received_at: float) -> float:
    """InfluxDB's clock minus ours, in seconds, from its ``Date`` header (whole seconds).

    The header is truncated to the second, so half a second is added.
    """
    server = parsedate_to_datetime(date_header).timestamp() + 0.5
    return server - (sent_at + received_at) / 2


def judge_server_skew(skew_s: float) -> Check:
    if abs(skew_s) > MAX_SKEW_S:
        way = "ahead of" if skew_s > 0 else "behind"
        return Check(
            "clock vs InfluxDB", FAIL, f"InfluxDB's clock is {abs(skew_s):.0f} s {way} this machine's", FIX_NTP
        )
    return Check("clock vs InfluxDB", OK, f"{abs(round(skew_s))} s apart (up to {MAX_SKEW_S:g} s is fine)")


def judge_newest_reading(newest_ms: int | None, now_ms: int, garden: str) -> Check:
    name = "newest reading"
    if newest_ms is None:
        return Check(name, WARN, f"no readings from garden {garden!r} in 30 days", FIX_PIPELINE)
    ahead_s = (newest_ms - now_ms) / 1000
    if ahead_s > FUTURE_TOLERANCE_S:
        return Check(
            name,
            FAIL,
            f"stamped {ahead_s:.0f} s in the future: the bridge's clock is ahead of this machine's",
            FIX_NTP,
        )
    age = format_age(max(0, now_ms - newest_ms))
    if -ahead_s > STALE_AFTER_S:
        return Check(name, WARN, f"{age} old: is the bridge running, or its clock behind?", FIX_PIPELINE)
    return Check(name, OK, f"{age} ago")


def check_clock(influx: Influx, garden: str, clock: Callable[[], float] = time.time) -> list[Check]:
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=3.0, read=5.0), retries=False)
    try:
        sent = clock()
        response = http.request("GET", influx.settings.url.rstrip("/") + "/ping")
        received = clock()
        date = response.headers.get("Date")
        checks = [
            judge_server_skew(server_skew_s(date, sent, received))
            if date
            else Check("clock vs InfluxDB", WARN, "InfluxDB sent no Date header")
        ]
    except (urllib3.exceptions.HTTPError, ValueError, TypeError) as err:
        checks = [Check("clock vs InfluxDB", SKIP, f"not checked: {err}")]
    finally:
        http.clear()
    sources = ", ".join(f'"{m}"' for m in READING_MEASUREMENTS)
    now_ms = int(clock() * 1000)
    try:
        series = influx.query(
            f'SELECT last("seq") FROM {sources} WHERE "garden" = $garden AND time > $start',
            {"garden": garden, "start": (now_ms - LOOKBACK_MS) * 1_000_000},
        )
    except InfluxError as err:
        return [*checks, Check("newest reading", SKIP, f"not checked: {str(err).split('. ')[0]}")]
    times = [row[0] for s in series for row in s.values if isinstance(row[0], int)]
    return [*checks, judge_newest_reading(max(times) if times else None, now_ms, garden)]


def check_grafana(target: GrafanaTarget | None) -> list[Check]:
    if target is None:
        return [Check("grafana", SKIP, "not checked: set GARDEN_GRAFANA_URL to check it")]
    from garden.grafana_push import DATASOURCE_UID, GrafanaError, connect, datasource_exists, health

    try:
        api = connect(target.url, token=target.token, user=target.user, password=target.password, timeout_s=5.0)
        answer = health(api)
    except GrafanaError as err:
        return [
            Check(
                "grafana",
                FAIL,
                str(err).split(". Is it")[0],
                "docker compose up -d grafana   (or fix GARDEN_GRAFANA_URL)",
            )
        ]
    database = answer.get("database")
    if database != "ok":
        return [Check("grafana", FAIL, f"{target.url}: its database is {database!r}", "docker compose logs grafana")]
    checks = [Check("grafana", OK, f"{target.url} answers, version {answer.get('version', '?')}")]
    if not (target.token or target.user):
        checks.append(Check("grafana datasource", SKIP, "not checked: set GARDEN_GRAFANA_TOKEN to check it"))
        return checks
    try:
        found = datasource_exists(api)
    except GrafanaError as err:
        checks.append(Check("grafana datasource", FAIL, str(err), "check GARDEN_GRAFANA_TOKEN"))
        return checks
    if found:
        checks.append(Check("grafana datasource", OK, f"uid {DATASOURCE_UID!r} exists"))
    else:
        checks.append(
            Check(
                "grafana datasource",
                FAIL,
                f"no datasource with uid {DATASOURCE_UID!r}: the dashboards show no data",
                "provision dashboards/provisioning/datasources/garden.yaml (docs/dashboards.md)",
            )
        )
    return checks


def check_watch(watch: WatchSettings | ConfigError) -> list[Check]:
    """The watch's config: readable, a latitude for the sun's clock, someone to tell, a mail server that answers."""
    if isinstance(watch, ConfigError):
        return [Check("watch config", FAIL, str(watch), "fix that key in garden.toml (docs/configuration.md)")]
    checks = [Check("watch config", OK, "readable" if watch.enabled else "readable; the watch is turned off")]
    if watch.latitude is None:
        checks.append(Check("latitude", WARN, "not set: forecasts run on wall hours, with no Hargreaves cross-check",
                            "add `latitude = <degrees north>` under [garden] in garden.toml"))  # fmt: skip
    else:
        where = f"{watch.latitude:g}°" + (f", {watch.longitude:g}°" if watch.longitude is not None else "")
        checks.append(Check("latitude", OK, f"{where} ({watch.timezone})"))
    people = watch.people
    if not people:
        checks.append(Check("notifications", WARN, "nobody is told of alerts (they still reach MQTT and dashboards)",
                            "add [[people]] to garden.toml (docs/alerts.md)"))  # fmt: skip
    else:
        ways = {
            "email": sum(1 for p in people if p.recipient.email),
            "ntfy": sum(1 for p in people if p.recipient.ntfy_topic),
            "webhook": sum(1 for p in people if p.recipient.webhook_url),
        }
        shown = ", ".join(f"{n} by {way}" for way, n in ways.items() if n)
        checks.append(Check("notifications", OK, f"{len(people)} people: {shown}"))
        if ways["email"] and watch.smtp is None:
            checks.append(Check("smtp", FAIL, f"{ways['email']} people want email, but there is no mail server",
                                "add [notify.smtp] host = ... to garden.toml"))  # fmt: skip
    if watch.smtp is not None:
        try:
            with socket.create_connection((watch.smtp.host, watch.smtp.port), timeout=3.0):
                pass
            checks.append(Check("smtp", OK, f"{watch.smtp.host}:{watch.smtp.port} answers"))
        except OSError as err:
            checks.append(Check("smtp", FAIL, f"{watch.smtp.host}:{watch.smtp.port}: {err}",
                                "check [notify.smtp] host and port, and the network"))  # fmt: skip
    return checks


def check_commons(
    settings: HubSettings,
    commons: CommonsSettings | ConfigError,
    watch: WatchSettings | ConfigError | None,
    earlier: list[Check],
) -> list[Check]:
    """The commons' config, a hub that answers its requests, a rota whose people can be reached.

    Members the hub can tell of alerts settle the watch's "nobody is told" warning in ``earlier``
    (replaced in place)."""
    from garden.commands import CommandRefused, HubUnreachable, request

    if isinstance(commons, ConfigError):
        return [Check("commons config", FAIL, str(commons), "fix that key in garden.toml (docs/commons.md)")]
    rule = commons.share_rule.replace("_", " ")
    checks = [Check("commons config", OK, f"readable; shares go {rule}")]
    try:
        topics = Topics(settings.garden)
        members = request(settings.broker, topics, "commons", {"action": "member.list", "who": "doctor"},
                          status_topic=topics.hub_commons("+"))["members"]  # fmt: skip
    except (BridgeError, HubUnreachable, CommandRefused, KeyError) as err:
        checks.append(Check("hub", WARN, f"does not answer: {err}",
                            "garden hub run   (or bash scripts/run.sh); commons commands fail until then"))  # fmt: skip
        return checks
    checks.append(Check("hub", OK, f"answers; {len(members)} members"))
    told = [m for m in members if m.get("reachable") and m.get("source") == "hub"]
    for i, c in enumerate(earlier):
        if c.name == "notifications" and c.state == WARN and told:  # members count as people to tell
            earlier[i] = Check(
                "notifications",
                OK,
                f"{len(told)} member{'s' if len(told) != 1 else ''} can be told (garden member list)",
            )
    if not commons.rota.empty:
        reachable = {m["name"] for m in members if m.get("reachable")}
        if not isinstance(watch, ConfigError) and watch is not None:
            reachable |= {p.name for p in watch.people}
        unreachable = sorted(commons.rota.names() - reachable)
        if unreachable:
            who = ", ".join(unreachable)
            checks.append(Check("rota", WARN, f"on the rota but cannot be told of dry beds: {who}",
                                f"garden member add {unreachable[0]} --email ... (or --ntfy, --webhook)"))  # fmt: skip
        else:
            checks.append(Check("rota", OK, f"{len(commons.rota.names())} people, all reachable"))
    return checks


def run_checks(
    settings: HubSettings,
    grafana: GrafanaTarget | None = None,
    clock: Callable[[], float] = time.time,
    watch: WatchSettings | ConfigError | None = None,
    commons: CommonsSettings | ConfigError | None = None,
) -> list[Check]:
    checks = check_broker(settings)
    influx = Influx(settings.influx)
    try:
        influx_checks, server = check_influx(influx)
        checks += influx_checks + check_grafana(grafana)
        if server is not None:
            checks += check_clock(influx, settings.garden, clock)
        else:
            checks += [Check(n, SKIP, "not checked: no InfluxDB") for n in ("clock vs InfluxDB", "newest reading")]
    finally:
        influx.close()
    if watch is not None:
        checks += check_watch(watch)
    if commons is not None and not checks[0].failed:
        checks += check_commons(settings, commons, watch, checks)
    return checks


# ---------------------------------------------------------------- --security

# Secrets anyone would try first: the defaults of the tools we use and of their docs.
KNOWN_DEFAULTS = frozenset(
    {
        "admin",
        "password",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "garden",
        "demo",
        "mosquitto",
        "mqtt",
        "influxdb",
        "influx",
        "grafana",
        "public",
        "guest",
        "root",
        "default",
        "test",
        "letmein",
        "123456",
        "12345678",
        "password1",
        "qwerty",
        "admin123",
        "passw0rd",
    }
)
MIN_SECRET_LENGTH = 16  # garden secure init and make-secrets.sh make 32 random letters and digits
FIX_SECRET = "garden secure init --rotate <name>, then point its *_FILE at the new file (docs/security.md)"
DIRECT_SECRETS = (
    "GARDEN_MQTT_PASSWORD",
    "GARDEN_INFLUX_PASSWORD",
    "GARDEN_INFLUX_TOKEN",
    "GARDEN_INFLUX_READ_PASSWORD",
    "GARDEN_INFLUX_READ_TOKEN",
    "GARDEN_INFLUX_ADMIN_PASSWORD",
    "GARDEN_SMTP_PASSWORD",
    "GARDEN_NTFY_TOKEN",
    "GARDEN_GRAFANA_TOKEN",
    "GARDEN_GRAFANA_PASSWORD",
)
SECRET_KEY_RE = re.compile(r"pass(word)?|passwd|token|secret|api_?key|private_?key", re.IGNORECASE)
NOT_SECRET_FILES = frozenset({"README.md", ".gitignore"})


def judge_secret(name: str, value: str | None, username: str | None = None) -> Check | None:
    """A weak or default secret fails; None when there is none to judge."""
    if not value:
        return None
    check = f"{name} strength"
    if value.lower() in KNOWN_DEFAULTS or (username and value.lower() == username.lower()):
        return Check(
            check, FAIL, "is a well-known default (or the user name): the first thing anyone tries", FIX_SECRET
        )
    if len(value) < MIN_SECRET_LENGTH:
        return Check(check, FAIL, f"is {len(value)} characters, fewer than {MIN_SECRET_LENGTH}: guessable", FIX_SECRET)
    return Check(check, OK, f"{len(value)} characters, not a known default")


def check_anonymous_mqtt(broker: BrokerAddress) -> Check:
    """Connect without credentials, as anyone on the garden's Wi-Fi could."""
    anonymous = BrokerAddress(broker.host, broker.port, broker.tls)
    try:
        read_retained(anonymous, (), wait_s=0.0)
    except BrokerUnreachable as err:
        if _is_auth_refusal(err.problem):
            return Check("mqtt anonymous", OK, f"{anonymous!r} refuses clients without a password")
        return Check("mqtt anonymous", SKIP, f"not checked: {anonymous!r}: {err.problem}")
    return Check(
        "mqtt anonymous",
        FAIL,
        f"{anonymous!r} accepts clients without a password: anyone who reaches it may publish readings and configs",
        "allow_anonymous false, with a password_file and an acl_file (deploy/mosquitto/mosquitto-native.conf; "
        "garden secure init makes both)",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def judge_transport(name: str, encrypted: bool, host: str, fix: str) -> Check:
    """Clear text is fine on loopback; a single-label name (a compose service, ``mosquitto``) is
    a container network or a local name: a warning; any other host is a network: a failure."""
    if encrypted:
        return Check(name, OK, "encrypted (TLS)")
    if _is_loopback(host):
        return Check(name, OK, f"{host}: loopback, never leaves this machine")
    if "." not in host and ":" not in host:
        return Check(name, WARN, f"{host}: clear text; fine on compose's own network, not across Wi-Fi", fix)
    return Check(name, FAIL, f"{host}: passwords and readings cross the network in clear text", fix)


def check_transports(settings: HubSettings) -> list[Check]:
    b = settings.broker
    mqtt = judge_transport(
        "mqtt tls", b.tls, b.host, "mqtts://<host>:8883 with the broker's TLS listener (docs/security.md, 'TLS')"
    )
    url = urlsplit(settings.influx.url)
    influx = judge_transport(
        "influxdb tls",
        url.scheme == "https",
        url.hostname or "",
        "https:// (a reverse proxy with TLS, or InfluxDB's own https-enabled)",
    )
    return [mqtt, influx]


def _secret_paths(env: Mapping[str, str], dirs: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    files = [Path(v) for k, v in env.items() if k.endswith("_FILE") and k.startswith(("GARDEN_", "GF_")) and v]
    found_dirs = [d for d in dirs if d.is_dir()]
    for d in found_dirs:
        for path in sorted(d.rglob("*")):
            if path.is_file() and path.name not in NOT_SECRET_FILES and not path.name.startswith("."):
                files.append(path)
    return list(dict.fromkeys(files)), found_dirs


def check_secret_files(env: Mapping[str, str], dirs: Iterable[Path]) -> list[Check]:
    """Secret files (every ``*_FILE``, everything in the secrets directories) that group or others may read."""
    files, found_dirs = _secret_paths(env, dirs)
    checks: list[Check] = []
    for d in found_dirs:
        mode = d.stat().st_mode & 0o777
        if mode & 0o077:
            checks.append(
                Check("secrets directory", FAIL, f"{d} is {mode:04o}: others may list or enter it", f"chmod 0700 {d}")
            )
    loose = []
    for path in files:
        try:
            mode = path.stat().st_mode & 0o777  # a link's target
        except OSError:
            continue  # a missing file is the settings' error, not this one's
        if mode & 0o077:
            loose.append((path, mode))
    for path, mode in loose:
        who = "others" if mode & 0o007 else "its group"
        checks.append(Check("secret file mode", FAIL, f"{path} is {mode:04o}: {who} may read it", f"chmod 0600 {path}"))
    if not loose and files:
        where = ", ".join(str(d) for d in found_dirs) or "the *_FILE variables"
        checks.append(Check("secret file mode", OK, f"{len(files)} files ({where}): none readable by others"))
    if not files:
        checks.append(
            Check(
                "secret file mode",
                SKIP,
                "no secret files to check: no *_FILE variable, no secrets directory (--secrets-dir)",
            )
        )
    return checks


def _walk(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _walk(value, path + ".")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _walk(item, f"{path}[{i}].")
                else:
                    yield f"{path}[{i}]", item
        else:
            yield path, value


def check_config_secrets(path: Path | None, data: Mapping[str, Any]) -> list[Check]:
    """Secrets written into garden.toml: a key named like one, or a URL with a password in it."""
    if path is None:
        return [Check("config secrets", SKIP, "no config file")]
    found = []
    for key, value in _walk(data):
        if not isinstance(value, str) or not value:
            continue
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        if SECRET_KEY_RE.search(leaf) and not leaf.endswith(("_file", "_username", "_user")):
            found.append(key)
        elif "://" in value:
            try:
                if urlsplit(value).password:
                    found.append(f"{key} (a password in the URL)")
            except ValueError:
                continue
    if found:
        return [
            Check(
                "config secrets",
                FAIL,
                f"{path} holds secrets: {', '.join(found)}",
                "move each into a 0600 file named by its GARDEN_*_FILE variable (docs/configuration.md)",
            )
        ]
    return [Check("config secrets", OK, f"{path} holds no secret")]


def check_env_secrets(env: Mapping[str, str]) -> list[Check]:
    direct = [name for name in DIRECT_SECRETS if env.get(name)]
    if not direct:
        return [Check("secrets in environment", OK, "none set directly: they come from *_FILE files")]
    return [
        Check(
            "secrets in environment",
            WARN,
            f"{', '.join(direct)} set directly: visible in /proc/<pid>/environ and `docker inspect`",
            "set the *_FILE variable instead, naming a 0600 file",
        )
    ]


def check_influx_scopes(settings: HubSettings) -> list[Check]:
    from garden.influx_access import check_scopes

    rows = check_scopes(settings.influx)
    if len(rows) == 1 and rows[0][1] == "influxdb" and rows[0][0] == FAIL:
        return [
            Check(
                "influxdb scopes",
                SKIP,
                f"not checked: {rows[0][2].split('. Is it')[0]}",
                "garden doctor (without --security) says why",
            )
        ]
    fixes = {FAIL: "docs/security.md, 'What each credential may do'", WARN: None, OK: None}
    return [Check(f"influxdb {subject}", status, message, fixes.get(status)) for status, subject, message in rows]


def run_security_checks(
    settings: HubSettings,
    *,
    config_path: Path | None,
    config_data: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    secret_dirs: Iterable[Path] = (),
) -> list[Check]:
    env = os.environ if env is None else env
    b = settings.broker
    checks = [check_anonymous_mqtt(b)]
    influx = settings.influx
    for check in (
        judge_secret("mqtt password", b.password, b.username),
        judge_secret("influxdb password", influx.password, influx.username),
        judge_secret("influxdb read password", influx.read_password, influx.read_username),
        judge_secret("influxdb token", influx.token),
        judge_secret("influxdb read token", influx.read_token),
    ):
        if check is not None:
            checks.append(check)
    if b.username and not b.password:
        checks.append(
            Check(
                "mqtt password",
                WARN,
                f"user {b.username} has no password set",
                "GARDEN_MQTT_PASSWORD_FILE=<a 0600 file> (garden secure init makes them)",
            )
        )
    checks += check_influx_scopes(settings)
    checks += check_transports(settings)
    checks += check_secret_files(env, secret_dirs)
    checks += check_config_secrets(config_path, config_data)
    checks += check_env_secrets(env)
    return checks
