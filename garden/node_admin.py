"""Looking after nodes through the broker: their retained status and config, and edits to it.

A node's config (bed, reading interval, retired, calibration) is the retained
message on ``Topics.node_config(node)`` (docs/configuration.md). An edit
reads the current config, changes one thing (the pure ``edit_*`` functions),
checks the result with the bridge's own validator (``parse_node_config``),
publishes it retained at QoS 1 and waits for the broker's PUBACK. Then it
publishes an event on ``Topics.event("config")`` that says who changed what,
for the commons' journal (the hub stores it as an ``event`` point).

Who: ``GARDEN_USER``, else ``[garden] user`` in the config file, else the
login name.
"""

from __future__ import annotations

import copy
import getpass
import json
import math
import operator
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.calibration import sensor_kind
from firmware_bridge.errors import BrokerUnreachable, ConfigError
from firmware_bridge.messages import INTERVAL_MAX_S, INTERVAL_MIN_S, compact_json, parse_node_config
from firmware_bridge.mqtt_link import BrokerAddress, connected_client, read_retained
from firmware_bridge.settings import find_config_file, read_toml, table_of
from firmware_bridge.topics import NAME_RE, Topics, check_name
from garden.errors import GardenError

PUBACK_TIMEOUT_S = 5.0
ADC_MAX_DEFAULT = 1023
MAX_TANK_DEPTH_CM = 600.0  # the reference ranger's reach (calibration.py)
MAX_LITRES_PER_CM = 10_000.0
MAX_OFFSET = 20.0


class NodeAdminError(GardenError):
    """An edit that cannot be made (a current config that is not JSON, a refused publish)."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the broker knows it: its retained status and config (raw objects)."""

    node: str
    status: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    config_problem: str | None = None  # why the retained config does not validate

    @property
    def bed(self) -> str | None:
        for source in (self.config, self.status):
            if source is not None and isinstance(source.get("bed"), str):
                return str(source["bed"])
        return None

    @property
    def retired(self) -> bool:
        return bool(self.config and self.config.get("retired") is True)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "bed": self.bed,
            "retired": self.retired,
            "status": self.status,
            "config": self.config,
            "config_problem": self.config_problem,
        }


@dataclass(frozen=True, slots=True)
class Edit:
    """A config change: the new config and what changed (``{key: {"from", "to"}}``)."""

    config: dict[str, Any]
    change: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


# ------------------------------------------------------------------ identity


def current_user(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Who is making a change: ``GARDEN_USER``, ``[garden] user`` in the config, the login name."""
    env = os.environ if env is None else env
    if env.get("GARDEN_USER"):
        return _check_user("GARDEN_USER", env["GARDEN_USER"])
    path = find_config_file(config_file)
    if path is not None:
        value = table_of(read_toml(path), "garden").get("user")
        if value is not None:
            if not isinstance(value, str):
                raise ConfigError("garden.user", f"must be str, got {value!r}")
            return _check_user("garden.user", value)
    try:
        return _check_user("login name", getpass.getuser())
    except (OSError, KeyError, ConfigError):  # no passwd entry, as in some containers
        return "unknown"


def _check_user(path: str, value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 64 or not value.isprintable():
        raise ConfigError(path, "must be 1-64 printable characters")
    return value


# ------------------------------------------------------------- the broker


def read_nodes(
    broker: BrokerAddress, topics: Topics, *, wait_s: float = 1.5, node: str | None = None
) -> dict[str, NodeView]:
    """Every node with a retained status or config (or just ``node``), by name."""
    if node is None:
        wanted: tuple[str, ...] = (topics.all_node_status, topics.all_node_configs)
    else:
        wanted = (topics.node_status(check_name("node", node)), topics.node_config(node))
    retained = read_retained(broker, wanted, wait_s=wait_s)
    statuses: dict[str, Mapping[str, Any]] = {}
    configs: dict[str, tuple[Mapping[str, Any] | None, str | None]] = {}
    for topic, payload in retained.items():
        name = topics.node_of(topic)
        if name is None or not payload:
            continue
        if topic == topics.node_status(name):
            body = _json_object(payload)
            if body is not None:
                statuses[name] = body
        elif topic == topics.node_config(name):
            configs[name] = _config_of(payload)
    views = {}
    for name in sorted(set(statuses) | set(configs)):
        config, problem = configs.get(name, (None, None))
        views[name] = NodeView(name, statuses.get(name), config, problem)
    return views


def _json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _config_of(payload: bytes) -> tuple[Mapping[str, Any] | None, str | None]:
    body = _json_object(payload)
    if body is None:
        return None, "not a JSON object"
    try:
        parse_node_config(payload)
    except ConfigError as err:
        return body, str(err)
    return body, None


def publish_confirmed(broker: BrokerAddress, messages: Sequence[tuple[str, bytes, bool]], *,
                      timeout_s: float = PUBACK_TIMEOUT_S) -> None:  # fmt: skip
    """Publish ``(topic, payload, retain)`` at QoS 1, one after another, each waiting for its PUBACK.

    Raises BrokerUnreachable when the broker does not answer, NodeAdminError
    when it refuses a message (MQTT v5 reason code, e.g. not authorised).
    """
    acks: dict[int, ReasonCode] = {}
    acked = threading.Condition()

    def on_publish(c: mqtt.Client, u: object, mid: int, reason: ReasonCode, p: object) -> None:
        with acked:
            acks[mid] = reason
            acked.notify_all()

    def setup(client: mqtt.Client) -> None:
        client.on_publish = on_publish

    with connected_client(broker, setup=setup, timeout_s=timeout_s) as client:
        for topic, payload, retain in messages:
            info = client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnreachable(repr(broker), f"publish to {topic}: {mqtt.error_string(info.rc)}")
            with acked:
                if not acked.wait_for(partial(operator.contains, acks, info.mid), timeout_s):
                    raise BrokerUnreachable(repr(broker), f"no PUBACK for {topic} within {timeout_s:g} s")
                reason = acks[info.mid]
            if reason.is_failure:
                raise NodeAdminError(
                    f"the broker refused {topic}: {reason} (may this user write it? check the broker's ACL)"
                )


def apply_edit(
    broker: BrokerAddress,
    topics: Topics,
    node: str,
    edit: Edit,
    *,
    who: str,
    now_ms: int,
) -> dict[str, Any]:
    """Publish ``edit.config`` retained, then the event recording it. Returns the event."""
    payload = compact_json(edit.config)
    parse_node_config(payload, f"node {node} config")  # never publish what the bridge would refuse
    event: dict[str, Any] = {"ts": now_ms, "type": "config", "node": node}
    bed = edit.config.get("bed")
    if isinstance(bed, str):
        event["bed"] = bed
    event |= {"who": who, "change": edit.change, "text": edit.summary}
    publish_confirmed(broker, [(topics.node_config(node), payload, True)])
    publish_confirmed(broker, [(topics.event("config"), compact_json(event), False)])
    return event


# ------------------------------------------------------------ pure edits


def _changed(before: Mapping[str, Any], after: Mapping[str, Any], summary: str) -> Edit:
    change = {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            change[key] = {"from": before.get(key), "to": after.get(key)}
    if "calibration" in change:  # name the sensors, not the whole object
        old_cal, new_cal = before.get("calibration") or {}, after.get("calibration") or {}
        del change["calibration"]
        for sensor in sorted(set(old_cal) | set(new_cal)):
            if old_cal.get(sensor) != new_cal.get(sensor):
                change[f"calibration.{sensor}"] = {"from": old_cal.get(sensor), "to": new_cal.get(sensor)}
    return Edit(dict(after), change, summary)


def edit_assign(config: Mapping[str, Any], node: str, bed: str | None) -> Edit:
    """Put the node in ``bed`` (None: in no bed)."""
    after = dict(config)
    if bed is None:
        after.pop("bed", None)
        return _changed(config, after, f"node {node} taken out of its bed")
    after["bed"] = check_name("bed", bed)
    return _changed(config, after, f"node {node} assigned to bed {bed}")


def edit_interval(config: Mapping[str, Any], node: str, seconds: int) -> Edit:
    if isinstance(seconds, bool) or not INTERVAL_MIN_S <= seconds <= INTERVAL_MAX_S:
        raise ConfigError("interval_s", f"must be a whole number of seconds, {INTERVAL_MIN_S}-{INTERVAL_MAX_S}")
    after = {**config, "interval_s": seconds}
    return _changed(config, after, f"node {node} reads every {seconds} s")


def edit_retire(config: Mapping[str, Any], node: str, retired: bool = True) -> Edit:
    after = dict(config)
    if retired:
        after["retired"] = True
    else:
        after.pop("retired", None)
    return _changed(config, after, f"node {node} {'retired' if retired else 'back in service'}")


def parse_interval(text: str) -> int:
    """Seconds, as ``600`` or a duration like ``10m``; ValueError when neither."""
    from garden.readings import parse_duration

    text = text.strip()
    seconds = int(text) if text.isdigit() else parse_duration(text)
    if not INTERVAL_MIN_S <= seconds <= INTERVAL_MAX_S:
        raise ValueError(f"{text!r}: the interval must be {INTERVAL_MIN_S}-{INTERVAL_MAX_S} seconds")
    return seconds


def edit_calibration(
    config: Mapping[str, Any],
    node: str,
    sensor: str,
    values: Mapping[str, Any],
) -> Edit:
    """Set calibration keys of one sensor, keeping its others.

    ``values``: for ``sm*`` any of ``dry``, ``wet`` (ADC counts), or ``poly``
    (a soil calibration: coefficients of a polynomial from raw counts to % VWC,
    lowest power first, which replaces the two points; an empty list removes
    it); for ``tk*``
    ``depth_cm``, ``litres_per_cm``; for ``st*``/``at*`` ``offset_c``, for
    ``rh*`` ``offset_pct``. Raises ConfigError naming the key for a value no
    probe could have.
    """
    if not values:
        raise ConfigError(
            "calibration", "nothing to set: give --dry/--wet, --tank-depth-cm/--litres-per-cm or --offset"
        )
    if not NAME_RE.fullmatch(sensor) or len(sensor) > 16:
        raise ConfigError("--sensor", f"{sensor!r} is not a sensor key like sm0 or tk0")
    kind = sensor_kind(sensor)
    allowed = {
        "sm": {"dry", "wet", "poly"},
        "tk": {"depth_cm", "litres_per_cm"},
        "st": {"offset_c"},
        "at": {"offset_c"},
        "rh": {"offset_pct"},
    }.get(kind)
    if allowed is None:
        raise ConfigError(f"calibration.{sensor}", f"no calibration applies to sensor kind {kind!r}")
    wrong = sorted(set(values) - allowed)
    if wrong:
        raise ConfigError(f"calibration.{sensor}.{wrong[0]}", f"does not apply to {sensor}; it takes {sorted(allowed)}")
    calibration = copy.deepcopy(dict(config.get("calibration") or {}))
    spec = dict(calibration.get(sensor) or {})
    spec.update(values)
    here = f"calibration.{sensor}"
    if kind == "sm":
        adc_max = spec.get("adc_max", ADC_MAX_DEFAULT)
        if "poly" in values:
            _check_poly(f"{here}.poly", list(values["poly"]), adc_max)
            if not values["poly"]:
                spec.pop("poly")
        for key in ("dry", "wet"):
            if key in spec and not 0 < spec[key] < adc_max:
                raise ConfigError(f"{here}.{key}", f"must be ADC counts between 0 and {adc_max}, got {spec[key]:g}")
        if "dry" in spec and "wet" in spec and spec["dry"] == spec["wet"]:
            raise ConfigError(here, "dry and wet counts must differ")
    elif kind == "tk":
        reach = spec.get("max_range_cm", MAX_TANK_DEPTH_CM)
        if "depth_cm" in spec and not 0 < spec["depth_cm"] <= reach:
            raise ConfigError(f"{here}.depth_cm", f"must be more than 0 and at most {reach:g} cm (the ranger's reach)")
        if "litres_per_cm" in spec and not 0 < spec["litres_per_cm"] <= MAX_LITRES_PER_CM:
            raise ConfigError(f"{here}.litres_per_cm", f"must be more than 0 and at most {MAX_LITRES_PER_CM:g}")
    else:
        for key, value in spec.items():
            if not -MAX_OFFSET <= value <= MAX_OFFSET:
                raise ConfigError(f"{here}.{key}", f"must be between -{MAX_OFFSET:g} and {MAX_OFFSET:g}")
    calibration[sensor] = {k: _plain(v) for k, v in spec.items()}
    after = {**config, "calibration": calibration}
    shown = ", ".join(f"{k}={_plain(v)}" for k, v in sorted(values.items()))
    return _changed(config, after, f"node {node} {sensor} calibrated: {shown}")


def _check_poly(path: str, coefficients: list[Any], adc_max: int) -> None:
    """A soil calibration must give a plausible % VWC over the probe's working range."""
    if len(coefficients) > 6 or not all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in coefficients
    ):
        raise ConfigError(path, "must be at most 6 finite numbers, lowest power first")
    if not coefficients:
        return
    # A capacitive v1.2 probe on a 10-bit ADC reads about 260 counts in saturated
    # soil and 520 in air-dry soil (calibration.py): 25-60 % of full scale.
    for counts in range(int(adc_max * 0.25), int(adc_max * 0.6) + 1, max(1, adc_max // 50)):
        vwc = sum(c * counts**i for i, c in enumerate(coefficients))
        if not -30.0 <= vwc <= 120.0:
            raise ConfigError(
                path, f"gives {vwc:.3g} % VWC at {counts} counts: check the coefficients (lowest power first)"
            )


def _plain(value: Any) -> Any:
    """530.0 -> 530, so the retained JSON reads as a person wrote it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def current_config(view: NodeView | None, topics: Topics, node: str) -> dict[str, Any]:
    """The config to edit: the node's retained one, or ``{}`` when it has none."""
    if view is None or view.config is None:
        if view is not None and view.config_problem:
            raise NodeAdminError(
                f"the retained config of node {node} is {view.config_problem}: replace it with "
                f"mosquitto_pub -r -q 1 -t '{topics.node_config(node)}' -m '{{}}' and edit again"
            )
        return {}
    return dict(view.config)
