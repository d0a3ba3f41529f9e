"""The commons from a volunteer's laptop: ``garden member``, ``rota``, ``harvest``, ``me``, ``commons``.

Every command is a request to the hub (the single writer, garden/commons/service.py)
over MQTT; each parses, asks and renders. With the hub down, each fails within a
few seconds saying so, and nothing is queued (docs/commons.md).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from firmware_bridge.topics import NAME_RE
from garden.cli._shared import EXIT_USAGE, ConfigOpt, GardenOpt, JsonOpt, MqttOpt, ask_hub, console, emit, fail

member_app = typer.Typer(help="The garden's members: who they are, how to reach them, their data.",
                         no_args_is_help=True)  # fmt: skip
rota_app = typer.Typer(help="The watering rota: who is on duty when, and swaps.", no_args_is_help=True)
harvest_app = typer.Typer(help="Harvests: log them, share part with the garden, claim shares.", no_args_is_help=True)
commons_app = typer.Typer(help="The garden's shared work, in totals.", no_args_is_help=True)

ERASE_TIMEOUT_S = 60.0
NameArg = Annotated[str, typer.Argument(help="The member's name (1-32 letters, digits, '-' or '_').")]
ShareArg = Annotated[str, typer.Argument(help="The share's id, as `garden harvest shares` lists it (s12).")]


def commons(action: str, body: dict[str, Any], mqtt: str | None, garden: str | None,
            config: Path | None, *, timeout_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    return ask_hub("commons", action, body, mqtt, garden, config, timeout_s=timeout_s)


def _name(what: str, value: str) -> str:
    if not NAME_RE.fullmatch(value):
        fail(f"{what} {value!r}: 1-32 letters, digits, '-' or '_'", EXIT_USAGE)
    return value


def when(ms: Any) -> str:
    """A time in this computer's zone, named, since the hub's messages use the garden's."""
    if not isinstance(ms, int):
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).astimezone().strftime("%a %d %b %H:%M %Z")


def say(text: str) -> None:
    """A line with volunteers' own words in it (a pickup place, a note): printed as is, never as markup."""
    console.print(text, markup=False, highlight=False)


# ---------------------------------------------------------------- members


@member_app.command("add")
def member_add(
    name: NameArg,
    email: Annotated[str | None, typer.Option(help="Email for alerts and share notices.")] = None,
    ntfy: Annotated[str | None, typer.Option(help="ntfy topic for alerts and share notices.")] = None,
    webhook: Annotated[str | None, typer.Option(help="A webhook URL for alerts and share notices.")] = None,
    bed: Annotated[list[str] | None, typer.Option("--bed", help="A bed they care for (repeat); default: all.")] = None,
    quiet_hours: Annotated[str | None, typer.Option(help="No notices then, e.g. 22:00-07:00.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Their time zone (default: the garden's).")] = None,
    notify_shares: Annotated[bool, typer.Option("--notify-shares", help="Tell them when a harvest is shared.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a member, or update one: how to reach them, their beds, their quiet hours."""
    body: dict[str, Any] = {"name": _name("name", name), "beds": [_name("--bed", b) for b in bed or []],
                            "notify_shares": notify_shares}  # fmt: skip
    for key, value in (("email", email), ("ntfy", ntfy), ("webhook", webhook), ("quiet_hours", quiet_hours),
                       ("timezone", timezone)):  # fmt: skip
        if value:
            body[key] = value
    result = commons("member.add", body, mqtt, garden, config)
    if not emit(result, as_json):
        console.print(f"{'Added' if result.get('created') else 'Updated'} member {name}.")


@member_app.command("list")
def member_list(mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None,
                as_json: JsonOpt = False) -> None:  # fmt: skip
    """The members: their beds, whether they can be reached, whether they are in the rota."""
    result = commons("member.list", {}, mqtt, garden, config)
    if emit(result, as_json):
        return
    members = result.get("members", [])
    if not members:
        console.print("No members yet: `garden member add <name> --email ...`.")
        return
    table = Table(title="Members")
    for column in ("name", "beds", "reachable", "share notices", "rota", "since"):
        table.add_column(column)
    for m in members:
        since = "config" if m.get("source") == "config" else when(m.get("joined_ms"))
        table.add_row(m["name"], ", ".join(m.get("beds") or []) or "all", "yes" if m.get("reachable") else "no",
                      "yes" if m.get("notify_shares") else "no", "yes" if m.get("in_rota") else "", since)  # fmt: skip
    console.print(table)


@member_app.command("show")
def member_show(name: NameArg, mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None,
                as_json: JsonOpt = False) -> None:  # fmt: skip
    """One member (their contact details only to themselves) and their contributions."""
    result = commons("member.show", {"name": _name("name", name)}, mqtt, garden, config)
    if emit(result, as_json):
        return
    m = result.get("member", {})
    console.print(f"[bold]{m.get('name')}[/bold], member since {when(m.get('joined_ms'))}", highlight=False)
    for key in ("email", "ntfy", "webhook", "quiet_hours", "timezone"):
        if m.get(key):
            say(f"  {key}: {m[key]}")
    console.print(f"  beds: {', '.join(m.get('beds') or []) or 'all'}; share notices: "
                  f"{'yes' if m.get('notify_shares') else 'no'}; in the rota: "
                  f"{'yes' if result.get('in_rota') else 'no'}")  # fmt: skip
    counts = result.get("contributions") or {}
    console.print("  contributions: " + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
                                         or "none yet"))  # fmt: skip


@member_app.command("remove")
def member_remove(name: NameArg, mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None,
                  as_json: JsonOpt = False) -> None:  # fmt: skip
    """Remove a member; their open watering claims are released. Their history stays (see erase)."""
    result = commons("member.remove", {"name": _name("name", name)}, mqtt, garden, config)
    if not emit(result, as_json):
        console.print(f"Removed {name}. Their past work stays in the record; `garden member erase` removes that too.")


@member_app.command("export")
def member_export(
    name: NameArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
) -> None:
    """All the data the hub holds about you, as JSON (run it as yourself: GARDEN_USER=<name>)."""
    result = commons("member.export", {"name": _name("name", name)}, mqtt, garden, config)
    text = json.dumps(result.get("export", {}), indent=2)
    if output is None:
        print(text)
        return
    output.write_text(text + "\n")
    console.print(f"Wrote {name}'s data to {output}.")


@member_app.command("erase")
def member_erase(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do it: this cannot be undone.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Erase a person: their record goes, and their name is replaced everywhere it is stored.

    The hub's tables, InfluxDB (the dashboards) and the broker's retained messages all
    get a pseudonym in place of the name, so the garden's totals stay right.
    """
    _name("name", name)
    if not yes:
        fail(f"erasing {name} cannot be undone: add --yes", EXIT_USAGE)
    # The hub is known to be up by then; rewriting InfluxDB and the broker takes a few seconds.
    result = commons("member.erase", {"name": name}, mqtt, garden, config, timeout_s=ERASE_TIMEOUT_S)
    if not emit(result, as_json):
        console.print(f"Erased {name}: now {result.get('alias')} in {result.get('rows')} hub rows, "
                      f"{result.get('influx_points')} InfluxDB points, "
                      f"{result.get('retained')} retained messages.")  # fmt: skip
        if result.get("influx_pending"):
            console.print("InfluxDB did not answer: the hub tries again every 30 s while it runs "
                          "(`garden hub status`; if the hub restarts first, run the erasure again).")  # fmt: skip


# ---------------------------------------------------------------- rota


@rota_app.command("show")
def rota_show(
    start: Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default: today).")] = None,
    days: Annotated[int, typer.Option(min=1, max=62, help="How many days.")] = 7,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Who is on watering duty, day by day, with swaps applied."""
    body: dict[str, Any] = {"days": days}
    if start:
        body["from"] = start
    result = commons("rota.show", body, mqtt, garden, config)
    if emit(result, as_json):
        return
    if not result.get("configured"):
        say("This garden keeps no rota: add [commons.rota] to the hub's config (docs/commons.md).")
        return
    table = Table(title="Watering rota")
    table.add_column("day")
    table.add_column("on duty")
    for d in result.get("days", []):
        table.add_row(f"{d['weekday'][:3]} {d['date']}", ", ".join(d["on_duty"]) or "-")
    console.print(table)


@rota_app.command("swap")
def rota_swap(
    day: Annotated[str, typer.Argument(help="The day you hand over, YYYY-MM-DD.")],
    other: Annotated[str, typer.Option("--with", help="Who takes it.")],
    back: Annotated[str | None, typer.Option("--back", help="A day of theirs you take in return.")] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand your watering duty on a day to someone else (and take one of theirs with --back)."""
    body: dict[str, Any] = {"date": day, "with": _name("--with", other)}
    if back:
        body["back"] = back
    result = commons("rota.swap", body, mqtt, garden, config)
    if not emit(result, as_json):
        for s in result.get("swaps", []):
            console.print(f"{s['to']} takes {s['from']}'s duty on {s['date']}.")


# ---------------------------------------------------------------- harvests


@harvest_app.command("log")
def harvest_log(
    bed: Annotated[str, typer.Argument(help="The bed it came from.")],
    crop: Annotated[str, typer.Argument(help="What: tomato, lettuce, ...")],
    quantity: Annotated[str, typer.Argument(help="How much: 5kg, 500g, or a count of pieces (12).")],
    share: Annotated[str | None, typer.Option(help="Offer this much of it to the garden (e.g. 2kg).")] = None,
    pickup: Annotated[str | None, typer.Option(help="When it can be picked up, e.g. 'Sat 10-12'.")] = None,
    place: Annotated[str | None, typer.Option(help="Where, e.g. 'the shed'.")] = None,
    expires: Annotated[str | None, typer.Option(help="The share closes after: 6h, 2d (default from config).")] = None,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a harvest; with --share, offer part of it to the garden."""
    from garden.readings import parse_duration

    body: dict[str, Any] = {"bed": _name("bed", bed), "crop": _name("crop", crop), "quantity": quantity}
    if (pickup or place or expires) and not share:
        fail("--pickup, --place and --expires describe a share: add --share <quantity>", EXIT_USAGE)
    if share:
        body |= {"share": share, "pickup": pickup or "", "place": place or ""}
    if expires:
        try:
            body["expires_s"] = parse_duration(expires)
        except ValueError as err:
            fail(f"--expires {expires!r}: {err}", EXIT_USAGE)
        if not 600 <= body["expires_s"] <= 30 * 86_400:
            fail(f"--expires {expires!r}: a share stays open 10 minutes to 30 days", EXIT_USAGE)
    result = commons("harvest.log", body, mqtt, garden, config)
    if emit(result, as_json):
        return
    h = result["harvest"]
    console.print(f"Logged {h['text']} of {h['crop']} from {h['bed']}.")
    if "share" in result:
        s = result["share"]
        console.print(f"Shared {s['offered_text']} as {s['id']}; it closes {when(s['expires_ms'])}. "
                      f"Others claim it with: garden harvest claim {s['id']} <quantity>")  # fmt: skip


@harvest_app.command("shares")
def harvest_shares(
    show_all: Annotated[bool, typer.Option("--all", help="Include taken and expired shares.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The harvest shares still open: what, how much is left, where and when to pick up."""
    result = commons("harvest.shares", {"all": show_all}, mqtt, garden, config)
    if emit(result, as_json):
        return
    shares = result.get("shares", [])
    if not shares:
        console.print("No open shares." if not show_all else "No shares yet.")
        return
    table = Table(title=f"Harvest shares (rule: {result.get('rule', '').replace('_', ' ')})")
    for column in ("id", "crop", "bed", "left", "of", "from", "pickup", "closes", "status"):
        table.add_column(column)
    for s in shares:
        pickup = " at ".join(x for x in (s.get("pickup"), s.get("place")) if x)
        status = s["status"] + (f", allocated {when(s['allocate_ms'])}" if s.get("allocate_ms") else "")
        table.add_row(s["id"], s["crop"], s["bed"], s["remaining_text"], s["offered_text"], s["who"], pickup,
                      when(s["expires_ms"]), status)  # fmt: skip
    console.print(table)


@harvest_app.command("claim")
def harvest_claim(
    share: ShareArg,
    quantity: Annotated[str, typer.Argument(help="How much you would like: 500g, 1kg, 3 (pieces).")],
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Claim part of a share. You get what you ask, or what is left; never more than was offered."""
    result = commons("harvest.claim", {"share": share, "quantity": quantity}, mqtt, garden, config)
    if emit(result, as_json):
        return
    say(str(result.get("message", "")))
    where = " at ".join(x for x in (result.get("pickup"), result.get("place")) if x)
    if result.get("status") == "granted" and where:
        say(f"Pick it up {where}; then: garden harvest collected {result['share']}")


@harvest_app.command("collected")
def harvest_collected(share: ShareArg, mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None,
                      as_json: JsonOpt = False) -> None:  # fmt: skip
    """Say you picked up what you claimed of a share."""
    result = commons("harvest.collected", {"share": share}, mqtt, garden, config)
    if not emit(result, as_json):
        console.print(f"Picked up {result.get('collected_text')} of {result.get('share')}. Enjoy!")


@harvest_app.command("list")
def harvest_list(
    days: Annotated[int, typer.Option(min=1, max=3660, help="How far back.")] = 30,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The garden's harvests, and the totals by crop and bed."""
    result = commons("harvest.list", {"days": days}, mqtt, garden, config)
    if emit(result, as_json):
        return
    if not result.get("harvests"):
        console.print(f"No harvests in the last {days} days.")
        return
    table = Table(title=f"Harvests, last {days} days")
    for column in ("when", "bed", "crop", "how much", "who"):
        table.add_column(column)
    for h in result["harvests"]:
        table.add_row(when(h["ts"]), h["bed"], h["crop"], h["text"], h["who"])
    console.print(table)
    totals = Table(title="Totals")
    for column in ("crop", "bed", "kg", "pieces"):
        totals.add_column(column)
    for t in result.get("totals", []):
        totals.add_row(t["crop"], t["bed"], f"{t['kg']:g}" if t["kg"] else "", str(t["pieces"] or ""))
    console.print(totals)


# ---------------------------------------------------------------- contributions


def me(mqtt: MqttOpt = None, garden: GardenOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Your own record: your contributions, your open claims, what you claimed of shares."""
    result = commons("me", {}, mqtt, garden, config)
    if emit(result, as_json):
        return
    who = result.get("who")
    duty = " You are on watering duty today." if result.get("on_duty_today") else ""
    console.print(f"Your record, [bold]{who}[/bold]{'' if result.get('member') else ' (not a member yet)'}.{duty}")
    counts = result.get("contributions") or {}
    if counts:
        table = Table(title="Your contributions")
        for column in ("what", "all time", "this month"):
            table.add_column(column)
        for kind, c in counts.items():
            table.add_row(kind.replace("_", " "), str(c["count"]), str(c["this_month"]))
        console.print(table)
    else:
        console.print("No contributions recorded yet.")
    for c in result.get("claims", []):
        console.print(f"Your claim: {c['bed']} ({c['status']}, until {when(c['expires_ms'])})")
    for s in result.get("share_claims", []):
        say(f"From share s{s['share_id']} ({s['crop']}): {s['status']}"
            + (f", pick up {s['pickup']}" if s.get("pickup") else ""))  # fmt: skip


@commons_app.command("totals")
def commons_totals(
    months: Annotated[int, typer.Option(min=1, max=120, help="How many months back.")] = 6,
    by_member: Annotated[bool, typer.Option("--by-member", help="Per person (if the garden allows it).")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The garden's contributions per month: waterings, claims honoured, maintenance, shares."""
    result = commons("totals", {"months": months, "by_member": by_member}, mqtt, garden, config)
    if emit(result, as_json):
        return
    kinds = result.get("kinds", [])
    n = int(result.get("contributors", 0))
    table = Table(title=f"Contributions ({n} {'person' if n == 1 else 'people'})")
    table.add_column("month")
    for kind in kinds:
        table.add_column(kind.replace("_", " "))
    for month, row in result.get("months", {}).items():
        table.add_row(month, *(str(row.get(k, {}).get("count", 0)) for k in kinds))
    console.print(table)
    for who, counts in (result.get("by_member") or {}).items():
        console.print(f"{who}: " + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in counts.items()))
