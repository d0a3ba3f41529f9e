"""What people read: short messages that say what, where, how sure and what to do. Pure.

"Bed 3 tomatoes: 19% VWC, trigger 22%. Water within ~14 h (10–20 h).
Last watered Tuesday by Ana."
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence

from garden.watering.drydown import Forecast, hours_text


def when_text(ts_ms: int, now_ms: int, tz: str) -> str:
    """ "today 14:05", "yesterday", "Tuesday", "12 May", in the garden's time zone."""
    zone = zoneinfo.ZoneInfo(tz)
    then = dt.datetime.fromtimestamp(ts_ms / 1000, zone)
    now = dt.datetime.fromtimestamp(now_ms / 1000, zone)
    days = (now.date() - then.date()).days
    if days <= 0:
        return f"today {then:%H:%M}"
    if days == 1:
        return "yesterday"
    if days < 7:
        return then.strftime("%A")
    return f"{then.day} {then:%b}"


def bed_title(bed: str, crops: Sequence[str]) -> str:
    name = bed.replace("-", " ").replace("_", " ")
    name = name[0].upper() + name[1:] if name else bed
    return f"{name} {', '.join(crops)}".strip()


def water_text(
    *,
    bed: str,
    crops: Sequence[str],
    state: str,
    vwc: float,
    trigger_vwc: float,
    critical_vwc: float,
    to_critical: Forecast | None,
    last_watering: tuple[int, str | None] | None,
    now_ms: int,
    tz: str,
) -> str:
    parts = [f"{bed_title(bed, crops)}: {vwc:.0f}% VWC, trigger {trigger_vwc:.0f}%."]
    if state == "critical":
        parts.append(f"Past the critical level ({critical_vwc:.0f}%): water now.")
    elif to_critical is not None and to_critical.hours is not None and to_critical.hours > 0:
        parts.append(f"Water within {hours_text(to_critical)}.")
    else:
        parts.append("Water today.")
    if last_watering is not None:
        ts, who = last_watering
        parts.append(f"Last watered {when_text(ts, now_ms, tz)}" + (f" by {who}." if who else "."))
    else:
        parts.append("No watering seen in the recent data.")
    return " ".join(parts)


def node_text(node: str, bed: str | None, what: str) -> str:
    where = f" ({bed})" if bed else ""
    return f"Node {node}{where}: {what}"
