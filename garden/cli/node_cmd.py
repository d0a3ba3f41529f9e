"""``garden node ...``: see the nodes, and change their retained config on the broker."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from firmware_bridge.errors import BridgeError, ConfigError
from firmware_bridge.topics import NAME_RE, Topics
from garden.cli._shared import (
    EXIT_USAGE,
    ConfigOpt,
    GardenOpt,
    InfluxOpt,
    JsonOpt,
    MqttOpt,
    WaitOpt,
    ask_hub,
    console,
    emit,
    fail,
    hub_settings,
)
from garden.errors import GardenError
from garden.garden_status import format_age, natural_key
from garden.node_admin import Edit, NodeView

node_app = typer.Typer(
    help="The sensor nodes: list, show, and change their bed, interval, calibration or retirement.",
    no_args_is_help=True,
)

NodeArg = Annotated[str, typer.Argument(help="The node's id, as in `garden node list`.")]
NewOpt = Annotated[
    bool, typer.Option("--new", help="Configure a node that has not reported yet (no status on the broker).")
]


def _check_node(node: str) -> None:
    if not NAME_RE.fullmatch(node):
        fail(f"{node!r} is not a node id: 1-32 letters, digits, '-' or '_'", EXIT_USAGE)


def _read(settings: Any, topics: Topics, wait: float, node: str | None = None) -> dict[str, NodeView]:
    from garden.node_admin import read_nodes

    try:
        return read_nodes(settings.broker, topics, wait_s=wait, node=node)
    except BridgeError as err:
        fail(str(err))


def _ms_age(value: Any, now_ms: int) -> str:
    return format_age(now_ms - value) if isinstance(value, int) and not isinstance(value, bool) else ""


def _interval(view: NodeView) -> str:
    wanted = (view.config or {}).get("interval_s")
    actual = (view.status or {}).get("interval_s")
    if wanted is not None and actual is not None and wanted != actual:
        command = (view.status or {}).get("command") or {}
        state = f", {command['state']}" if isinstance(command, dict) and command.get("state") else ""
        return f"{actual} s (config: {wanted} s{state})"
    shown = actual if actual is not None else wanted
    return f"{shown} s" if shown is not None else ""


# ------------------------------------------------------------------ reading


@node_app.command("list")
def node_list(
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the garden's nodes from their retained status and config: state, bed, interval, last seen."""
    settings = hub_settings(config, mqtt_url=mqtt, garden=garden)
    views = _read(settings, Topics(settings.garden), wait)
    if as_json:
        print(json.dumps({"garden": settings.garden, "nodes": [v.to_json() for v in views.values()]}, indent=2))
        return
    if not views:
        console.print(f"No node has reported or been configured in garden {settings.garden!r} on {settings.broker!r}.")
        return
    now_ms = int(time.time() * 1000)
    table = Table(title=f"Nodes of garden {settings.garden}")
    for column in ("node", "state", "bed", "interval", "last seen", "fw", "battery", "config"):
        table.add_column(column)
    for name in sorted(views, key=natural_key):
        v = views[name]
        status = v.status or {}
        battery = status.get("battery_v")
        state = "retired" if v.retired else str(status.get("state", "never seen"))
        table.add_row(
            name,
            Text(state, style={"online": "green", "offline": "red"}.get(state, "dim")),
            v.bed or "",
            _interval(v),
            _ms_age(status.get("last_seen"), now_ms),
            str(status.get("fw") or ""),
            f"{battery:.2f} V" if isinstance(battery, int | float) else "",
            Text(f"invalid: {v.config_problem}", style="red") if v.config_problem else ("set" if v.config else ""),
        )
    console.print(table)


@node_app.command("show")
def node_show(
    node: NodeArg,
    mqtt: MqttOpt = None,
    influx: InfluxOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one node: its retained status and config, and the newest reading of each sensor."""
    from garden.influx import Influx
    from garden.readings import latest_per_sensor

    _check_node(node)
    settings = hub_settings(config, mqtt_url=mqtt, influx_url=influx, garden=garden)
    view = _read(settings, Topics(settings.garden), wait, node).get(node)
    now_ms = int(time.time() * 1000)
    client = Influx(settings.influx)
    readings_problem = None
    try:
        latest = latest_per_sensor(client, settings.garden, node, now_ms=now_ms)
    except GardenError as err:
        latest, readings_problem = [], str(err)
    finally:
        client.close()
    if view is None and not latest:
        fail(
            f"garden {settings.garden!r} has no node {node!r} (no status or config on the broker, "
            "no readings in 30 days): `garden node list` shows the nodes",
            EXIT_USAGE,
        )
    if as_json:
        body = (view or NodeView(node)).to_json() | {
            "garden": settings.garden,
            "readings": [r.to_json() for r in latest],
            "readings_problem": readings_problem,
        }
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return
    status = (view.status if view else None) or {}
    conf = (view.config if view else None) or {}
    table = Table(title=f"Node {node} ({settings.garden})", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("state", "retired" if view and view.retired else str(status.get("state", "never seen"))),
        ("bed", (view.bed if view else None) or "(none)"),
        ("interval", _interval(view) if view else ""),
        ("last seen", _ms_age(status.get("last_seen"), now_ms)),
    ]
    for key in ("bridge", "port", "fw", "sensors", "boot", "seq", "lost", "reboots", "readings", "battery_v"):
        if key in status:
            value = status[key]
            rows.append((key, ", ".join(value) if isinstance(value, list) else str(value)))
    if conf.get("calibration"):
        rows.append(("calibration", json.dumps(conf["calibration"], separators=(", ", ": "))))
    if view and view.config_problem:
        rows.append(("config problem", view.config_problem))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if readings_problem:
        console.print(f"[yellow]readings unavailable:[/yellow] {readings_problem}", highlight=False)
    elif latest:
        readings = Table(title="Newest reading per sensor")
        for column in ("sensor", "measurement", "value", "raw", "error", "age"):
            readings.add_column(column)
        for r in latest:
            readings.add_row(
                r.sensor,
                r.measurement,
                "" if r.value is None else f"{r.value:g} {r.unit}".strip(),
                "" if r.raw is None else f"{r.raw:g}",
                Text(r.error or "", style="red"),
                format_age(now_ms - r.time_ms),
            )
        console.print(readings)
    else:
        console.print("No readings in the last 30 days.")


# ------------------------------------------------------------------ editing


def _edit(
    node: str,
    make: Callable[[dict[str, Any]], Edit],
    *,
    mqtt: str | None,
    garden: str | None,
    wait: float,
    config: Any,
    new: bool,
    as_json: bool,
) -> None:
    """Read the node's config, change it, check it, publish it retained, and journal who did it."""
    from garden.node_admin import NodeAdminError, apply_edit, current_config, current_user

    _check_node(node)
    settings = hub_settings(config, mqtt_url=mqtt, garden=garden)
    try:
        who = current_user(config)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
    topics = Topics(settings.garden)
    view = _read(settings, topics, wait, node).get(node)
    if view is None and not new:
        fail(
            f"garden {settings.garden!r} has no node {node!r} on {settings.broker!r}: `garden node list` shows "
            "the nodes; --new configures one before it first reports",
            EXIT_USAGE,
        )
    try:
        current = current_config(view, topics, node)
        edit = make(current)
    except (ConfigError, ValueError) as err:
        fail(str(err), EXIT_USAGE)
    except NodeAdminError as err:
        fail(str(err))
    if not edit.change:
        if as_json:
            print(json.dumps({"node": node, "changed": False, "config": edit.config}))
        else:
            console.print(f"Nothing to change: node {node} already has that.")
        return
    try:
        event = apply_edit(settings.broker, topics, node, edit, who=who, now_ms=int(time.time() * 1000))
    except ConfigError as err:
        fail(f"the new config would be refused by the bridge: {err}", EXIT_USAGE)
    except (BridgeError, GardenError) as err:
        fail(str(err))
    if as_json:
        body = {"node": node, "changed": True, "topic": topics.node_config(node), "config": edit.config,
                "change": edit.change, "event": event}  # fmt: skip
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return
    console.print(f"[green]✓[/green] {edit.summary} (by {who}).", highlight=False)
    for key, change in edit.change.items():
        console.print(f"  {key}: {_show(change['from'])} → {_show(change['to'])}", highlight=False)
    console.print(f"  retained on {topics.node_config(node)}; the bridge applies it within seconds.", highlight=False)


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    return json.dumps(value, separators=(", ", ": ")) if isinstance(value, Mapping | list) else str(value)


@node_app.command("assign")
def node_assign(
    node: NodeArg,
    bed: Annotated[str | None, typer.Argument(help="The bed the node now measures.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Take the node out of any bed.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    new: NewOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a node in a bed (its readings are tagged with the bed from now on), or in none with --none."""
    from garden.node_admin import edit_assign

    if (bed is None) == (not none):
        fail("give a bed, or --none to take the node out of its bed (not both)", EXIT_USAGE)
    if bed is not None and not NAME_RE.fullmatch(bed):
        fail(f"{bed!r} is not a bed name: 1-32 letters, digits, '-' or '_'", EXIT_USAGE)
    _edit(node, lambda c: edit_assign(c, node, bed), mqtt=mqtt, garden=garden, wait=wait, config=config, new=new,
          as_json=as_json)  # fmt: skip


@node_app.command("set-interval")
def node_set_interval(
    node: NodeArg,
    interval: Annotated[str, typer.Argument(help="Seconds between readings (1-86400), or 10m, 1h.")],
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    new: NewOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set how often a node reads its sensors; the bridge sends it the new interval and tracks the ack."""
    from garden.node_admin import edit_interval, parse_interval

    try:
        seconds = parse_interval(interval)
    except ValueError as err:
        fail(f"interval: {err}", EXIT_USAGE)
    _edit(node, lambda c: edit_interval(c, node, seconds), mqtt=mqtt, garden=garden, wait=wait, config=config,
          new=new, as_json=as_json)  # fmt: skip


@node_app.command("calibrate")
def node_calibrate(
    node: NodeArg,
    sensor: Annotated[
        str | None, typer.Option(help="The sensor: sm0, tk0, st0, ... (default sm0 for --dry/--wet, tk0 for a tank).")
    ] = None,
    dry: Annotated[float | None, typer.Option(help="Moisture probe: ADC counts in air-dry soil.")] = None,
    wet: Annotated[float | None, typer.Option(help="Moisture probe: ADC counts in saturated soil.")] = None,
    poly: Annotated[
        str | None,
        typer.Option(
            help="Moisture probe: a soil calibration, polynomial coefficients from raw counts to % VWC, "
            "lowest power first, e.g. '95.2,-0.17' ('' removes it; replaces --dry/--wet)."
        ),
    ] = None,
    tank_depth_cm: Annotated[float | None, typer.Option(help="Tank: cm from the ranger to the tank floor.")] = None,
    litres_per_cm: Annotated[float | None, typer.Option(help="Tank: litres per cm of water height.")] = None,
    offset: Annotated[
        float | None, typer.Option(help="Temperature (°C) or humidity (%) sensor: added to each reading.")
    ] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    new: NewOpt = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Calibrate one sensor of a node: moisture dry/wet counts, tank depth and size, or an offset."""
    from firmware_bridge.calibration import sensor_kind
    from garden.node_admin import edit_calibration

    moisture: dict[str, Any] = {k: v for k, v in (("dry", dry), ("wet", wet)) if v is not None}
    if poly is not None:
        try:
            moisture["poly"] = [float(c) for c in poly.split(",") if c.strip()]
        except ValueError:
            fail(f"--poly {poly!r}: numbers separated by commas, lowest power first", EXIT_USAGE)
    tank = {k: v for k, v in (("depth_cm", tank_depth_cm), ("litres_per_cm", litres_per_cm)) if v is not None}
    groups = [g for g in (moisture, tank, {"offset": offset} if offset is not None else {}) if g]
    if len(groups) != 1:
        fail(
            "give one kind of calibration: --dry/--wet or --poly (moisture), --tank-depth-cm/--litres-per-cm (tank) "
            "or --offset (temperature, humidity)",
            EXIT_USAGE,
        )
    if sensor is None:
        if offset is not None:
            fail("--offset needs --sensor (st0, at0 or rh0)", EXIT_USAGE)
        sensor = "sm0" if moisture else "tk0"
    values: dict[str, Any] = moisture or tank
    if offset is not None:
        values = {"offset_pct" if sensor_kind(sensor) == "rh" else "offset_c": offset}
    try:  # values no probe could have fail here, before the broker is asked
        edit_calibration({}, node, sensor, values)
    except ConfigError as err:
        fail(str(err), EXIT_USAGE)
    _edit(node, lambda c: edit_calibration(c, node, sensor, values), mqtt=mqtt, garden=garden, wait=wait,
          config=config, new=new, as_json=as_json)  # fmt: skip


@node_app.command("retire")
def node_retire(
    node: NodeArg,
    undo: Annotated[bool, typer.Option("--undo", help="Bring a retired node back into service.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark a node retired (taken out of the garden) in its config; `--undo` brings it back into service."""
    from garden.node_admin import edit_retire

    _edit(node, lambda c: edit_retire(c, node, not undo), mqtt=mqtt, garden=garden, wait=wait, config=config,
          new=False, as_json=as_json)  # fmt: skip


@node_app.command("maintained")
def node_maintained(
    node: Annotated[str, typer.Argument(help="The node's id.")],
    what: Annotated[str, typer.Option("--what", help="battery, probe, cable, enclosure, firmware, cleaned or other.")],
    note: Annotated[str | None, typer.Option(help="A few words, e.g. 'new 18650 cell'.")] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log maintenance you did on a node (a battery swap, a cleaned probe): it counts as a contribution."""
    from garden.commons.service import MAINTENANCE

    if not NAME_RE.fullmatch(node):
        fail(f"node {node!r}: 1-32 letters, digits, '-' or '_'", EXIT_USAGE)
    if what not in MAINTENANCE:
        fail(f"--what {what!r}: one of {', '.join(MAINTENANCE)}", EXIT_USAGE)
    body: dict[str, Any] = {"node": node, "what": what}
    if note:
        body["note"] = note
    result = ask_hub("commons", "node.maintained", body, mqtt, garden, config)
    if not emit(result, as_json):
        console.print(f"Logged: {what} on {node}. Thank you!")
