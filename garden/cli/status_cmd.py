"""``garden status`` and ``garden readings``: what the garden's sensors say, from InfluxDB."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from firmware_bridge.topics import NAME_RE
from garden.cli._shared import (
    EXIT_USAGE,
    ConfigOpt,
    GardenOpt,
    InfluxOpt,
    JsonOpt,
    console,
    err_console,
    fail,
    hub_settings,
)
from garden.errors import GardenError
from garden.garden_status import GardenStatus, format_age

NEED_STYLE = {"ok": "green", "soon": "yellow", "needs water": "dark_orange", "critical": "bold red"}


def _number(value: float | None, unit: str, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}{unit}"


# Below this many columns the sparkline is left out, so that names and values
# are never cut (an 80-column terminal is common in a shed).
SPARKLINE_MIN_WIDTH = 110


def render_status(status: GardenStatus, width: int | None = None) -> RenderableType:
    if not status.rows:
        return Text(f"No readings from garden {status.garden!r} in the last 30 days.")
    width = width if width is not None else console.width
    spark = width >= SPARKLINE_MIN_WIDTH
    table = Table(
        title=f"Garden {status.garden}",
        caption=f"{f'moisture: last {status.hours} h, hourly means; ' if spark else ''}water need: "
        f"≥20 % ok, 15-20 soon, 10-15 needs water, <10 critical · "
        f"{datetime.fromtimestamp(status.now_ms / 1000):%H:%M:%S}",
    )
    longest_bed = max((len(r.bed or "(no bed)") for r in status.rows), default=3)
    longest_nodes = max((len(", ".join(r.nodes)) for r in status.rows), default=5)
    table.add_column("bed", no_wrap=True, min_width=min(longest_bed, 32))
    table.add_column("nodes", min_width=min(longest_nodes, 20))
    table.add_column("moisture", no_wrap=True)
    if spark:
        table.add_column(f"last {status.hours} h", no_wrap=True, overflow="crop")
    for column in ("soil", "air", "tank", "seen", "need"):
        table.add_column(column, no_wrap=True)
    for row in status.rows:
        need = row.need
        cells: list[RenderableType] = [
            row.bed or Text("(no bed)", style="dim italic"),
            ", ".join(row.nodes),
            _number(row.vwc_pct, " %"),
        ]
        if spark:
            cells.append(Text(row.sparkline, style="cyan"))
        cells += [
            _number(row.soil_temp_c, " °C"),
            _number(row.air_temp_c, " °C"),
            _number(row.tank_litres, " l", 0),
            format_age(None if row.last_seen_ms is None else status.now_ms - row.last_seen_ms),
            Text(need or "?", style=NEED_STYLE.get(need or "", "dim")),
        ]
        table.add_row(*cells)
    return table


def status(
    influx: InfluxOpt = None,
    garden: GardenOpt = None,
    watch: Annotated[
        int | None, typer.Option(min=1, max=3600, help="Refresh every this many seconds until Ctrl-C.")
    ] = None,
    count: Annotated[int, typer.Option(min=0, help="With --watch: stop after this many refreshes (0: never).")] = 0,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each bed's moisture now and over the last 24 h, temperatures, tank, last seen and water need.

    Water need comes from fixed moisture bands: 20 % or more ok, 15-20 soon, 10-15 needs water, under 10 critical.
    The watering engine (per-bed needs and rotas) comes in a later release.
    """
    from garden.garden_status import collect_status
    from garden.influx import Influx

    settings = hub_settings(config, influx_url=influx, garden=garden)
    client = Influx(settings.influx)

    def fetch() -> GardenStatus:
        return collect_status(client, settings.garden, int(time.time() * 1000))

    try:
        if watch is None:
            try:
                result = fetch()
            except GardenError as err:
                fail(str(err))
            if as_json:
                print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
            else:
                console.print(render_status(result))
            return
        _watch(fetch, watch, count, as_json)
    finally:
        client.close()


def _watch(fetch: Callable[[], GardenStatus], every: int, count: int, as_json: bool) -> None:
    from rich.live import Live  # only here: a tenth of a second of every other command's start-up

    def frame() -> RenderableType:
        try:
            return render_status(fetch())
        except GardenError as err:
            return Group(Text(f"error: {err}", style="red"), Text(f"(trying again every {every} s)", style="dim"))

    done = 0
    try:
        if as_json:
            while True:
                try:
                    print(json.dumps(fetch().to_json(), ensure_ascii=False), flush=True)
                except GardenError as err:
                    err_console.print(f"[red]error:[/red] {err}", highlight=False)
                done += 1
                if count and done >= count:
                    return
                time.sleep(every)
        with Live(frame(), console=console, auto_refresh=False) as live:
            while True:
                done += 1
                if count and done >= count:
                    return
                time.sleep(every)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return


def readings(
    name: Annotated[str, typer.Argument(help="A bed or a node (both are matched).")],
    since: Annotated[str, typer.Option(help="How far back: 30m, 24h, 7d, 2w.")] = "24h",
    sensor: Annotated[str | None, typer.Option(help="Only this sensor, e.g. sm0.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many, newest first.")] = 500,
    resolution: Annotated[
        str,
        typer.Option(
            help="auto: every reading up to 2 days, hourly means up to 60 days, daily means beyond; "
            "or raw, hourly, daily."
        ),
    ] = "auto",
    influx: InfluxOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the readings of a bed or a node, newest first: value, raw value and any sensor error.

    Over more than 2 days, the hourly means (the hourly rollups), and over more than 60 days the daily means.
    """
    from garden.influx import Influx
    from garden.readings import RESOLUTIONS, check_sensor, choose_resolution, parse_duration, query_readings

    if not NAME_RE.fullmatch(name):
        fail(f"{name!r} is not a bed or node name: 1-32 letters, digits, '-' or '_'", EXIT_USAGE)
    try:
        since_s = parse_duration(since)
    except ValueError as err:
        fail(f"--since: {err}", EXIT_USAGE)
    try:
        if sensor is not None:
            check_sensor(sensor)
    except ValueError as err:
        fail(f"--sensor: {err}", EXIT_USAGE)
    if resolution != "auto" and resolution not in RESOLUTIONS:
        fail(f"--resolution: {resolution!r} is not one of auto, {', '.join(RESOLUTIONS)}", EXIT_USAGE)
    chosen = choose_resolution(since_s) if resolution == "auto" else RESOLUTIONS[resolution]
    settings = hub_settings(config, influx_url=influx, garden=garden)
    client = Influx(settings.influx)
    try:
        found = query_readings(
            client, settings.garden, name, since_s=since_s, now_ms=int(time.time() * 1000), sensor=sensor,
            limit=limit, resolution=chosen,
        )  # fmt: skip
    except GardenError as err:
        fail(str(err))
    finally:
        client.close()
    if as_json:
        body = {"garden": settings.garden, "name": name, "since_s": since_s, "sensor": sensor,
                "resolution": chosen.name, "readings": [r.to_json() for r in found]}  # fmt: skip
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return
    if not found:
        console.print(
            f"No readings of {name!r} in the last {since} in garden {settings.garden!r}"
            f"{f' from sensor {sensor}' if sensor else ''}. `garden status` lists the beds and nodes."
        )
        return
    what, caption = "", None
    if chosen.rolled_up:
        what = f", {chosen.label}"
        caption = (f"{chosen.label.capitalize()} (the {chosen.name} rollups), each at the start of its period: "
                   "value and raw are means. --resolution raw for every reading.")  # fmt: skip
    table = Table(title=f"Readings of {name} ({settings.garden}), last {since}{what}, newest first", caption=caption)
    for column in ("time", "bed", "node", "sensor", "value", "raw", "error"):
        table.add_column(column, no_wrap=column == "time")
    for r in found:
        table.add_row(
            f"{datetime.fromtimestamp(r.time_ms / 1000):%Y-%m-%d %H:%M:%S}",
            r.bed or "",
            r.node,
            r.sensor,
            "" if r.value is None else f"{r.value:g} {r.unit}".strip(),
            "" if r.raw is None else f"{r.raw:g}",
            Text(r.error or "", style="red"),
        )
    console.print(table)
    if len(found) >= limit:
        console.print(f"Showing the newest {limit}: --limit for more, or a shorter --since.")
