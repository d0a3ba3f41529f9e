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
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3

from firmware_bridge.errors import BridgeError, BrokerUnreachable, ConfigError
from firmware_bridge.mqtt_link import read_retained
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
