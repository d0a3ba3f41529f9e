"""The MQTT payloads the bridge sends and reads (docs/mqtt.md). Pure code.

- telemetry: one reading, JSON, built once and spooled as bytes;
- node and bridge status: retained JSON;
- node config: retained JSON written by volunteers, validated here;
- Home Assistant device discovery: retained JSON, one message per node.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware_bridge import __version__
from firmware_bridge.calibration import (
    DEFAULT_CALIBRATION,
    Calibrated,
    Calibration,
    parse_calibration,
    sensor_kind,
)
from firmware_bridge.errors import ConfigError
from firmware_bridge.topics import NAME_RE, Topics

INTERVAL_MIN_S = 1
INTERVAL_MAX_S = 86_400


def compact_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def telemetry_payload(
    *,
    node: str,
    boot: int,
    seq: int,
    ts_ms: int,
    reading: Calibrated,
    bridge: str,
    bed: str | None,
) -> bytes:
    """One reading. ``ts`` is the bridge's receive time in epoch milliseconds.

    ``(node, boot, seq)`` names the reading; ``ts`` is what the hub writes it
    at, so a replay of these same bytes overwrites instead of duplicating.
    """
    body: dict[str, Any] = {
        "ts": ts_ms,
        "node": node,
        "boot": boot,
        "seq": seq,
        "raw": reading.raw,
        "values": reading.values,
        "bridge": bridge,
    }
    if reading.errors:
        body["errors"] = reading.errors
    if bed is not None:
        body["bed"] = bed
    return compact_json(body)


def status_payload(state: str, **fields: Any) -> bytes:
    return compact_json({"state": state, **{k: v for k, v in fields.items() if v is not None}})


# ------------------------------------------------------------ node config


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What volunteers set for a node on its retained config topic."""

    bed: str | None = None
    interval_s: int | None = None
    retired: bool = False
    calibration: Calibration = DEFAULT_CALIBRATION


def parse_node_config(payload: bytes, path: str = "config") -> NodeConfig:
    """Validate a config payload; ConfigError names the bad key's path.

    An empty payload (a cleared retained message) is the default config.
    """
    if not payload.strip():
        return NodeConfig()
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ConfigError(path, f"not valid JSON: {str(err) or type(err).__name__}") from None
    if not isinstance(obj, Mapping):
        raise ConfigError(path, "must be a JSON object")
    unknown = set(obj) - {"bed", "interval_s", "retired", "calibration"}
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "unknown key")
    bed = obj.get("bed")
    if bed is not None and not (isinstance(bed, str) and NAME_RE.fullmatch(bed)):
        raise ConfigError(f"{path}.bed", "must be 1-32 letters, digits, '-' or '_'")
    interval = obj.get("interval_s")
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int) or not INTERVAL_MIN_S <= interval <= INTERVAL_MAX_S
    ):
        raise ConfigError(f"{path}.interval_s", f"must be a whole number of seconds, {INTERVAL_MIN_S}-{INTERVAL_MAX_S}")
    retired = obj.get("retired", False)
    if not isinstance(retired, bool):
        raise ConfigError(f"{path}.retired", "must be true or false")
    calibration = parse_calibration(obj.get("calibration"), f"{path}.calibration")
    return NodeConfig(bed, interval, retired, calibration)


# -------------------------------------------------- Home Assistant discovery

# kind -> (name, device_class, unit, field in values[key])
_HA_SENSORS: dict[str, list[tuple[str, str | None, str, str]]] = {
    "sm": [("Soil moisture", "moisture", "%", "vwc_pct")],
    "st": [("Soil temperature", "temperature", "°C", "temp_c")],
    "at": [("Air temperature", "temperature", "°C", "temp_c")],
    "rh": [("Air humidity", "humidity", "%", "rh_pct")],
    "lx": [("Light", "illuminance", "lx", "lux")],
    "tk": [
        ("Tank distance", "distance", "cm", "distance_cm"),
        ("Tank water", "volume_storage", "L", "litres"),
    ],
    "bt": [("Battery", "voltage", "V", "battery_v")],
}


def ha_discovery(
    topics: Topics,
    *,
    node: str,
    bridge: str,
    sensors: tuple[str, ...],
    fw: str | None,
) -> tuple[str, bytes]:
    """Home Assistant device-based discovery for one node: (topic, payload).

    One retained message describes the node as a device with one component
    per sensor, all reading the telemetry topic. The node is available when
    both the bridge and the node say "online".
    """
    uid = f"garden_{topics.garden}_{node}"
    components: dict[str, dict[str, Any]] = {}
    for key in sensors:
        for name, device_class, unit, field_name in _HA_SENSORS.get(sensor_kind(key), []):
            index = key[2:]
            cid = f"{key}_{field_name}"
            component: dict[str, Any] = {
                "p": "sensor",
                "name": f"{name} {int(index) + 1}" if index not in ("", "0") else name,
                "unique_id": f"{uid}_{cid}",
                "unit_of_measurement": unit,
                "state_class": "measurement",
                # value_json['values'], not value_json.values: Jinja would
                # find the dict's .values method first.
                "value_template": f"{{{{ value_json['values']['{key}']['{field_name}'] }}}}",
            }
            if device_class is not None:
                component["device_class"] = device_class
            components[cid] = component
    payload = {
        "dev": {
            "ids": [uid],
            "name": f"Garden node {node}",
            "mf": "Garden Commons",
            "mdl": "garden node",
            **({"sw": fw} if fw else {}),
            "via_device": f"garden_{topics.garden}_bridge_{bridge}",
        },
        "o": {"name": "garden-commons", "sw": __version__},
        "cmps": components,
        "state_topic": topics.telemetry(node),
        "qos": 1,
        "availability": [
            {"topic": topics.bridge_status(bridge), "value_template": "{{ value_json.state }}"},
            {"topic": topics.node_status(node), "value_template": "{{ value_json.state }}"},
        ],
        "availability_mode": "all",
    }
    return topics.ha_discovery(node), compact_json(payload)
