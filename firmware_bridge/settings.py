"""Bridge settings: a TOML file plus ``GARDEN_*`` environment overrides.

Loaded once, by the composition root, and validated whole; a bad value is a
:class:`ConfigError` naming its key's path. Stdlib only, so the bridge runs
on a small Pi with nothing but pyserial and paho-mqtt. The keys are listed
in docs/configuration.md.

Secrets (the MQTT password) come from ``GARDEN_MQTT_PASSWORD`` or from the
file named by ``GARDEN_MQTT_PASSWORD_FILE``; never from the config file.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError
from firmware_bridge.mqtt_link import BrokerAddress, parse_broker_url
from firmware_bridge.spool import OverflowPolicy
from firmware_bridge.topics import NAME_RE

BY_ID_DIR = Path("/dev/serial/by-id")


def default_data_dir() -> Path:
    env = os.environ.get("GARDEN_DATA_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "garden-commons"


def default_bridge_id() -> str:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:32].strip("-")
    return name or "bridge"


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    garden: str = "demo"
    bridge_id: str = field(default_factory=default_bridge_id)
    broker: BrokerAddress = field(default_factory=lambda: BrokerAddress("localhost", 1883))
    ports: tuple[str, ...] = ()
    baudrate: int = 115200
    spool_path: Path = field(default_factory=lambda: default_data_dir() / "bridge-spool.sqlite3")
    spool_max_rows: int = 200_000
    spool_overflow: OverflowPolicy = OverflowPolicy.DROP_OLDEST
    spool_synchronous: str = "normal"
    publish_window: int = 200
    keepalive_s: int = 30
    status_interval_s: float = 60.0
    command_timeout_s: float = 5.0
    command_retries: int = 3

    def resolved_ports(self) -> tuple[str, ...]:
        """The configured ports, or every ``/dev/serial/by-id`` device when none are."""
        if self.ports:
            return self.ports
        if BY_ID_DIR.is_dir():
            return tuple(str(p) for p in sorted(BY_ID_DIR.iterdir()))
        return ()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), f"not valid TOML: {err}") from None


def find_config_file(explicit: Path | None = None) -> Path | None:
    """``--config``, else ``GARDEN_CONFIG``, else ./garden.toml, else the user's."""
    if explicit is not None:
        return explicit
    env = os.environ.get("GARDEN_CONFIG")
    if env:
        return Path(env)
    for candidate in (
        Path("garden.toml"),
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "garden" / "garden.toml",
        Path("/etc/garden/garden.toml"),
    ):
        if candidate.is_file():
            return candidate
    return None


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """``NAME`` from the environment, or the contents of the file ``NAME_FILE`` names."""
    if env.get(name):
        return env[name]
    file_name = env.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as err:
            raise ConfigError(
                f"{name}_FILE",
                f"cannot read {file_name}: {err.strerror}; point it at a readable file holding the secret, "
                f"or set {name} instead",
            ) from None
        except UnicodeDecodeError:
            # Never repeat the bytes: they are someone's secret.
            raise ConfigError(
                f"{name}_FILE", f"{file_name} is not UTF-8 text; write the secret into it as plain text"
            ) from None
    return None


def where(env: Mapping[str, str], var: str, key: str, flag: str = "", overridden: bool = False) -> str:
    """The name to give in an error about a setting: the CLI flag, the variable or the
    config key, whichever the value came from (flags win over variables, over the file)."""
    if overridden and flag:
        return flag
    return var if env.get(var) else key


def table_of(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise ConfigError(name, "must be a table")
    return value


def env_flag(
    env: Mapping[str, str], name: str, problem: str = "must be true or false (1/0, yes/no, on/off)"
) -> bool | None:
    """A yes/no ``GARDEN_*`` variable; None when unset. Anything else is a ConfigError naming it."""
    text = env.get(name, "").strip().lower()
    if not text:
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, problem)


def typed_value(table: Mapping[str, Any], path: str, key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)):
        raise ConfigError(f"{path}.{key}", f"must be {kind.__name__}, got {value!r}")
    return value


def load_bridge_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> BridgeSettings:
    """Settings from the file, then the environment, then ``overrides`` (CLI flags)."""
    env = os.environ if env is None else env
    path = find_config_file(config_file)
    data = read_toml(path) if path is not None else {}
    sections = {
        "garden",
        "mqtt",
        "bridge",
        "hub",
        "influx",
        "grafana",
        "watch",
        "notify",
        "people",
        "members",
        "commons",
        "bridges",  # each bridge's nodes, for the broker's ACL (garden secure init)
    }
    unknown = set(data) - sections
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown section; expected one of {sorted(sections)}")
    garden_t, mqtt_t, bridge_t = (table_of(data, n) for n in ("garden", "mqtt", "bridge"))
    known_bridge = {
        "id", "ports", "baudrate", "spool_path", "spool_max_rows", "spool_overflow",
        "spool_synchronous", "publish_window", "keepalive_s", "status_interval_s",
        "command_timeout_s", "command_retries",
    }  # fmt: skip
    for key in set(bridge_t) - known_bridge:
        raise ConfigError(f"bridge.{key}", f"unknown key; expected one of {sorted(known_bridge)}")

    garden = env.get("GARDEN_GARDEN") or typed_value(garden_t, "garden", "id", str, "demo")
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
        broker = BrokerAddress(
            broker.host, broker.port, broker.tls, username or broker.username, password or broker.password
        )

    ports_env = env.get("GARDEN_BRIDGE_PORTS")
    ports = [p for p in ports_env.split(",") if p] if ports_env else typed_value(bridge_t, "bridge", "ports", list, [])
    if not all(isinstance(p, str) and p for p in ports):
        raise ConfigError("bridge.ports", "must be a list of device paths")
    spool_path = env.get("GARDEN_BRIDGE_SPOOL") or typed_value(bridge_t, "bridge", "spool_path", str, None)
    overflow = typed_value(bridge_t, "bridge", "spool_overflow", str, "drop_oldest")
    try:
        overflow_policy = OverflowPolicy(overflow)
    except ValueError:
        raise ConfigError("bridge.spool_overflow", "must be 'drop_oldest' or 'drop_newest'") from None

    values: dict[str, Any] = {
        "garden": garden,
        "bridge_id": env.get("GARDEN_BRIDGE_ID") or typed_value(bridge_t, "bridge", "id", str, None),
        "broker": broker,
        "ports": tuple(ports),
        "baudrate": typed_value(bridge_t, "bridge", "baudrate", int, 115200),
        "spool_path": Path(spool_path) if spool_path else None,
        "spool_max_rows": typed_value(bridge_t, "bridge", "spool_max_rows", int, 200_000),
        "spool_overflow": overflow_policy,
        "spool_synchronous": typed_value(bridge_t, "bridge", "spool_synchronous", str, "normal"),
        "publish_window": typed_value(bridge_t, "bridge", "publish_window", int, 200),
        "keepalive_s": typed_value(bridge_t, "bridge", "keepalive_s", int, 30),
        "status_interval_s": typed_value(bridge_t, "bridge", "status_interval_s", float, 60.0),
        "command_timeout_s": typed_value(bridge_t, "bridge", "command_timeout_s", float, 5.0),
        "command_retries": typed_value(bridge_t, "bridge", "command_retries", int, 3),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    values = {k: v for k, v in values.items() if v is not None}
    settings = BridgeSettings(**values)
    _validate(
        settings,
        garden=where(env, "GARDEN_GARDEN", "garden.id", "--garden", bool(overrides.get("garden"))),
        bridge_id=where(env, "GARDEN_BRIDGE_ID", "bridge.id"),
    )
    return settings


def _validate(s: BridgeSettings, *, garden: str = "garden.id", bridge_id: str = "bridge.id") -> None:
    if not NAME_RE.fullmatch(s.garden):
        raise ConfigError(garden, "must be 1-32 letters, digits, '-' or '_'")
    if not NAME_RE.fullmatch(s.bridge_id):
        raise ConfigError(bridge_id, "must be 1-32 letters, digits, '-' or '_'")
    if s.spool_max_rows < 100:
        raise ConfigError("bridge.spool_max_rows", "must be at least 100")
    if s.spool_synchronous not in ("normal", "full"):
        raise ConfigError("bridge.spool_synchronous", "must be 'normal' or 'full'")
    if not 1 <= s.publish_window <= 10_000:
        raise ConfigError("bridge.publish_window", "must be 1-10000")
    if not 5 <= s.keepalive_s <= 3600:
        raise ConfigError("bridge.keepalive_s", "must be 5-3600 seconds")
    if s.baudrate <= 0:
        raise ConfigError("bridge.baudrate", "must be positive")
    if not s.command_timeout_s > 0:
        raise ConfigError("bridge.command_timeout_s", "must be more than 0 seconds")
    if s.command_retries < 1:
        raise ConfigError("bridge.command_retries", "must be at least 1")
    if not s.status_interval_s > 0:
        raise ConfigError("bridge.status_interval_s", "must be more than 0 seconds")
