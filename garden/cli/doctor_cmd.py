"""``garden doctor``: check the broker, InfluxDB, Grafana and the clocks; say what fixes each problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from garden.cli._shared import (
    EXIT_FAILED,
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
from garden.settings import HubSettings

if TYPE_CHECKING:
    from garden.doctor import Check

MARKS = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "warn": ("!", "yellow"), "skip": ("–", "dim")}


def doctor(
    mqtt: MqttOpt = None,
    influx: InfluxOpt = None,
    garden: GardenOpt = None,
    grafana_url: Annotated[
        str | None, typer.Option(envvar="GARDEN_GRAFANA_URL", help="Grafana to check (optional).")
    ] = None,
    grafana_token: Annotated[
        str | None, typer.Option(envvar="GARDEN_GRAFANA_TOKEN", help="Grafana token, to check its datasource too.")
    ] = None,
    security: Annotated[
        bool,
        typer.Option(
            "--security",
            help="Check what is open instead: anonymous MQTT, weak passwords, token scopes, TLS, file modes.",
        ),
    ] = False,
    secrets_dir: Annotated[
        list[Path] | None,
        typer.Option(
            help="--security: a directory of secret files to check (default: $GARDEN_SECRETS_DIR, "
            "./deploy/secrets and /etc/garden/secrets, those that exist).",
        ),
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the broker, InfluxDB, Grafana, the clocks, the alerts' config and the hub; print the fix for each failure.

    Exits 1 when a check fails. Warnings (no readings yet, an old newest reading) do not fail.
    With --security, checks what is open instead, each finding with its fix.
    """
    import os

    from garden.doctor import GrafanaTarget, run_checks

    settings = hub_settings(config, mqtt_url=mqtt, influx_url=influx, garden=garden)
    if security:
        _security(settings, config, secrets_dir, as_json)
        return
    target = None
    if grafana_url:
        target = GrafanaTarget(
            grafana_url,
            token=grafana_token,
            user=os.environ.get("GARDEN_GRAFANA_USER") or None,
            password=os.environ.get("GARDEN_GRAFANA_PASSWORD") or None,
        )
    from firmware_bridge.errors import ConfigError
    from garden.watch_settings import WatchSettings, load_watch_settings

    watch: WatchSettings | ConfigError
    try:
        watch = load_watch_settings(config)
    except ConfigError as err:
        watch = err
    from garden.commons.settings import CommonsSettings, load_commons_settings

    commons: CommonsSettings | ConfigError
    try:
        commons = load_commons_settings(config)
    except ConfigError as err:
        commons = err
    checks = run_checks(settings, target, watch=watch, commons=commons)
    _render(checks, settings.garden, as_json, f"garden doctor ({settings.garden})")


def _security(settings: HubSettings, config: Path | None, secrets_dir: list[Path] | None, as_json: bool) -> None:
    import os

    from firmware_bridge.errors import ConfigError
    from firmware_bridge.settings import find_config_file, read_toml
    from garden.doctor import run_security_checks

    try:
        path = find_config_file(config)
        data = read_toml(path) if path is not None else {}
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
    if secrets_dir is None:
        defaults = [os.environ.get("GARDEN_SECRETS_DIR"), "deploy/secrets", "/etc/garden/secrets"]
        secrets_dir = [Path(d) for d in dict.fromkeys(d for d in defaults if d) if Path(d).is_dir()]
    checks = run_security_checks(settings, config_path=path, config_data=data, secret_dirs=secrets_dir)
    _render(checks, settings.garden, as_json, f"garden doctor --security ({settings.garden})")


def _render(checks: list[Check], garden: str, as_json: bool, title: str) -> None:
    failed = any(c.failed for c in checks)
    if as_json:
        body = {"garden": garden, "ok": not failed, "checks": [c.to_json() for c in checks]}
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        table = Table(title=title)
        for column in ("", "check", "what we saw", "fix"):
            table.add_column(column, overflow="fold")
        for c in checks:
            mark, style = MARKS[c.state]
            table.add_row(Text(mark, style=style), c.name, c.detail, Text(c.fix or "", style="bold"))
        console.print(table)
        console.print("[red]Some checks failed.[/red]" if failed else "[green]All checks passed.[/green]")
    if failed:
        raise typer.Exit(EXIT_FAILED)
