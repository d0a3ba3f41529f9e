"""``garden secure init``: parses, calls :func:`garden.secure.init_secrets`, renders. No secret is ever printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from garden.cli._shared import (
    EXIT_USAGE,
    ConfigOpt,
    GardenOpt,
    InfluxOpt,
    JsonOpt,
    MqttOpt,
    console,
    fail,
    hub_settings,
)
from garden.mosquitto_auth import BridgeNodes

secure_app = typer.Typer(help="Lock a garden down: passwords, the broker's users and ACL, TLS.", no_args_is_help=True)


@secure_app.command("init")
def secure_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the files go (made 0700; compose's GARDEN_SECRETS_DIR).")
    ] = Path("deploy/secrets"),
    bridge: Annotated[
        list[str] | None,
        typer.Option(
            "--bridge",
            help="A bridge and the nodes it owns, e.g. shed=bed-1,bed-2,tank; repeat for each bridge. "
            "Default: the [bridges.<id>] tables of garden.toml.",
        ),
    ] = None,
    target: Annotated[
        str,
        typer.Option("--for", help="compose: files owned by the containers that read them; native: systemd units."),
    ] = "compose",
    rotate: Annotated[
        list[str] | None,
        typer.Option(help="Replace this secret: a file name, a bridge id, hub, volunteer, tls or all. Repeatable."),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="Also make a CA of the garden's own and the broker's certificate.")
    ] = False,
    tls_host: Annotated[
        list[str] | None,
        typer.Option(help="A name or address clients use for the broker (default: localhost, this host). Repeatable."),
    ] = None,
    local_bridge: Annotated[
        str | None,
        typer.Option(
            help="The bridge that runs on this machine: mqtt_bridge_password is its "
            "(default: GARDEN_BRIDGE_ID if it is one of them, else the first)."
        ),
    ] = None,
    bridge_mqtt: Annotated[
        str | None, typer.Option(help="The broker URL bridges use, if not --mqtt's (e.g. mqtts://hub.local:8883).")
    ] = None,
    secrets_path: Annotated[
        Path | None,
        typer.Option(help="Where the env files say the secret files are, if not --dir (e.g. where you install them)."),
    ] = None,
    chown: Annotated[
        bool, typer.Option("--chown/--no-chown", help="--for compose, as root: give files to their container's uid.")
    ] = True,
    mqtt: MqttOpt = None,
    influx: InfluxOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a new garden's secrets (never replacing one unless --rotate), the broker's password file and ACL
    (each bridge may publish for its own nodes only), InfluxDB 1.x users, env files and, with --tls, a CA.

    Every file is 0600 in a 0700 directory; run it again after adding a node or a bridge: it keeps every
    password and rewrites the ACL. Prints what it made and the next steps, never a secret.
    """
    from firmware_bridge.errors import ConfigError
    from firmware_bridge.settings import find_config_file, read_toml
    from garden.errors import GardenError
    from garden.mosquitto_auth import bridges_from_config
    from garden.secure import InitOptions, bridges_for, default_tls_hosts, init_secrets

    settings = hub_settings(config, mqtt_url=mqtt, influx_url=influx, garden=garden)
    try:
        path = find_config_file(config)
        data = read_toml(path) if path is not None else {}
        bridges = bridges_for(bridge or [], bridges_from_config(data))
        b = settings.broker
        url = mqtt or f"{'mqtts' if b.tls else 'mqtt'}://{b.host}:{b.port}"
        options = InitOptions(
            directory=directory,
            garden=settings.garden,
            bridges=bridges,
            target=target,
            mqtt_url=url,
            bridge_mqtt_url=bridge_mqtt or "",
            influx_url=settings.influx.url,
            influx_database=settings.influx.database,
            local_bridge=local_bridge or _env_bridge(bridges),
            secrets_path=secrets_path.absolute() if secrets_path else None,
            rotate=frozenset(rotate or ()),
            tls_hosts=tuple(tls_host or default_tls_hosts()) if tls else (),
            chown=chown,
        )
        report = init_secrets(options, passwd_tool=shutil.which("mosquitto_passwd"), openssl=shutil.which("openssl"))
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
    except GardenError as err:
        fail(str(err))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    console.print(
        f"Garden [bold]{report.garden}[/bold]: secrets in [bold]{report.directory}[/bold] (for {report.target}); "
        f"bridges: " + "; ".join(f"{b.bridge} ({', '.join(b.nodes) or 'no nodes'})" for b in report.bridges),
        highlight=False,
    )
    table = Table(title="What garden secure init made (no secret is shown)")
    for column in ("file", "state", "mode", "owner", "what", "read by"):
        table.add_column(column, overflow="fold")
    for f in report.files:
        table.add_row(f.file, f.state, f.mode, f.owner, f.what, f.read_by)
    console.print(table)
    console.print(f"Passwords hashed with {report.hasher}.", highlight=False)
    console.print(f"[bold]How they are read:[/bold] {report.access}", highlight=False)
    console.print("[bold]Next steps:[/bold]")
    for i, step in enumerate(report.next_steps, 1):
        console.print(f"  {i}. {step}", highlight=False, soft_wrap=True)


def _env_bridge(bridges: tuple[BridgeNodes, ...]) -> str:
    import os

    named = os.environ.get("GARDEN_BRIDGE_ID", "")
    return named if named in {b.bridge for b in bridges} else ""
