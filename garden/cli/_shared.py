"""What the command modules share: consoles, exit codes, option types, settings loading.

Kept apart from :mod:`garden.cli.app` so command modules can be imported by it
(to be registered) without importing it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from firmware_bridge.errors import ConfigError
from garden.settings import HubSettings

console = Console()
err_console = Console(stderr=True)

EXIT_FAILED = 1
EXIT_USAGE = 2

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $GARDEN_CONFIG, ./garden.toml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MqttOpt = Annotated[str | None, typer.Option(help="Broker URL (default from config).")]
InfluxOpt = Annotated[str | None, typer.Option(help="InfluxDB URL (default from config).")]
GardenOpt = Annotated[str | None, typer.Option(help="Garden id (default from config, else 'demo').")]
WaitOpt = Annotated[float, typer.Option(min=0.1, max=30.0, help="Seconds to wait for retained messages.")]


def emit(result: dict[str, Any], as_json: bool) -> bool:
    """Print ``result`` as JSON when asked (``--json``); True when that is all there is to do."""
    if as_json:
        print(json.dumps(result))
    return as_json


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def hub_settings(config: Path | None, **overrides: Any) -> HubSettings:
    from garden.settings import load_hub_settings

    try:
        return load_hub_settings(config, **overrides)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)


def ask_hub(service: str, action: str, body: dict[str, Any], mqtt: str | None, garden: str | None,
            config: Path | None, *, timeout_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """A request to the hub as the current user; on any failure, a clear message and exit 1.

    Fails within a few seconds when the hub is not running (garden/commands.py): nothing
    is queued to happen later.
    """
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.topics import NAME_RE, Topics
    from garden.commands import REQUEST_TIMEOUT_S, request
    from garden.errors import GardenError
    from garden.node_admin import current_user

    settings = hub_settings(config, mqtt_url=mqtt, garden=garden)
    try:
        who = current_user(config)
    except ConfigError as err:
        fail(str(err), EXIT_USAGE)
    if not NAME_RE.fullmatch(who):
        fail(f"you are {who!r} (GARDEN_USER, or [garden] user): the hub knows people by a name of 1-32 "
             "letters, digits, '-' or '_', e.g. ana-lopez", EXIT_USAGE)  # fmt: skip
    topics = Topics(settings.garden)
    # What answers: the commons has its own status; the watch answers for the hub.
    status = topics.hub_commons("+") if service == "commons" else topics.hub_status("+")
    try:
        return request(settings.broker, topics, service, {"action": action, "who": who, **body},
                       timeout_s=timeout_s or REQUEST_TIMEOUT_S, status_topic=status)  # fmt: skip
    except (BridgeError, GardenError) as err:
        fail(str(err))
