"""``garden influx users``: the two InfluxDB 1.x users, one that only writes and one that only reads.

Parses, calls :func:`garden.influx_access.apply_users` and
:func:`garden.influx_access.check_scopes`, renders. Every secret comes from the
environment or a ``*_FILE`` (docs/configuration.md), never from a flag.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from garden.cli._shared import EXIT_FAILED, EXIT_USAGE, ConfigOpt, InfluxOpt, JsonOpt, console, emit, fail, hub_settings

influx_app = typer.Typer(
    help="InfluxDB credentials: the users the hub writes and the readers read as.", no_args_is_help=True
)

MARKS = {"ok": ("✓", "green"), "fail": ("✗", "bold red"), "warn": ("!", "yellow")}
WriterOpt = Annotated[
    str | None,
    typer.Option(
        help="The user that only writes (default: GARDEN_INFLUX_USERNAME, or influx.username in garden.toml)."
    ),
]
ReaderOpt = Annotated[
    str | None,
    typer.Option(
        help="The user that only reads (default: GARDEN_INFLUX_READ_USERNAME, or influx.read_username in garden.toml)."
    ),
]


@influx_app.command("users")
def influx_users(
    writer: WriterOpt = None,
    reader: ReaderOpt = None,
    influx: InfluxOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or update the InfluxDB 1.x users: one that may only write, one that may only read; then check them.

    Logs in as the admin in GARDEN_INFLUX_ADMIN_USERNAME and GARDEN_INFLUX_ADMIN_PASSWORD(_FILE).
    The writer's password comes from GARDEN_INFLUX_PASSWORD(_FILE), the reader's from
    GARDEN_INFLUX_READ_PASSWORD(_FILE). Safe to run again: it sets the passwords and grants anew.
    Exits 1 when a check of the result fails (e.g. InfluxDB still accepts anonymous requests).
    """
    from firmware_bridge.errors import ConfigError
    from garden.errors import GardenError
    from garden.influx_access import FAIL, apply_users, check_scopes
    from garden.settings import influx_admin_settings

    settings = hub_settings(config, influx_url=influx)
    try:
        admin = influx_admin_settings(settings.influx)
    except ConfigError as err:
        fail(f"config {err}", EXIT_USAGE)
    if admin is None:
        fail("an InfluxDB admin makes the users: set GARDEN_INFLUX_ADMIN_USERNAME and GARDEN_INFLUX_ADMIN_PASSWORD "
             "(or GARDEN_INFLUX_ADMIN_PASSWORD_FILE)", EXIT_USAGE)  # fmt: skip
    s = settings.influx
    writer_name, reader_name = writer or s.username, reader or s.read_username
    if not writer_name or not s.password:
        fail("the writer: set GARDEN_INFLUX_USERNAME (or --writer) and GARDEN_INFLUX_PASSWORD "
             "(or GARDEN_INFLUX_PASSWORD_FILE)", EXIT_USAGE)  # fmt: skip
    if not reader_name or not s.read_password:
        fail("the reader: set GARDEN_INFLUX_READ_USERNAME (or --reader) and GARDEN_INFLUX_READ_PASSWORD "
             "(or GARDEN_INFLUX_READ_PASSWORD_FILE)", EXIT_USAGE)  # fmt: skip
    try:
        apply_users(admin, s.database, (writer_name, s.password), (reader_name, s.read_password))
        scoped = replace(s, token=None, username=writer_name, read_token=None, read_username=reader_name)
        rows = check_scopes(scoped)
    except GardenError as err:
        fail(str(err))
    failed = any(status == FAIL for status, _, _ in rows)
    result = {
        "database": s.database,
        "writer": writer_name,
        "reader": reader_name,
        "ok": not failed,
        "checks": [{"status": status, "subject": subject, "message": message} for status, subject, message in rows],
    }
    if not emit(result, as_json):
        console.print(
            f"InfluxDB {s.url}: user [bold]{writer_name}[/bold] may write to {s.database}, "
            f"user [bold]{reader_name}[/bold] may read it."
        )
        table = Table(title="What each credential may do")
        for column in ("", "who", "what we saw"):
            table.add_column(column, overflow="fold")
        for status, subject, message in rows:
            mark, style = MARKS[status]
            table.add_row(Text(mark, style=style), subject, Text(message))
        console.print(table)
    if failed:
        raise typer.Exit(EXIT_FAILED)
