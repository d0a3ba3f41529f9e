"""What the command modules share: consoles, exit codes, option types, settings loading.

Kept apart from :mod:`garden.cli.app` so command modules can be imported by it
(to be registered) without importing it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

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


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def hub_settings(config: Path | None, **overrides: Any) -> HubSettings:
    from garden.settings import load_hub_settings

    try:
        return load_hub_settings(config, **overrides)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
