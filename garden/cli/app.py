"""The ``garden`` command line.

Exit codes: 0 done, 1 the work failed (a broker that can't be reached, a
port that can't be opened), 2 bad usage or a bad config.
"""

from __future__ import annotations

import datetime
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from firmware_bridge import __version__
from firmware_bridge.errors import BridgeError, ConfigError
from firmware_bridge.mqtt_link import read_retained
from firmware_bridge.settings import BridgeSettings, load_bridge_settings
from garden.cli._shared import (
    EXIT_USAGE,
    ConfigOpt,
    GardenOpt,
    InfluxOpt,
    JsonOpt,
    MqttOpt,
    WaitOpt,
    console,
    err_console,
    fail,
    hub_settings,
)
from garden.cli.alerts_cmd import alerts_app
from garden.cli.commons_cmd import commons_app, harvest_app, me, member_app, rota_app
from garden.cli.dashboards_cmd import dashboards_app
from garden.cli.doctor_cmd import doctor
from garden.cli.federate_cmd import federate_app
from garden.cli.influx_cmd import influx_app
from garden.cli.node_cmd import node_app
from garden.cli.secure_cmd import secure_app
from garden.cli.status_cmd import readings, status
from garden.cli.water_cmd import beds_app, water_app
from garden.errors import GardenError

app = typer.Typer(
    name="garden",
    help="Garden Commons: sensors, watering and the shared work of a community garden.",
    no_args_is_help=True,
    add_completion=False,
    # A traceback must never print local variables: they may hold a password.
    pretty_exceptions_show_locals=False,
)
bridge_app = typer.Typer(help="The bridge from sensor nodes (serial) to the broker (MQTT).", no_args_is_help=True)
app.add_typer(bridge_app, name="bridge")

DEFAULT_SIM_DIR = Path(tempfile.gettempdir()) / "garden-sim"
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log detail (-vv for debug).")]


def _logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else (logging.INFO if verbose < 2 else logging.DEBUG)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _settings(config: Path | None, **overrides: Any) -> BridgeSettings:
    try:
        return load_bridge_settings(config, **overrides)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


# ------------------------------------------------------------------- simulate


@app.command()
def simulate(
    nodes: Annotated[int, typer.Option(min=1, max=64, help="How many nodes.")] = 3,
    prefix: Annotated[str, typer.Option(help="Node ids are <prefix>-1, <prefix>-2, ...")] = "bed",
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the port symlinks go, one per node id.")
    ] = DEFAULT_SIM_DIR,
    seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 1,
    interval: Annotated[int, typer.Option(min=1, max=86_400, help="Seconds of simulated time per reading.")] = 300,
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per wall-clock second.")] = 60.0,
    faults: Annotated[
        str,
        typer.Option(help="Faults to inject, e.g. 'partial=0.02,bad_crc=0.01' (see docs/simulator.md)."),
    ] = "",
    count: Annotated[
        int, typer.Option(min=0, help="Stop after this many readings per node (0: run until Ctrl-C).")
    ] = 0,
    ledger: Annotated[
        Path | None, typer.Option(help="Append one JSON line per reading written intact to the port.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ports as JSON.")] = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Run simulated sensor nodes on virtual serial ports (pty pairs)."""
    from firmware_bridge.simulator.node import Faults, SimNode
    from firmware_bridge.simulator.pty_runner import Simulation

    _logging(verbose)
    try:
        fault_spec = Faults.parse(faults)
    except ValueError as err:
        fail(f"--faults: {err}", EXIT_USAGE)
    sim_nodes = [
        SimNode(f"{prefix}-{i}", seed=seed, interval_s=interval, faults=fault_spec) for i in range(1, nodes + 1)
    ]
    ledger_file = ledger.open("a") if ledger is not None else None
    sim = Simulation(sim_nodes, directory, speed=speed, count=count, ledger=ledger_file)
    try:
        sim.open_ports()
    except OSError as err:
        fail(f"cannot create ports in {directory}: {err}")
    ports = [{"node": r.node.node_id, "port": str(r.port.link), "device": r.port.device} for r in sim.runners if r.port]
    if as_json:
        print(json.dumps({"ports": ports}), flush=True)
    else:
        table = Table(title=f"{nodes} simulated node(s), one reading per {interval}s simulated, x{speed:g}")
        for column in ("node", "port", "device"):
            table.add_column(column)
        for row in ports:
            table.add_row(row["node"], row["port"], row["device"])
        console.print(table)
        console.print(f"Bridge them with: garden bridge run --port {directory}/{prefix}-1 ...  (Ctrl-C stops)")
    _on_signals(sim.stop_event.set)
    sim.run()
    if ledger_file is not None:
        ledger_file.close()
    if not as_json:
        console.print(f"{sim.written} readings written")


def _on_signals(stop: Any) -> None:
    def handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# --------------------------------------------------------------------- bridge


@bridge_app.command("run")
def bridge_run(
    port: Annotated[
        list[str] | None,
        typer.Option("--port", "-p", help="A serial port; repeat for more. Default: all of /dev/serial/by-id."),
    ] = None,
    mqtt: Annotated[str | None, typer.Option(help="Broker URL, mqtt://host:1883 (default from config).")] = None,
    garden: GardenOpt = None,
    spool: Annotated[Path | None, typer.Option(help="Spool database path.")] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 1,
) -> None:
    """Read sensor nodes on serial ports, spool every reading, publish over MQTT."""
    from firmware_bridge.service import Bridge

    _logging(verbose)
    settings = _settings(config, ports=tuple(port) if port else None, mqtt_url=mqtt, garden=garden, spool_path=spool)
    try:
        bridge = Bridge(settings)
    except BridgeError as err:
        fail(str(err))
    _on_signals(bridge.request_stop)
    bridge.run()


@bridge_app.command("status")
def bridge_status(
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the bridges and nodes of a garden, from their retained status on the broker."""
    from firmware_bridge.topics import Topics

    settings = _settings(config, mqtt_url=mqtt, garden=garden)
    topics = Topics(settings.garden)
    try:
        retained = read_retained(
            settings.broker,
            (f"{topics.base}/bridge/+/status", f"{topics.base}/node/+/status"),
            wait_s=wait,
        )
    except BridgeError as err:
        fail(str(err))
    bridges: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for topic, payload in retained.items():
        try:
            body = json.loads(payload)
        except ValueError:
            continue
        (bridges if "/bridge/" in topic else nodes)[topic.split("/")[3]] = body
    if as_json:
        print(json.dumps({"garden": settings.garden, "bridges": bridges, "nodes": nodes}, indent=2))
        return
    if not bridges and not nodes:
        console.print(f"No bridge or node has reported for garden {settings.garden!r} on {settings.broker!r}.")
        return
    table = Table(title=f"Bridges of garden {settings.garden}")
    for column in ("bridge", "state", "ports open", "rejected lines", "spool", "published", "refused"):
        table.add_column(column)
    refusing = []
    for name, b in sorted(bridges.items()):
        ports = b.get("ports", {})
        rejected = sum(sum(p.get("rejects", {}).values()) for p in ports.values())
        # Readings the broker refused for good (PUBACK 0x87 "not authorized": a node
        # missing from the bridge's ACL block), dropped by the bridge: docs/security.md.
        refused = b.get("counters", {}).get("refused", 0)
        if refused:
            refusing.append(name)
        table.add_row(
            name,
            b.get("state", "?"),
            f"{sum(1 for p in ports.values() if p.get('open'))}/{len(ports)}",
            str(rejected),
            str(b.get("spool", {}).get("depth", "?")),
            str(b.get("counters", {}).get("published", 0)),
            f"[red]{refused}[/red]" if refused else "0",
        )
    console.print(table)
    if refusing:
        console.print(
            f"[yellow]The broker refused readings from {', '.join(refusing)}[/yellow]: a node that is not in its "
            "bridge's ACL block? Add it to [bridges.<id>] nodes, run `garden secure init`, reload the broker "
            "(docs/security.md, 'Adding a node').",
            highlight=False,
        )
    table = Table(title="Nodes")
    for column in ("node", "state", "fw", "interval", "boot", "seq", "lost", "battery"):
        table.add_column(column)
    for name, n in sorted(nodes.items()):
        battery = n.get("battery_v")
        table.add_row(
            name,
            n.get("state", "?"),
            str(n.get("fw", "")),
            f"{n['interval_s']}s" if n.get("interval_s") else "",
            str(n.get("boot", "")),
            str(n.get("seq", "")),
            str(n.get("lost", "")),
            f"{battery:.2f} V" if battery else "",
        )
    console.print(table)


# ------------------------------------------------------------------------ hub

hub_app = typer.Typer(help="The hub: MQTT to InfluxDB, with nothing lost on the way.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")


@hub_app.command("run")
def hub_run(
    mqtt: MqttOpt = None,
    influx: InfluxOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    watch: Annotated[
        bool | None,
        typer.Option(
            "--watch/--no-watch",
            help="Run the watch (watering needs, alerts); default: the watch's enabled setting in garden.toml.",
        ),
    ] = None,
    commons: Annotated[
        bool,
        typer.Option("--commons/--no-commons", help="Run the commons (members, rota, claims, harvest shares)."),
    ] = True,
    all_gardens: Annotated[
        bool,
        typer.Option(
            "--all-gardens",
            help="A regional hub: ingest every garden on the broker (garden/+/...), tagged by its topic's garden; "
            "no watch, no commons. Also [hub] all_gardens.",
        ),
    ] = False,
    verbose: VerboseOpt = 1,
) -> None:
    """Ingest the garden's MQTT into InfluxDB, durably and in order; watch the beds; keep the commons."""
    from garden.commons.service import Commons
    from garden.commons.settings import load_commons_settings
    from garden.hub import Hub
    from garden.watch import Watcher
    from garden.watch_settings import load_watch_settings

    _logging(verbose)
    settings = hub_settings(config, mqtt_url=mqtt, influx_url=influx, garden=garden, all_gardens=all_gardens or None)
    if settings.all_gardens:
        # The watch and the commons belong to one garden: each garden's own hub runs them.
        if watch:
            fail("--watch: a regional hub (--all-gardens) only ingests; each garden's hub runs its watch", EXIT_USAGE)
        watch, commons = False, False
    try:
        watch_settings = load_watch_settings(config)
        commons_settings = load_commons_settings(config)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
    watcher: Watcher | None = None
    keeper: Commons | None = None
    try:
        hub = Hub(settings)
        if commons:
            keeper = Commons(settings, commons_settings, watch_settings)
        if watch if watch is not None else watch_settings.enabled:
            watcher = Watcher(
                settings,
                watch_settings,
                on_duty=keeper.on_duty if keeper is not None else None,
                members=keeper.people if keeper is not None else None,
            )
            if keeper is not None:
                keeper.dispatcher = watcher.dispatcher
                keeper.erase_hooks.append(watcher.erase_person)
                keeper.export_hooks.append(watcher.export_person)
        elif keeper is not None:  # share notices still go out
            from garden.watch import build_dispatcher

            keeper.dispatcher = build_dispatcher(watch_settings)
            keeper.owns_dispatcher = True
        if keeper is not None and (others := keeper.other_hubs()):
            fail(f"the commons of garden {settings.garden} already runs on hub {', '.join(others)}: "
                 "one hub keeps it (run this one with --no-commons)")  # fmt: skip
    except (BridgeError, GardenError) as err:
        fail(str(err))
    threads = []
    for name, part in (("watch", watcher), ("commons", keeper)):
        if part is not None:
            threads.append((part, threading.Thread(target=part.run, name=name, daemon=True)))
            threads[-1][1].start()

    def stop() -> None:
        hub.request_stop()
        for part, _ in threads:
            part.request_stop()

    _on_signals(stop)
    hub.run()
    for part, thread in threads:
        part.request_stop()
        thread.join(10.0)


@hub_app.command("init")
def hub_init(
    influx: InfluxOpt = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was done as JSON.")] = False,
) -> None:
    """Create the InfluxDB database and its retention policies (raw, hourly, daily) on 1.x."""
    from garden.influx import Influx, InfluxAuthError
    from garden.influx_access import as_admin
    from garden.schema import ensure_schema
    from garden.settings import influx_admin_settings

    settings = hub_settings(config, influx_url=influx)
    try:  # with auth on, only an admin may create databases
        admin = influx_admin_settings(settings.influx)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
    client = Influx(admin or settings.influx)
    try:
        done = ensure_schema(client)
    except InfluxAuthError as err:
        fail(str(as_admin(err, admin) if admin is not None else err))
    except GardenError as err:
        fail(str(err))
    finally:
        client.close()
    if as_json:
        print(json.dumps({"database": settings.influx.database, "done": done}))
    else:
        for item in done:
            console.print(f"  {item}")
        console.print(f"InfluxDB database [bold]{settings.influx.database}[/bold] is ready.")


@hub_app.command("status")
def hub_status(
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show each hub's ingest health: rate, lag, backlog, refused messages and dead letters."""
    from firmware_bridge.topics import Topics

    settings = hub_settings(config, mqtt_url=mqtt, garden=garden)
    topics = Topics(settings.garden)
    try:
        retained = read_retained(settings.broker, (topics.hub_status("+"), topics.hub_watch("+")), wait_s=wait)
    except BridgeError as err:
        fail(str(err))
    hubs, watches = _json_objects(retained, "/status"), _json_objects(retained, "/watch")
    if as_json:
        print(json.dumps({"garden": settings.garden, "hubs": hubs, "watch": watches}, indent=2))
        return
    if not hubs:
        console.print(f"No hub has reported for garden {settings.garden!r} on {settings.broker!r}.")
        return
    table = Table(title=f"Hubs of garden {settings.garden}")
    for column in ("hub", "state", "InfluxDB", "msgs/s", "lag", "backlog", "refused", "dead letters"):
        table.add_column(column)
    for name, h in sorted(hubs.items()):
        lag = h.get("lag_ms")
        table.add_row(
            name,
            h.get("state", "?"),
            h.get("influx", "?"),
            str(h.get("rate_msgs_s", "")),
            f"{lag / 1000:.1f} s" if isinstance(lag, int) else "",
            str(h.get("backlog_batches", "")),
            str(sum(h.get("refused", {}).values())),
            str(h.get("dead_letters", "")),
        )
    console.print(table)
    for name, h in sorted(hubs.items()):
        storage = h.get("storage") or {}
        if storage.get("ok") is False and h.get("state") != "offline":
            console.print(
                f"[red]hub {name} cannot store readings[/red]: {escape(str(storage.get('problem')))}. They wait at "
                f"the broker, unacknowledged; free space in {escape(str(storage.get('data_dir')))}.",
                highlight=False,
            )
    for name, w in sorted(watches.items()):
        notify = w.get("notify", {})
        sent = sum(c.get("sent", 0) for c in notify.values())
        failed = {ch: c.get("failed", 0) for ch, c in notify.items() if c.get("failed")}
        console.print(
            f"watch on {name}: {w.get('beds', 0)} beds, {w.get('open_alerts', 0)} open alerts; "
            f"notifications sent {sent}" + (f", failed {failed}" if failed else ""),
            highlight=False,
        )


def _json_objects(retained: dict[str, bytes], leaf: str) -> dict[str, dict[str, Any]]:
    """Each hub's retained JSON object on ``.../<hub><leaf>``; a payload that is not one is
    reported on stderr and skipped (anyone allowed to publish there could have left it)."""
    out: dict[str, dict[str, Any]] = {}
    for topic, payload in retained.items():
        if not topic.endswith(leaf) or not payload:
            continue
        try:
            body = json.loads(payload)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict):
            out[topic.split("/")[3]] = body
        else:
            err_console.print(f"skipped {escape(topic)}: not a JSON object")
    return out


@hub_app.command("dead-letters")
def hub_dead_letters(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 20,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the messages the hub refused, newest first, with the reason (run on the hub)."""
    from garden.dead_letters import DeadLetterStore

    settings = hub_settings(config)
    path = settings.data_dir / "hub-dead-letters.sqlite3"
    if not path.exists():
        fail(f"no dead-letter store at {path}: is this the hub, and has it run? (GARDEN_DATA_DIR)")
    store = DeadLetterStore(path)
    letters = store.latest(limit)
    store.close()
    if as_json:
        rows = [
            {"id": d.id, "received_ms": d.received_ms, "topic": d.topic, "reason": d.reason, "detail": d.detail,
             "payload": d.payload.decode(errors="replace")}
            for d in letters
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Refused messages ({len(letters)} newest)")
    for column in ("id", "topic", "reason", "detail", "payload"):
        table.add_column(column, overflow="fold")
    for d in letters:
        table.add_row(str(d.id), d.topic, d.reason, d.detail, d.payload[:80].decode(errors="replace"))
    console.print(table)


# ------------------------------------------------------------------------ up


@app.command()
def up(
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    nodes: Annotated[int, typer.Option(min=1, max=64, help="Simulated nodes, when no hardware is plugged in.")] = 3,
    speed: Annotated[float, typer.Option(min=0.001, help="Simulated seconds per wall second.")] = 60.0,
    simulate_nodes: Annotated[
        bool | None,
        typer.Option("--simulate/--no-simulate", help="Force simulated nodes on or off (default: when no hardware)."),
    ] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = 1,
) -> None:
    """Run the garden's pipeline: nodes (real, or simulated when none are plugged in) to the broker."""
    from firmware_bridge.service import Bridge
    from firmware_bridge.simulator.node import SimNode
    from firmware_bridge.simulator.pty_runner import Simulation

    _logging(verbose)
    settings = _settings(config, mqtt_url=mqtt, garden=garden)
    sim: Simulation | None = None
    if simulate_nodes or (simulate_nodes is None and not settings.resolved_ports()):
        directory = Path(tempfile.mkdtemp(prefix="garden-sim-"))
        sim = Simulation(
            [SimNode(f"bed-{i}", seed=1, interval_s=300) for i in range(1, nodes + 1)], directory, speed=speed
        )
        sim.open_ports()
        settings = _settings(config, mqtt_url=mqtt, garden=garden, ports=tuple(str(p) for p in sim.links()))
        console.print(f"No sensor nodes plugged in: simulating {nodes} on {directory} (x{speed:g} time).")
        _demo_configs(settings, [r.node.node_id for r in sim.runners])
    try:
        bridge = Bridge(settings)
    except BridgeError as err:
        fail(str(err))
    console.print(
        f"Garden [bold]{settings.garden}[/bold]: bridging {len(bridge.ports)} port(s) "
        f"to {settings.broker!r}. Watch with: mosquitto_sub -t 'garden/#' -v   Ctrl-C stops."
    )
    sim_thread = None
    if sim is not None:
        sim_thread = threading.Thread(target=sim.run, name="simulator", daemon=True)
        sim_thread.start()
    _on_signals(bridge.request_stop)
    bridge.run()  # stops first, so it does not see the simulated ports vanish
    if sim is not None and sim_thread is not None:
        sim.stop_event.set()
        sim_thread.join(2.0)


app.command()(status)
app.command()(readings)
app.add_typer(node_app, name="node")
app.command()(doctor)
app.add_typer(dashboards_app, name="dashboards")
app.add_typer(water_app, name="water")
app.add_typer(beds_app, name="beds")
app.add_typer(alerts_app, name="alerts")
app.add_typer(member_app, name="member")
app.add_typer(rota_app, name="rota")
app.add_typer(harvest_app, name="harvest")
app.command()(me)
app.add_typer(commons_app, name="commons")
app.add_typer(influx_app, name="influx")
app.add_typer(secure_app, name="secure")
app.add_typer(federate_app, name="federate")


def _demo_configs(settings: BridgeSettings, node_ids: list[str]) -> None:
    """Give simulated nodes that have no config yet a bed each and their tank's shape
    (the simulator's tank: 120 cm deep, 10 l per cm), as a volunteer would with
    `garden node assign` and `garden node calibrate`, so the demo shows beds and litres."""
    from firmware_bridge.topics import Topics
    from garden.node_admin import publish_confirmed

    topics = Topics(settings.garden)
    try:
        existing = read_retained(settings.broker, (topics.all_node_configs,), wait_s=0.5)
        configs = [
            (topics.node_config(node), json.dumps({"bed": node, "calibration": DEMO_TANK}).encode(), True)
            for node in node_ids
            if topics.node_config(node) not in existing
        ]
        if configs:
            publish_confirmed(settings.broker, configs)
            console.print(f"Assigned {len(configs)} simulated node(s) to beds of the same name.")
        existing = read_retained(settings.broker, (topics.all_bed_configs,), wait_s=0.5)
        planted = (datetime.date.today() - datetime.timedelta(days=30)).isoformat()
        profiles = [
            (topics.bed_config(node), json.dumps(
                {"soil": "loam", "crops": [{"crop": DEMO_CROPS[i % len(DEMO_CROPS)], "planted": planted}]}
            ).encode(), True)
            for i, node in enumerate(node_ids)
            if topics.bed_config(node) not in existing
        ]  # fmt: skip
        if profiles:
            publish_confirmed(settings.broker, profiles)
            console.print(f"Gave {len(profiles)} bed(s) a demo profile (loam; see `garden beds list`).")
    except (BridgeError, GardenError) as err:
        console.print(f"[yellow]warning:[/yellow] demo node configs not published: {err}")


DEMO_TANK = {"tk0": {"depth_cm": 120, "litres_per_cm": 10}}
DEMO_CROPS = ("lettuce", "tomato", "beans", "courgette", "carrot", "onion", "potato", "squash", "herbs")


def main() -> None:
    app()
