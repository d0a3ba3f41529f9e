"""Hub settings: the ``[garden]``, ``[mqtt]``, ``[influx]`` and ``[hub]`` tables of
garden.toml, with ``GARDEN_*`` overrides. Same loader and rules as the bridge's
(firmware_bridge.settings); documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from firmware_bridge.errors import ConfigError
from firmware_bridge.mqtt_link import BrokerAddress, parse_broker_url
from firmware_bridge.settings import (
    default_bridge_id,
    default_data_dir,
    env_flag,
    find_config_file,
    read_secret,
    read_toml,
    table_of,
    typed_value,
    where,
)
from firmware_bridge.topics import NAME_RE
from garden.influx import InfluxSettings

# The [influx] keys refused with a hint: their values come from GARDEN_INFLUX_<KEY>(_FILE) only.
INFLUX_SECRET_KEYS = ("token", "password", "read_token", "read_password")


@dataclass(frozen=True, slots=True)
class HubSettings:
    garden: str = "demo"
    hub_id: str = field(default_factory=default_bridge_id)
    broker: BrokerAddress = field(default_factory=lambda: BrokerAddress("localhost", 1883))
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    data_dir: Path = field(default_factory=default_data_dir)
    batch_size: int = 5000
    batch_ms: int = 200
    spool_max_rows: int = 2_000_000
    session_expiry_s: int = 7 * 86_400
    shared_group: str = ""  # "$share/<group>/..." subscriptions when set
    # A regional hub (`garden hub run --all-gardens`; a garden id of "+" is refused):
    # ingest every garden on the broker (garden/+/...), each point
    # tagged with the garden its topic names. ``garden`` is then the hub's own name
    # (its status topic and health points); no commons and no watch.
    all_gardens: bool = False
    status_interval_s: float = 10.0

    @property
    def spool_path(self) -> Path:
        return self.data_dir / "hub-spool.sqlite3"


def load_hub_settings(
    config_file: Path | None = None, env: Mapping[str, str] | None = None, **overrides: Any
) -> HubSettings:
    env = os.environ if env is None else env
    path = find_config_file(config_file)
    data = read_toml(path) if path is not None else {}
    garden_t, mqtt_t, influx_t, hub_t = (table_of(data, n) for n in ("garden", "mqtt", "influx", "hub"))
    known_influx = {"url", "database", "retention_policy", "username", "read_username", "org", "timeout_s"}
    for key in set(influx_t) - known_influx:
        if key in INFLUX_SECRET_KEYS:  # a secret never comes from the config file
            var = f"GARDEN_INFLUX_{key.upper()}"
            raise ConfigError(f"influx.{key}", f"secrets do not belong in the config file; set {var} or {var}_FILE")
        raise ConfigError(f"influx.{key}", f"unknown key; expected one of {sorted(known_influx)}")
    known_hub = {"id", "data_dir", "batch_size", "batch_ms", "spool_max_rows", "session_expiry_s",
                 "shared_group", "status_interval_s", "all_gardens"}  # fmt: skip
    for key in set(hub_t) - known_hub:
        raise ConfigError(f"hub.{key}", f"unknown key; expected one of {sorted(known_hub)}")

    url = env.get("GARDEN_MQTT_URL") or typed_value(mqtt_t, "mqtt", "url", str, "mqtt://localhost:1883")
    url_path = where(env, "GARDEN_MQTT_URL", "mqtt.url", "--mqtt", bool(overrides.get("mqtt_url")))
    broker = parse_broker_url(overrides.pop("mqtt_url", None) or url, url_path)
    username = env.get("GARDEN_MQTT_USERNAME") or typed_value(mqtt_t, "mqtt", "username", str, None)
    password = read_secret(env, "GARDEN_MQTT_PASSWORD")
    if "password" in mqtt_t:
        raise ConfigError(
            "mqtt.password",
            "secrets do not belong in the config file; set GARDEN_MQTT_PASSWORD or GARDEN_MQTT_PASSWORD_FILE",
        )
    if username or password:
        broker = BrokerAddress(broker.host, broker.port, broker.tls, username, password)

    influx_url = overrides.pop("influx_url", None)
    influx_url_path = (
        "--influx" if influx_url else "GARDEN_INFLUX_URL" if env.get("GARDEN_INFLUX_URL") else "influx.url"
    )
    influx_url = influx_url or env.get("GARDEN_INFLUX_URL") or typed_value(influx_t, "influx", "url", str, None)
    if influx_url and "@" in influx_url:
        # Never used to log in (urllib3 ignores it), and shown by every message that names the server.
        raise ConfigError(
            influx_url_path,
            "a user or password does not belong in the URL; set GARDEN_INFLUX_USERNAME and "
            "GARDEN_INFLUX_PASSWORD_FILE (or the READ ones, or a token) instead",
        )
    if influx_url and (urlsplit(influx_url).scheme not in ("http", "https") or not urlsplit(influx_url).hostname):
        # Not echoed: a malformed URL may still hold a secret.
        raise ConfigError(influx_url_path, "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8086")
    influx = InfluxSettings(
        url=influx_url or "http://127.0.0.1:8086",
        database=env.get("GARDEN_INFLUX_DATABASE") or typed_value(influx_t, "influx", "database", str, "garden"),
        retention_policy=typed_value(influx_t, "influx", "retention_policy", str, ""),
        token=read_secret(env, "GARDEN_INFLUX_TOKEN"),
        username=env.get("GARDEN_INFLUX_USERNAME") or typed_value(influx_t, "influx", "username", str, None),
        password=read_secret(env, "GARDEN_INFLUX_PASSWORD"),
        org=env.get("GARDEN_INFLUX_ORG") or typed_value(influx_t, "influx", "org", str, "garden"),
        timeout_s=typed_value(influx_t, "influx", "timeout_s", float, 10.0),
        read_token=read_secret(env, "GARDEN_INFLUX_READ_TOKEN"),
        read_username=env.get("GARDEN_INFLUX_READ_USERNAME")
        or typed_value(influx_t, "influx", "read_username", str, None),
        read_password=read_secret(env, "GARDEN_INFLUX_READ_PASSWORD"),
    )
    for user, secret in (("USERNAME", "PASSWORD"), ("READ_USERNAME", "READ_PASSWORD")):
        name = "GARDEN_INFLUX_" + secret
        if (env.get(name) or env.get(f"{name}_FILE")) and not getattr(influx, user.lower()):
            raise ConfigError(name, f"a password without a user: set GARDEN_INFLUX_{user} too")
    data_dir = env.get("GARDEN_DATA_DIR") or typed_value(hub_t, "hub", "data_dir", str, None)
    all_gardens = env_flag(env, "GARDEN_HUB_ALL_GARDENS")
    values: dict[str, Any] = {
        "garden": env.get("GARDEN_GARDEN") or typed_value(garden_t, "garden", "id", str, "demo"),
        "hub_id": env.get("GARDEN_HUB_ID") or typed_value(hub_t, "hub", "id", str, None),
        "broker": broker,
        "influx": influx,
        "data_dir": Path(data_dir) if data_dir else None,
        "batch_size": typed_value(hub_t, "hub", "batch_size", int, 5000),
        "batch_ms": typed_value(hub_t, "hub", "batch_ms", int, 200),
        "spool_max_rows": typed_value(hub_t, "hub", "spool_max_rows", int, 2_000_000),
        "session_expiry_s": typed_value(hub_t, "hub", "session_expiry_s", int, 7 * 86_400),
        "shared_group": typed_value(hub_t, "hub", "shared_group", str, ""),
        "status_interval_s": typed_value(hub_t, "hub", "status_interval_s", float, 10.0),
        "all_gardens": typed_value(hub_t, "hub", "all_gardens", bool, False) if all_gardens is None else all_gardens,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = HubSettings(**{k: v for k, v in values.items() if v is not None})
    if not NAME_RE.fullmatch(settings.garden):
        garden_key = where(env, "GARDEN_GARDEN", "garden.id", "--garden", bool(overrides.get("garden")))
        raise ConfigError(garden_key, "must be 1-32 letters, digits, '-' or '_'")
    if not NAME_RE.fullmatch(settings.hub_id):
        raise ConfigError(where(env, "GARDEN_HUB_ID", "hub.id"), "must be 1-32 letters, digits, '-' or '_'")
    if not 1 <= settings.batch_size <= 100_000:
        raise ConfigError("hub.batch_size", "must be 1-100000")
    if not 10 <= settings.batch_ms <= 60_000:
        raise ConfigError("hub.batch_ms", "must be 10-60000 ms")
    if settings.shared_group and not NAME_RE.fullmatch(settings.shared_group):
        raise ConfigError("hub.shared_group", "must be 1-32 letters, digits, '-' or '_'")
    if settings.spool_max_rows < 100:
        raise ConfigError("hub.spool_max_rows", "must be at least 100")
    if not 60 <= settings.session_expiry_s <= 2**32 - 1:  # MQTT v5: a 32-bit count of seconds
        raise ConfigError("hub.session_expiry_s", "must be 60-4294967295 seconds (the default is 604800, a week)")
    if not settings.status_interval_s > 0:
        raise ConfigError("hub.status_interval_s", "must be more than 0 seconds")
    if not settings.influx.timeout_s > 0:
        raise ConfigError("influx.timeout_s", "must be more than 0 seconds")
    return settings


def influx_admin_settings(influx: InfluxSettings, env: Mapping[str, str] | None = None) -> InfluxSettings | None:
    """``influx`` with an InfluxDB 1.x admin as its only credential, from
    ``GARDEN_INFLUX_ADMIN_USERNAME`` and ``GARDEN_INFLUX_ADMIN_PASSWORD`` (or ``_FILE``);
    None when they are not set. For `garden influx users` and `garden hub init`: the
    only commands that need more than the hub's own credentials."""
    env = os.environ if env is None else env
    username = env.get("GARDEN_INFLUX_ADMIN_USERNAME")
    password = read_secret(env, "GARDEN_INFLUX_ADMIN_PASSWORD")
    if not username and not password:
        return None
    if not username:
        raise ConfigError(
            "GARDEN_INFLUX_ADMIN_PASSWORD", "a password without a user: set GARDEN_INFLUX_ADMIN_USERNAME too"
        )
    if not password:
        raise ConfigError(
            "GARDEN_INFLUX_ADMIN_USERNAME",
            "no password: set GARDEN_INFLUX_ADMIN_PASSWORD or GARDEN_INFLUX_ADMIN_PASSWORD_FILE",
        )
    return replace(influx, token=None, username=username, password=password,
                   read_token=None, read_username=None, read_password=None)  # fmt: skip
