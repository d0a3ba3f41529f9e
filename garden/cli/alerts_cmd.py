"""``garden alerts ...``: see the garden's alerts, acknowledge or mute them.

Listing reads the retained alert messages on the broker; ``ack``, ``mute`` and
``unmute`` are requests to the hub (garden/commands.py), which answers within a
few seconds or the command fails saying so.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from firmware_bridge.errors import BridgeError
from firmware_bridge.mqtt_link import read_retained
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
from garden.garden_status import format_age

alerts_app = typer.Typer(help="The garden's alerts: list, show, acknowledge, mute.", no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help="The alert's id, kind/subject, as `garden alerts list` shows it.")]
SEVERITY_STYLE = {"critical": "bold white on red", "warning": "bold red", "info": "yellow"}


def _check_key(key: str) -> None:
    kind, sep, subject = key.partition("/")
    if not sep or not NAME_RE.fullmatch(kind) or not NAME_RE.fullmatch(subject):
        fail(f"{key!r} is not an alert id: kind/subject, e.g. water/bed-3", EXIT_USAGE)


def _alerts(mqtt: str | None, garden: str | None, wait: float, config: Any) -> list[dict[str, Any]]:
    settings = hub_settings(config, mqtt_url=mqtt, garden=garden)
    topics = Topics(settings.garden)
    try:
        retained = read_retained(settings.broker, (topics.all_alerts,), wait_s=wait)
    except BridgeError as err:
        fail(str(err))
    out = []
    for payload in retained.values():
        try:
            body = json.loads(payload)
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("key"), str):
            out.append(body)
    return sorted(out, key=lambda a: (a.get("resolved_ms") is not None, -int(a.get("raised_ms") or 0)))


@alerts_app.command("list")
def alerts_list(
    show_all: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The open alerts (with --all, the resolved ones too), newest first."""
    alerts = [a for a in _alerts(mqtt, garden, wait, config) if show_all or a.get("resolved_ms") is None]
    if as_json:
        print(json.dumps({"alerts": alerts}))
        return
    if not alerts:
        console.print("No open alerts." if not show_all else "No alerts.")
        return
    now_ms = time.time_ns() // 1_000_000
    table = Table(title="Alerts")
    for column in ("id", "severity", "state", "since", "what"):
        table.add_column(column, overflow="fold")
    for a in alerts:
        state = a.get("state", "")
        if a.get("muted_until_ms") and a["muted_until_ms"] > now_ms:
            state += " (muted)"
        since = f"{format_age(now_ms - a['raised_ms'])} ago" if isinstance(a.get("raised_ms"), int) else ""
        sev = str(a.get("severity", ""))
        table.add_row(a["key"], Text(sev, style=SEVERITY_STYLE.get(sev, "")), state, since, str(a.get("text", "")))
    console.print(table)


@alerts_app.command("show")
def alerts_show(
    key: KeyArg,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    wait: WaitOpt = 1.5,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One alert: what, where, since when, who acknowledged it, and its details."""
    _check_key(key)
    found = [a for a in _alerts(mqtt, garden, wait, config) if a.get("key") == key]
    if not found:
        fail(f"no alert {key!r}; `garden alerts list --all` shows them")
    a = found[0]
    if as_json:
        print(json.dumps(a))
        return
    now_ms = time.time_ns() // 1_000_000

    def when(ms: Any) -> str:
        return f"{format_age(now_ms - ms)} ago" if isinstance(ms, int) else "-"

    console.print(f"[bold]{a['key']}[/bold]  {a.get('severity')}  {a.get('state')}")
    console.print(str(a.get("text", "")), highlight=False)
    console.print(f"raised {when(a.get('raised_ms'))}, last change {when(a.get('updated_ms'))}, "
                  f"repeated {a.get('repeats', 0)}x, escalated: {'yes' if a.get('escalated') else 'no'}")  # fmt: skip
    if a.get("acked_by"):
        console.print(f"acknowledged by {a['acked_by']} {when(a.get('acked_ms'))}")
    if a.get("muted_until_ms") and a["muted_until_ms"] > now_ms:
        console.print(f"muted by {a.get('muted_by')} for {format_age(a['muted_until_ms'] - now_ms)} more")
    if a.get("resolved_ms"):
        console.print(f"resolved {when(a['resolved_ms'])}: {a.get('resolution', '')}")
    if a.get("details"):
        console.print(f"details: {json.dumps(a['details'])}", highlight=False)


def _request(action: str, key: str, extra: dict[str, Any], mqtt: str | None, garden: str | None,
             config: Any) -> dict[str, Any]:  # fmt: skip
    _check_key(key)
    return ask_hub("alerts", action, {"key": key, **extra}, mqtt, garden, config)


@alerts_app.command("ack")
def alerts_ack(
    key: KeyArg,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an alert: "I've seen it". Stops its repeats and its escalation; it still resolves."""
    result = _request("ack", key, {}, mqtt, garden, config)
    if not emit(result, as_json):
        console.print(f"{key} acknowledged by {result.get('alert', {}).get('acked_by')}.")


@alerts_app.command("mute")
def alerts_mute(
    key: KeyArg,
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 6h, 2d (1 minute to 90 days).")] = "6h",
    undo: Annotated[bool, typer.Option("--undo", help="Unmute.")] = False,
    mqtt: MqttOpt = None,
    garden: GardenOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mute an alert's notifications for a while; it still shows on MQTT, the dashboards and here."""
    from garden.readings import parse_duration

    if undo:
        result = _request("unmute", key, {}, mqtt, garden, config)
    else:
        try:
            seconds = parse_duration(duration)
        except ValueError as err:
            fail(f"--for {duration!r}: {err}", EXIT_USAGE)
        if not 60 <= seconds <= 90 * 86_400:
            fail("--for: 1 minute to 90 days", EXIT_USAGE)
        result = _request("mute", key, {"for_s": seconds}, mqtt, garden, config)
    if as_json:
        print(json.dumps(result))
    elif undo:
        console.print(f"{key} unmuted.")
    else:
        console.print(f"{key} muted for {duration}.")
