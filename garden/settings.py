"""Hub settings: the ``[garden]``, ``[mqtt]``, ``[influx]`` and ``[hub]`` tables of
garden.toml, with ``GARDEN_*`` overrides. Same loader and rules as the bridge's
(firmware_bridge.settings); documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.mqtt_link import BrokerAddress, parse_broker_url
from firmware_bridge.settings import (
    default_bridge_id,
    default_data_dir,
    find_config_file,
    read_secret,
    read_toml,
    table_of,
    typed_value,
)
from firmware_bridge.topics import NAME_RE
from garden.influx import InfluxSettings


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
    known_influx = {"url", "database", "retention_policy", "username", "org", "timeout_s"}
    for key in set(influx_t) - known_influx:
        hint = " (secrets go in GARDEN_INFLUX_TOKEN or GARDEN_INFLUX_PASSWORD)" if key in ("token", "password") else ""
        raise ConfigError(f"influx.{key}", f"unknown key{hint}; expected one of {sorted(known_influx)}")
    known_hub = {"id", "data_dir", "batch_size", "batch_ms", "spool_max_rows", "session_expiry_s",
                 "shared_group", "status_interval_s"}  # fmt: skip
    for key in set(hub_t) - known_hub:
        raise ConfigError(f"hub.{key}", f"unknown key; expected one of {sorted(known_hub)}")

    url = env.get("GARDEN_MQTT_URL") or typed_value(mqtt_t, "mqtt", "url", str, "mqtt://localhost:1883")
    broker = parse_broker_url(overrides.pop("mqtt_url", None) or url)
    username = env.get("GARDEN_MQTT_USERNAME") or typed_value(mqtt_t, "mqtt", "username", str, None)
    password = read_secret(env, "GARDEN_MQTT_PASSWORD")
    if username or password:
        broker = BrokerAddress(broker.host, broker.port, broker.tls, username, password)

    influx = InfluxSettings(
        url=overrides.pop("influx_url", None)
        or env.get("GARDEN_INFLUX_URL")
        or typed_value(influx_t, "influx", "url", str, "http://127.0.0.1:8086"),
        database=env.get("GARDEN_INFLUX_DATABASE") or typed_value(influx_t, "influx", "database", str, "garden"),
        retention_policy=typed_value(influx_t, "influx", "retention_policy", str, ""),
        token=read_secret(env, "GARDEN_INFLUX_TOKEN"),
        username=env.get("GARDEN_INFLUX_USERNAME") or typed_value(influx_t, "influx", "username", str, None),
        password=read_secret(env, "GARDEN_INFLUX_PASSWORD"),
        org=env.get("GARDEN_INFLUX_ORG") or typed_value(influx_t, "influx", "org", str, "garden"),
        timeout_s=typed_value(influx_t, "influx", "timeout_s", float, 10.0),
    )
    data_dir = env.get("GARDEN_DATA_DIR") or typed_value(hub_t, "hub", "data_dir", str, None)
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
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = HubSettings(**{k: v for k, v in values.items() if v is not None})
    if not NAME_RE.fullmatch(settings.garden):
        raise ConfigError("garden.id", "must be 1-32 letters, digits, '-' or '_'")
    if not NAME_RE.fullmatch(settings.hub_id):
        raise ConfigError("hub.id", "must be 1-32 letters, digits, '-' or '_'")
    if not 1 <= settings.batch_size <= 100_000:
        raise ConfigError("hub.batch_size", "must be 1-100000")
    if not 10 <= settings.batch_ms <= 60_000:
        raise ConfigError("hub.batch_ms", "must be 10-60000 ms")
    if settings.shared_group and not NAME_RE.fullmatch(settings.shared_group):
        raise ConfigError("hub.shared_group", "must be 1-32 letters, digits, '-' or '_'")
    return settings
