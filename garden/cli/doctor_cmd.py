"""``garden doctor``: check the broker, InfluxDB, Grafana and the clocks; say what fixes each problem."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from garden.cli._shared import EXIT_FAILED, ConfigOpt, GardenOpt, InfluxOpt, JsonOpt, MqttOpt, console, hub_settings

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
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the broker, InfluxDB, Grafana, the clocks, the alerts' config and the hub; print the fix for each failure.

    Exits 1 when a check fails. Warnings (no readings yet, an old newest reading) do not fail.
    """
    import os

    from garden.doctor import GrafanaTarget, run_checks

    settings = hub_settings(config, mqtt_url=mqtt, influx_url=influx, garden=garden)
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
    failed = any(c.failed for c in checks)
    if as_json:
        body = {"garden": settings.garden, "ok": not failed, "checks": [c.to_json() for c in checks]}
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        table = Table(title=f"garden doctor ({settings.garden})")
        for column in ("", "check", "what we saw", "fix"):
            table.add_column(column, overflow="fold")
        for c in checks:
            mark, style = MARKS[c.state]
            table.add_row(Text(mark, style=style), c.name, c.detail, Text(c.fix or "", style="bold"))
        console.print(table)
        console.print("[red]Some checks failed.[/red]" if failed else "[green]All checks passed.[/green]")
    if failed:
        raise typer.Exit(EXIT_FAILED)
