"""``garden federate``: parses, calls :mod:`garden.federation`, renders. No password is ever printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from garden.cli._shared import EXIT_USAGE, JsonOpt, console, fail

federate_app = typer.Typer(
    help="Federate gardens: bridge a garden's broker into a regional broker, and set that broker up.",
    no_args_is_help=True,
)


@federate_app.command("config")
def federate_config(
    garden: Annotated[str, typer.Option(help="This garden's id: what it forwards is garden/<id>/...")],
    regional: Annotated[str, typer.Option(help="The regional broker, host:port (MQTT over TLS; port 8883 if none).")],
    user: Annotated[str, typer.Option(help="This garden's user on the regional broker (uplink-<garden>).")],
    password_file: Annotated[Path, typer.Option(help="The file holding that user's password, one line.")],
    ca: Annotated[Path, typer.Option(help="The CA that signed the regional broker's certificate (PEM).")],
    out: Annotated[Path, typer.Option(help="Where uplink.conf goes (made 0700; the file 0600).")] = Path("."),
    connection: Annotated[
        str | None, typer.Option(help="The bridge's name and client id on the regional broker (uplink-<garden>).")
    ] = None,
    protocol: Annotated[str, typer.Option(help="mqttv311 (Mosquitto's default) or mqttv50.")] = "mqttv311",
    tls_version: Annotated[str, typer.Option(help="tlsv1.2 or tlsv1.3.")] = "tlsv1.2",
    keepalive: Annotated[int, typer.Option(help="Seconds between pings when idle.")] = 60,
    restart: Annotated[tuple[int, int], typer.Option(help="Reconnect backoff, base and cap in seconds (jittered).")] = (
        5,
        60,
    ),
    max_queued_messages: Annotated[int, typer.Option(help="The queue bound while the uplink is down.")] = 200_000,
    max_queued_bytes: Annotated[int, typer.Option(help="The queue bound in payload bytes.")] = 100 * 1024 * 1024,
    nodes: Annotated[int, typer.Option(help="Nodes in the garden, to say how long an outage the queue holds.")] = 10,
    interval: Annotated[float, typer.Option(help="Their reading interval, seconds.")] = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Write uplink.conf for the garden's Mosquitto: a bridge to the regional broker over TLS, with a
    password, forwarding the garden's readings, statuses, events, alerts and bed needs at QoS 1, and
    queueing them while the uplink is down. Nothing comes back from the region.

    The file holds the password (Mosquitto takes it only inline): it is 0600, and never printed.
    """
    from firmware_bridge.errors import ConfigError
    from garden.errors import GardenError
    from garden.federation import QueueBound, Uplink, garden_rate, parse_address, read_password, write_uplink

    try:
        host, port = parse_address(regional)
        uplink = Uplink(
            garden=garden,
            host=host,
            port=port,
            username=user,
            password=read_password(password_file),
            cafile=ca.absolute(),
            connection=connection or "",
            protocol=protocol,
            tls_version=tls_version,
            keepalive_s=keepalive,
            restart_base_s=restart[0],
            restart_cap_s=restart[1],
            queue=QueueBound(max_queued_messages, max_queued_bytes),
        )
        if not ca.is_file():
            raise ConfigError("--ca", f"{ca}: no such file")
        written = write_uplink(uplink, out, garden_rate(nodes, interval))
    except ConfigError as err:
        fail(str(err), EXIT_USAGE)
    except GardenError as err:
        fail(str(err))
    facts = dict(written.facts)
    if as_json:
        print(json.dumps(written.to_json(), indent=2))
        return
    console.print(
        f"Garden [bold]{garden}[/bold] forwards to [bold]{facts['regional']}[/bold] as {user} "
        f"(bridge {facts['connection']}, TLS, QoS 1, out only): " + ", ".join(facts["forwarded"]),
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"Queue while the uplink is down: {max_queued_messages} messages or {max_queued_bytes} bytes; "
        f"at {facts['rate_per_minute']} messages a minute ({nodes} nodes every {interval:g} s) that is "
        f"about {facts['outage_hours']} hours.",
        highlight=False,
    )
    _render(written.directory, written.files, written.next_steps)


@federate_app.command("regional")
def federate_regional(
    garden: Annotated[list[str], typer.Option(help="A garden that forwards to this broker; repeat for each.")],
    directory: Annotated[Path, typer.Option("--dir", help="Where the files go (made 0700, files 0600).")] = Path(
        "regional"
    ),
    hub_user: Annotated[str, typer.Option(help="The regional hub's MQTT user.")] = "hub",
    port: Annotated[int, typer.Option(help="The TLS listener's port.")] = 8883,
    bind: Annotated[str, typer.Option(help="The listener's address (default: every interface).")] = "",
    tls_host: Annotated[
        list[str] | None,
        typer.Option(help="A name or address gardens use for this broker: makes a CA and its certificate."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set up the regional broker: a password for each garden's bridge and for the hub (kept if they
    exist), the hashed password file, an ACL by which each garden's bridge may write only its own
    garden's tree, the TLS listener's config and, with --tls-host, a CA and the broker's certificate.
    """
    from firmware_bridge.errors import ConfigError
    from garden.errors import GardenError
    from garden.federation import make_region

    try:
        written = make_region(
            directory,
            garden,
            hub_user=hub_user,
            port=port,
            bind=bind,
            tls_hosts=tuple(tls_host or ()),
            passwd_tool=shutil.which("mosquitto_passwd"),
            openssl=shutil.which("openssl"),
        )
    except ConfigError as err:
        fail(str(err), EXIT_USAGE)
    except GardenError as err:
        fail(str(err))
    if as_json:
        print(json.dumps(written.to_json(), indent=2))
        return
    console.print(f"Regional broker for gardens: {', '.join(garden)}; hub user {hub_user}.", highlight=False)
    _render(written.directory, written.files, written.next_steps)


def _render(directory: Path, files: tuple[tuple[str, str, str], ...], steps: tuple[str, ...]) -> None:
    table = Table(title=f"Written in {directory} (no secret is shown)")
    for column in ("file", "mode", "what"):
        table.add_column(column, overflow="fold")
    for name, what, mode in files:
        table.add_row(name, mode, what)
    console.print(table)
    console.print("[bold]Next steps:[/bold]")
    for i, step in enumerate(steps, 1):
        console.print(f"  {i}. {step}", highlight=False, soft_wrap=True)
