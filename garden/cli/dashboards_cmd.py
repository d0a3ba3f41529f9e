"""``garden dashboards push``: upload the garden's Grafana dashboards through Grafana's HTTP API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from garden.cli._shared import EXIT_USAGE, JsonOpt, console, fail

dashboards_app = typer.Typer(help="The Grafana dashboards: push them to a running Grafana.", no_args_is_help=True)


@dashboards_app.command("push")
def dashboards_push(
    grafana_url: Annotated[
        str | None, typer.Option(envvar="GARDEN_GRAFANA_URL", help="Grafana's URL, e.g. http://localhost:3000.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="GARDEN_GRAFANA_TOKEN", help="A service-account token (Editor role).")
    ] = None,
    user: Annotated[str | None, typer.Option(envvar="GARDEN_GRAFANA_USER", help="Or a user (basic auth).")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="GARDEN_GRAFANA_PASSWORD", help="That user's password (prefer the env var).")
    ] = None,
    folder: Annotated[str, typer.Option(help="The Grafana folder to put them in (created if missing).")] = "Garden",
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where the dashboard JSON files are (default: dashboards/json).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload every dashboard in dashboards/json to Grafana, into one folder, replacing older versions."""
    from garden.grafana_push import (
        DATASOURCE_UID,
        GrafanaError,
        connect,
        datasource_exists,
        ensure_folder,
        find_dashboard_dir,
        load_dashboards,
        push_dashboards,
    )

    if not grafana_url:
        fail("give --grafana-url (or set GARDEN_GRAFANA_URL)", EXIT_USAGE)
    if not folder.strip() or len(folder) > 100:
        fail("--folder must be 1-100 characters", EXIT_USAGE)
    try:
        dashboards = load_dashboards(find_dashboard_dir(directory))
        api = connect(grafana_url, token=token, user=user, password=password)
    except GrafanaError as err:
        fail(str(err), EXIT_USAGE)
    try:
        folder_uid, created = ensure_folder(api, folder)
        pushed = push_dashboards(api, dashboards, folder_uid)
    except GrafanaError as err:
        fail(str(err))
    has_datasource: bool | None
    try:
        has_datasource = datasource_exists(api)
    except GrafanaError:  # the token may not be allowed to read datasources: not our business here
        has_datasource = None
    if as_json:
        body = {"grafana": grafana_url, "folder": {"title": folder, "uid": folder_uid, "created": created},
                "dashboards": [p.to_json() for p in pushed], "datasource": has_datasource}  # fmt: skip
        print(json.dumps(body, indent=2))
        return
    table = Table(title=f"Pushed to {grafana_url}, folder {folder}{' (new)' if created else ''}")
    for column in ("dashboard", "uid", "version", "url"):
        table.add_column(column)
    for p in pushed:
        table.add_row(p.title, p.uid, "" if p.version is None else str(p.version), p.url)
    console.print(table)
    if has_datasource is False:
        console.print(
            f"[yellow]warning:[/yellow] Grafana has no datasource with uid {DATASOURCE_UID!r}, so the dashboards "
            "will show no data: add it as in dashboards/provisioning/datasources/garden.yaml (docs/dashboards.md).",
            highlight=False,
        )
