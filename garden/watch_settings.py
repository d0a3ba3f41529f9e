"""Settings of the hub's watch (watering needs and alerts) and of its notifications:
``[garden]`` latitude and timezone, ``[watch]``, ``[notify.*]`` and ``[[people]]``
in garden.toml. Secrets (SMTP password, ntfy token) come only from the
environment or ``*_FILE``. Documented in docs/configuration.md and docs/alerts.md.
"""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.settings import env_flag, find_config_file, read_secret, read_toml, table_of, typed_value
from firmware_bridge.topics import NAME_RE
from garden.alerting.lifecycle import SEVERITY_ORDER, AlertPolicy
from garden.alerting.routing import Person
from garden.alerting.rules import RulePolicy
from garden.notify.notice import Recipient
from garden.notify.quiet_hours import parse_quiet_hours
from garden.watering.need import NeedPolicy


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender: str = "garden@localhost"


@dataclass(frozen=True, slots=True)
class NtfySettings:
    server: str = "https://ntfy.sh"
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class WatchSettings:
    enabled: bool = True
    latitude: float | None = None
    longitude: float | None = None
    timezone: str = "UTC"
    evaluate_every_s: float = 60.0
    history_h: float = 96.0
    need: NeedPolicy = field(default_factory=NeedPolicy)
    rules: RulePolicy = field(default_factory=RulePolicy)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    notify_min_severity: str = "warning"
    webhook_timeout_s: float = 5.0
    max_attempts: int = 5
    smtp: SmtpSettings | None = None
    ntfy: NtfySettings = field(default_factory=NtfySettings)
    people: tuple[Person, ...] = ()


_WATCH_KEYS = {
    "enabled", "evaluate_every_s", "history_h", "hysteresis_vwc", "soon_h", "late_tolerance", "lost_tolerance",
    "gap_threshold", "stuck_samples", "fault_samples", "battery_low_v", "battery_critical_v", "tank_min_days",
    "repeat_every_h", "max_repeats", "escalate_after_h", "notify_min_severity", "webhook_timeout_s", "max_attempts",
}  # fmt: skip
# ntfy's own rule for topic names (docs.ntfy.sh, "Publishing").
NTFY_TOPIC_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PERSON_KEYS = {
    "name", "email", "ntfy", "webhook", "beds", "kinds", "quiet_hours", "timezone", "urgent_overrides_quiet",
}  # fmt: skip


def _positive(path: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(path, f"must be a positive number, got {value!r}")
    return value


def _timezone(path: str, name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(path, f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')") from None
    return name


def parse_person(i: int | str, raw: Any, default_tz: str) -> Person:
    """One ``[[people]]`` table (``i`` its index), or a member's record (``i`` the path to name in errors)."""
    path = f"people[{i}]" if isinstance(i, int) else i
    if not isinstance(raw, Mapping):
        raise ConfigError(path, "must be a table ([[people]])")
    for key in set(raw) - _PERSON_KEYS:
        raise ConfigError(f"{path}.{key}", f"unknown key; expected one of {sorted(_PERSON_KEYS)}")
    name = typed_value(raw, path, "name", str, None)
    if not name or not NAME_RE.fullmatch(name):
        raise ConfigError(f"{path}.name", "required: 1-32 letters, digits, '-' or '_'")
    email = typed_value(raw, path, "email", str, None)
    if email is not None and ("@" not in email or any(c in email for c in " \r\n")):
        raise ConfigError(f"{path}.email", f"not an email address: {email!r}; give one like ana@example.org")
    ntfy = typed_value(raw, path, "ntfy", str, None)
    if ntfy is not None and not NTFY_TOPIC_RE.fullmatch(ntfy):
        raise ConfigError(f"{path}.ntfy", "an ntfy topic: 1-64 letters, digits, '-' and '_'")
    webhook = typed_value(raw, path, "webhook", str, None)
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        raise ConfigError(f"{path}.webhook", "must be an http:// or https:// URL")
    beds = typed_value(raw, path, "beds", list, ["*"])
    kinds = typed_value(raw, path, "kinds", list, ["*"])
    for what, values in (("beds", beds), ("kinds", kinds)):
        for value in values:
            if not isinstance(value, str) or not (value == "*" or NAME_RE.fullmatch(value)):
                raise ConfigError(f"{path}.{what}", f"names or '*', got {value!r}")
    tz = _timezone(f"{path}.timezone", typed_value(raw, path, "timezone", str, default_tz))
    try:
        quiet = parse_quiet_hours(typed_value(raw, path, "quiet_hours", str, ""))
    except ValueError as err:
        raise ConfigError(f"{path}.quiet_hours", str(err)) from None
    if email is None and ntfy is None and webhook is None:
        raise ConfigError(path, f"{name} has no way to be reached: give email, ntfy or webhook")
    recipient = Recipient(
        name=name,
        email=email,
        ntfy_topic=ntfy,
        webhook_url=webhook,
        quiet_hours=quiet,
        timezone=tz,
        urgent_overrides_quiet=typed_value(raw, path, "urgent_overrides_quiet", bool, True),
    )
    return Person(name=name, recipient=recipient, beds=tuple(beds), kinds=tuple(kinds))


def load_watch_settings(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> WatchSettings:
    env = os.environ if env is None else env
    path = find_config_file(config_file)
    data = read_toml(path) if path is not None else {}
    garden_t, watch_t, notify_t = (table_of(data, n) for n in ("garden", "watch", "notify"))
    for key in set(watch_t) - _WATCH_KEYS:
        raise ConfigError(f"watch.{key}", f"unknown key; expected one of {sorted(_WATCH_KEYS)}")
    for key in set(notify_t) - {"smtp", "ntfy"}:
        raise ConfigError(f"notify.{key}", "unknown table; expected [notify.smtp] or [notify.ntfy]")

    latitude = typed_value(garden_t, "garden", "latitude", float, None)
    if env.get("GARDEN_LATITUDE"):
        try:
            latitude = float(env["GARDEN_LATITUDE"])
        except ValueError:
            raise ConfigError("GARDEN_LATITUDE", "must be a number of degrees, north positive") from None
    if latitude is not None and not -90.0 <= latitude <= 90.0:
        raise ConfigError("garden.latitude", "must be -90..90 degrees, north positive")
    longitude = typed_value(garden_t, "garden", "longitude", float, None)
    if env.get("GARDEN_LONGITUDE"):
        try:
            longitude = float(env["GARDEN_LONGITUDE"])
        except ValueError:
            raise ConfigError("GARDEN_LONGITUDE", "must be a number of degrees, east positive") from None
    if longitude is not None and not -180.0 <= longitude <= 180.0:
        raise ConfigError("garden.longitude", "must be -180..180 degrees, east positive")
    tz_name = env.get("GARDEN_TIMEZONE") or typed_value(garden_t, "garden", "timezone", str, "UTC")
    tz = _timezone("garden.timezone", tz_name)

    def num(key: str, default: float) -> float:
        return _positive(f"watch.{key}", typed_value(watch_t, "watch", key, float, default))

    def count(key: str, default: int) -> int:
        value = typed_value(watch_t, "watch", key, int, default)
        if value < 1:
            raise ConfigError(f"watch.{key}", "must be at least 1")
        return int(value)

    severity = typed_value(watch_t, "watch", "notify_min_severity", str, "warning")
    if severity not in SEVERITY_ORDER:
        raise ConfigError("watch.notify_min_severity", f"must be one of {sorted(SEVERITY_ORDER)}")
    rules = RulePolicy(
        late_tolerance=num("late_tolerance", 1.5),
        lost_tolerance=num("lost_tolerance", 3.0),
        gap_threshold=count("gap_threshold", 3),
        stuck_samples=count("stuck_samples", 12),
        fault_samples=count("fault_samples", 3),
        battery_low_v=num("battery_low_v", 3.4),
        battery_critical_v=num("battery_critical_v", 3.2),
        tank_min_days=num("tank_min_days", 3.0),
    )
    if rules.lost_tolerance <= rules.late_tolerance:
        raise ConfigError("watch.lost_tolerance", "must be greater than watch.late_tolerance")
    max_repeats = typed_value(watch_t, "watch", "max_repeats", int, 3)
    if max_repeats < 0:
        raise ConfigError("watch.max_repeats", "must be 0 or more (0: never repeat an alert)")
    alerts = AlertPolicy(
        repeat_every_ms=int(num("repeat_every_h", 6.0) * 3_600_000),
        max_repeats=int(max_repeats),
        escalate_after_ms=int(num("escalate_after_h", 12.0) * 3_600_000),
    )

    smtp_t = table_of(notify_t, "smtp") if "smtp" in notify_t else None
    smtp = None
    if smtp_t is not None:
        for key in set(smtp_t) - {"host", "port", "security", "username", "sender"}:
            hint = " (set GARDEN_SMTP_PASSWORD or GARDEN_SMTP_PASSWORD_FILE)" if key == "password" else ""
            raise ConfigError(f"notify.smtp.{key}", f"unknown key{hint}")
        host = typed_value(smtp_t, "notify.smtp", "host", str, None)
        if not host:
            raise ConfigError("notify.smtp.host", "required")
        security = typed_value(smtp_t, "notify.smtp", "security", str, "starttls")
        if security not in ("starttls", "tls", "none"):
            raise ConfigError("notify.smtp.security", "must be 'starttls', 'tls' or 'none'")
        if not 1 <= typed_value(smtp_t, "notify.smtp", "port", int, 587) <= 65535:
            raise ConfigError("notify.smtp.port", "must be a port number, 1-65535 (587 for starttls, 465 for tls)")
        smtp = SmtpSettings(
            host=host,
            port=typed_value(smtp_t, "notify.smtp", "port", int, 587),
            security=security,
            username=typed_value(smtp_t, "notify.smtp", "username", str, None),
            password=read_secret(env, "GARDEN_SMTP_PASSWORD"),
            sender=typed_value(smtp_t, "notify.smtp", "sender", str, "garden@localhost"),
        )
    ntfy_t = table_of(notify_t, "ntfy") if "ntfy" in notify_t else {}
    for key in set(ntfy_t) - {"server"}:
        hint = " (set GARDEN_NTFY_TOKEN or GARDEN_NTFY_TOKEN_FILE)" if key == "token" else ""
        raise ConfigError(f"notify.ntfy.{key}", f"unknown key{hint}")
    ntfy_server = typed_value(ntfy_t, "notify.ntfy", "server", str, "https://ntfy.sh")
    if not ntfy_server.startswith(("http://", "https://")):
        raise ConfigError("notify.ntfy.server", "must be an http:// or https:// URL, e.g. https://ntfy.sh")
    ntfy = NtfySettings(
        server=ntfy_server.rstrip("/"),
        token=read_secret(env, "GARDEN_NTFY_TOKEN"),
    )

    people_raw = data.get("people", [])
    if not isinstance(people_raw, list):
        raise ConfigError("people", "must be an array of tables ([[people]])")
    people = tuple(parse_person(i, p, tz) for i, p in enumerate(people_raw))
    names = [p.name for p in people]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("people", f"{name!r} appears twice")
    enabled = env_flag(env, "GARDEN_WATCH_ENABLED", "must be true or false (false: this hub only ingests)")
    return WatchSettings(
        enabled=typed_value(watch_t, "watch", "enabled", bool, True) if enabled is None else enabled,
        latitude=latitude,
        longitude=longitude,
        timezone=tz,
        evaluate_every_s=num("evaluate_every_s", 60.0),
        history_h=num("history_h", 96.0),
        need=NeedPolicy(hysteresis_vwc=num("hysteresis_vwc", 3.0), soon_h=num("soon_h", 24.0)),
        rules=rules,
        alerts=alerts,
        notify_min_severity=severity,
        webhook_timeout_s=num("webhook_timeout_s", 5.0),
        max_attempts=count("max_attempts", 5),
        smtp=smtp,
        ntfy=ntfy,
        people=people,
    )
