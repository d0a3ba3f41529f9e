"""``garden water needs`` and ``garden beds ...``: each bed's watering need, and the bed profiles behind it."""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from firmware_bridge.errors import BridgeError, ConfigError
from firmware_bridge.topics import NAME_RE, Topics
from garden.cli._shared import (
    EXIT_USAGE,
    ConfigOpt,
    GardenOpt,
    JsonOpt,
    MqttOpt,
    WaitOpt,
    ask_hub,
    console,
    emit,
    fail,
    hub_settings,
)
from garden.errors import GardenError
from garden.garden_status import format_age, natural_key

water_app = typer.Typer(help="Watering: which bed needs water, and when.", no_args_is_help=True)
beds_app = typer.Typer(help="The beds' profiles: soil, crops and planting dates, overrides.", no_args_is_help=True)

BedArg = Annotated[str, typer.Argument(help="The bed's name, as the nodes are assigned to it (bed-3).")]
STATE_STYLE = {"ok": "green", "soon": "yellow", "needs_water": "bold red", "critical": "bold white on red"}


def _read(mqtt: str | None, garden: str | None, wait: float, config: Any) -> tuple[Any, Topics, dict[str, Any]]:
    from garden.bed_admin import read_beds

    settings = hub_settings(config, mqtt_url=mqtt, garden=garden)
    topics = Topics(settings.garden)
    try:
        return settings, topics, read_beds(settings.broker, topics, wait_s=wait)
    except BridgeError as err:
        fail(str(err))


def _hours(need: dict[str, Any]) -> str:
    hours, low, high = need.get("hours_left"), need.get("hours_low"), need.get("hours_high")
    if not isinstance(hours, int | float):
        forecast = need.get("forecast_trigger") or {}
        methods = {"insufficient": "no estimate yet", "not_drying": "not drying"}
        return methods.get(str(forecast.get("method")), "")
    if hours <= 0:
        return "now"
    text = f"~{hours:.0f} h"
    if isinstance(low, int | float) and isinstance(high, int | float):
        text += f" ({low:.0f}–{high:.0f} h)"
    return text


def _last_watering(need: dict[str, Any], now_ms: int) -> str:
    last = need.get("last_watering")
    if not isinstance(last, dict) or not isinstance(last.get("ts"), int):
        return ""
    text = f"{format_age(now_ms - last['ts'])} ago"
    if isinstance(last.get("mm"), int | float):
        text += f", {last['mm']:.0f} mm"
    if isinstance(last.get("who"), str):
        text += f" by {last['who']}"
    return text


@water_app.command("needs")
def water_needs(
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each bed: need (ok, soon, needs water, critical), moisture, trigger, hours left with range, last watering."""
    _, _, beds = _read(mqtt, garden, wait, config)
    now_ms = time.time_ns() // 1_000_000
    rows = []
    for bed in sorted(beds, key=natural_key):
        info = beds[bed]
        need = dict(info.need or {})
        rows.append({"bed": bed, "nodes": list(info.nodes), "profile": info.profile is not None,
                     "problem": info.problem, **need, "claim": dict(info.claim) if info.claim else None})  # fmt: skip
    if as_json:
        print(json.dumps({"beds": rows, "now_ms": now_ms}))
        return
    if not rows:
        console.print("No beds yet: assign a node with `garden node assign <node> <bed>`.")
        return
    table = Table(title="Watering needs")
    for column in ("bed", "crops", "need", "VWC", "trigger", "water in", "watered", "taken by", "as of"):
        table.add_column(column, justify="right" if column in ("VWC", "trigger") else "left")
    for row in rows:
        state = row.get("state", "unknown")
        label = Text(state.replace("_", " "), style=STATE_STYLE.get(state, "dim"))
        vwc = f"{row['vwc_pct']:.1f}%" if isinstance(row.get("vwc_pct"), int | float) else ""
        trigger = f"{row['trigger_vwc']:.1f}%" if isinstance(row.get("trigger_vwc"), int | float) else ""
        note = row.get("problem") or row.get("note") or ""
        age = f"{format_age(now_ms - row['ts'])} ago" if isinstance(row.get("ts"), int) else "no word from the hub"
        claim = row.get("claim") or {}
        taken = f"{claim['who']}{' (done)' if claim.get('status') == 'done' else ''}" if claim.get("who") else ""
        table.add_row(row["bed"], ", ".join(row.get("crops") or []), label, vwc, trigger,
                      _hours(row) or note, _last_watering(row, now_ms), taken, age)  # fmt: skip
    console.print(table)
    if any((row.get("forecast_trigger") or {}).get("method") == "insufficient" for row in rows):
        console.print("[dim]no estimate yet: a forecast needs 3 h of drydown since the last watering[/dim]")


# -------------------------------------------------------------------- beds


@beds_app.command("list")
def beds_list(
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every bed: soil, crops, trigger, and the nodes in it."""
    import datetime as dt

    from garden.watering.bed_profile import profile_to_json, water_params

    _, _, beds = _read(mqtt, garden, wait, config)
    rows = []
    for bed in sorted(beds, key=natural_key):
        info = beds[bed]
        profile = profile_to_json(info.profile) if info.profile else None
        # The hub's figure when it has one (adjusted for the day's ETc), else today's from the profile.
        trigger = (info.need or {}).get("trigger_vwc")
        if trigger is None and info.profile is not None:
            trigger = round(water_params(info.profile, dt.date.today()).trigger_vwc, 2)
        rows.append({"bed": bed, "profile": profile, "problem": info.problem, "nodes": list(info.nodes),
                     "trigger_vwc": trigger})  # fmt: skip
    if as_json:
        print(json.dumps({"beds": rows}))
        return
    table = Table(title="Beds")
    for column in ("bed", "soil", "crops", "trigger", "nodes"):
        table.add_column(column)
    for row in rows:
        profile = row["profile"] or {}
        crops = ", ".join(f"{c['crop']} ({c['planted']})" for c in profile.get("crops", []))
        trigger = f"{row['trigger_vwc']:.1f}%" if isinstance(row["trigger_vwc"], int | float) else ""
        soil = profile.get("soil") or Text(row["problem"] or "no profile: garden beds set", style="yellow")
        table.add_row(row["bed"], soil, crops, trigger, ", ".join(row["nodes"]))
    console.print(table)


@beds_app.command("show")
def beds_show(
    bed: BedArg,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One bed: its profile, the values derived from FAO-56 (and where each came from), and its need."""
    import datetime as dt

    from garden.watering.bed_profile import profile_to_json, water_params

    _check_bed(bed)
    _, _, beds = _read(mqtt, garden, wait, config)
    info = beds.get(bed)
    if info is None:
        fail(f"no bed {bed!r} on the broker; `garden beds list` shows the beds")
    out: dict[str, Any] = {"bed": bed, "nodes": list(info.nodes), "problem": info.problem, "need": info.need}
    if info.profile is not None:
        params = water_params(info.profile, dt.date.today())
        out["profile"] = profile_to_json(info.profile)
        out["derived"] = {
            "theta_fc": params.theta_fc, "theta_wp": params.theta_wp, "root_depth_mm": params.root_depth_mm,
            "p": params.p, "kc": params.kc, "stage": params.stage, "trigger_vwc": params.trigger_vwc,
            "critical_vwc": params.critical_vwc, "taw_mm": params.taw_mm, "raw_mm": params.raw_mm,
        }  # fmt: skip
        out["sources"] = dict(params.sources)
    if as_json:
        print(json.dumps(out))
        return
    console.print(f"[bold]{bed}[/bold]  nodes: {', '.join(info.nodes) or 'none'}")
    if info.problem:
        console.print(f"[yellow]retained profile not usable:[/yellow] {info.problem}")
    if info.profile is None:
        console.print(f"No profile. Set one: garden beds set {bed} --soil loam --crop lettuce:2026-04-01")
        return
    profile = out["profile"]
    console.print(f"soil {profile['soil']}; crops: " + ", ".join(f"{c['crop']} planted {c['planted']}"
                                                                  for c in profile["crops"]))  # fmt: skip
    table = Table(title="Derived today (FAO-56)")
    for column in ("value", "", "from"):
        table.add_column(column)
    units = {"theta_fc": "% VWC", "theta_wp": "% VWC", "trigger_vwc": "% VWC", "critical_vwc": "% VWC",
             "root_depth_mm": "mm", "taw_mm": "mm", "raw_mm": "mm"}  # fmt: skip
    for key, value in out["derived"].items():
        shown = f"{value:.3g} {units.get(key, '')}" if isinstance(value, float) else str(value)
        table.add_row(key, shown, out["sources"].get(key, ""))
    console.print(table)


def _check_bed(bed: str) -> None:
    if not NAME_RE.fullmatch(bed):
        fail(f"{bed!r} is not a bed name: 1-32 letters, digits, '-' or '_'", EXIT_USAGE)


_CROP_RE = re.compile(r"([a-z_]+):(\d{4}-\d{2}-\d{2})")


@beds_app.command("set")
def beds_set(
    bed: BedArg,
    soil: Annotated[str | None, typer.Option(help="Soil texture: sand, sandy_loam, loam, silt_loam, clay, ...")] = None,
    crop: Annotated[
        list[str] | None,
        typer.Option(help="crop:planting-date, e.g. lettuce:2026-04-01; repeat for several (replaces the list)."),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option(
            help="key=value replacing a derived value (theta_fc, theta_wp, root_depth_mm, p, kc, "
            "trigger_vwc, critical_vwc); key= removes it."
        ),
    ] = None,
    area_m2: Annotated[float | None, typer.Option(help="The bed's area in m², for litres from millimetres.")] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or change a bed's profile (validated first; every error names the bad value)."""
    from garden.bed_admin import edited_profile, publish_profile
    from garden.node_admin import current_user

    _check_bed(bed)
    crops = None
    if crop:
        crops = []
        for spec in crop:
            match = _CROP_RE.fullmatch(spec.strip().lower())
            if match is None:
                fail(f"--crop {spec!r}: write crop:YYYY-MM-DD, e.g. lettuce:2026-04-01", EXIT_USAGE)
            crops.append((match.group(1), match.group(2)))
    overrides: dict[str, float | None] = {}
    for spec in override or []:
        key, sep, value = spec.partition("=")
        if not sep:
            fail(f"--override {spec!r}: write key=value, e.g. trigger_vwc=22", EXIT_USAGE)
        try:
            overrides[key.strip()] = float(value) if value.strip() else None
        except ValueError:
            fail(f"--override {spec!r}: {value!r} is not a number", EXIT_USAGE)
    if soil is None and crops is None and not overrides and area_m2 is None:
        fail("nothing to set: give --soil, --crop, --override or --area-m2", EXIT_USAGE)
    settings, topics, beds = _read(mqtt, garden, wait, config)
    current = beds[bed].profile if bed in beds else None
    try:
        profile, change = edited_profile(bed, current, soil=soil, crops=crops, overrides=overrides, area_m2=area_m2)
        who = current_user(config)
    except ConfigError as err:
        fail(str(err), EXIT_USAGE)
    try:
        event = publish_profile(settings.broker, topics, profile, change, who=who, now_ms=time.time_ns() // 1_000_000)
    except (BridgeError, GardenError) as err:
        fail(str(err))
    if as_json:
        print(json.dumps(event))
    else:
        console.print(event["text"], highlight=False)


# -------------------------------------------------------------------- claims


@water_app.command("claim")
def water_claim(
    bed: BedArg,
    duration: Annotated[
        str | None, typer.Option("--for", help="How long you need: 30m, 2h (default from config).")
    ] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """ "I'll go": claim a bed to water, so nobody else goes. It lapses if no watering is seen."""
    from garden.readings import parse_duration

    _check_bed(bed)
    body: dict[str, Any] = {"bed": bed}
    if duration:
        try:
            body["for_s"] = parse_duration(duration)
        except ValueError as err:
            fail(f"--for {duration!r}: {err}", EXIT_USAGE)
        if not 60 <= body["for_s"] <= 86_400:
            fail(f"--for {duration!r}: a claim lasts 1 minute to 24 hours", EXIT_USAGE)
    result = ask_hub("commons", "water.claim", body, mqtt, garden, config)
    if emit(result, as_json):
        return
    claim = result["claim"]
    until = time.strftime("%a %H:%M %Z", time.localtime(claim["expires_ms"] / 1000))
    verb = "Still yours" if result.get("renewed") else "Yours"
    console.print(f"{verb}: {bed}, until {until}. Then: garden water done {bed} [--litres N]")


@water_app.command("done")
def water_done(
    bed: BedArg,
    litres: Annotated[float | None, typer.Option(min=0.1, max=10_000, help="How much water you gave.")] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Log a watering you did. The bed's moisture rise confirms it (or it is flagged)."""
    _check_bed(bed)
    body: dict[str, Any] = {"bed": bed}
    if litres is not None:
        body["litres"] = litres
    result = ask_hub("commons", "water.done", body, mqtt, garden, config)
    if emit(result, as_json):
        return
    confirm = result.get("confirm")
    tail = "no probe in this bed, so it counts as logged." if confirm == "no probe" else (
        f"waiting for the moisture to rise ({confirm}).")  # fmt: skip
    console.print(f"Thanks! Watering of {bed} logged; {tail}")


@water_app.command("release")
def water_release(bed: BedArg, mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None,
                  as_json: JsonOpt = False) -> None:  # fmt: skip
    """Give up your claim on a bed: someone else can go."""
    _check_bed(bed)
    result = ask_hub("commons", "water.release", {"bed": bed}, mqtt, garden, config)
    if not emit(result, as_json):
        console.print(f"Released {bed}: it is free for someone else.")


@water_app.command("claims")
def water_claims(mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None,
                 as_json: JsonOpt = False) -> None:  # fmt: skip
    """Who is watering what: open claims, and the last day's confirmed, lapsed and flagged ones."""
    result = ask_hub("commons", "water.claims", {}, mqtt, garden, config)
    if emit(result, as_json):
        return
    duty = ", ".join(result.get("on_duty") or [])
    if duty:
        console.print(f"On duty today: {duty}")
    claims = result.get("claims", [])
    if not claims:
        console.print("No claims in the last day.")
        return
    table = Table(title="Watering claims")
    for column in ("bed", "who", "status", "claimed", "until", "litres", "rise"):
        table.add_column(column)
    for c in claims:
        claimed = time.strftime("%a %H:%M", time.localtime(c["claimed_ms"] / 1000))
        until = time.strftime("%a %H:%M", time.localtime(c["expires_ms"] / 1000))
        litres = f"{c['litres']:g}" if c.get("litres") else ""
        table.add_row(
            c["bed"], c["who"], c["status"], claimed, until, litres, f"{c['mm']:.0f} mm" if c.get("mm") else ""
        )
    console.print(table)
