"""Three days of a garden's shared work, written to InfluxDB by the hub's own commons.

The real ``garden.commons.service.Commons`` is driven as the hub drives it:
volunteers' requests through ``Commons.command``, time passing through
``Commons.tick`` (claims lapse, waterings go unconfirmed, shares expire, the
rota is mirrored), the watch's detected watering through
``Commons.watering_seen``, and the outbox sent to InfluxDB by
``Commons.flush``. Nothing here writes line protocol; the lines the commons
wrote are read back from its outbox only to know which events it recorded.
Its MQTT client is never connected (the retained messages are not needed).

Times are relative to the real clock: some panels ask InfluxDB for ``now()``
(the rota reaches into the coming week; open claims and shares are the
latest state, whatever the time range).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garden.commons.service import Commons
from garden.commons.settings import parse_commons
from garden.influx import InfluxSettings
from garden.settings import HubSettings
from garden.watch_settings import WatchSettings

GARDEN = "demo"
HOUR_MS = 3_600_000
TIMEZONE = "UTC"  # the garden's (WatchSettings' default); the rota's days are its days
ROTA = {"monday": ["ana"], "thursday": ["ben", "cy"]}
# The watch's latest need per bed: bed-3 has no probe ("unknown"), so a logged
# watering there is taken at the volunteer's word; the others wait for the soil.
BEDS = {"bed-1": "ok", "bed-2": "soon", "bed-3": "unknown", "bed-4": "ok"}


@dataclass(frozen=True, slots=True)
class Event:
    ts: int
    type: str
    bed: str | None
    text: str


@dataclass(frozen=True, slots=True)
class CommonsFacts:
    now_ms: int  # the commons' last tick
    swap_day: dt.date  # ana hands this Monday's duty to ben
    events: tuple[Event, ...]  # every event point the commons wrote
    claims: tuple[dict[str, Any], ...]  # its SQLite tables at the end
    shares: tuple[dict[str, Any], ...]
    share_claims: tuple[dict[str, Any], ...]
    harvests: tuple[dict[str, Any], ...]
    contributions: tuple[dict[str, Any], ...]
    contributions_by_kind: dict[str, int]  # its own COUNT(*) ... GROUP BY kind


def first_monday_from(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=-day.weekday() % 7)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)


def _event(text: str) -> Event | None:
    """An ``event`` line of the outbox: its time, type and bed tags, and its text."""
    head, rest = text.split(" ", 1)
    measurement, *tags = head.split(",")
    if measurement != "event":
        return None
    tag = dict(t.split("=", 1) for t in tags)
    fields, ts = rest.rsplit(" ", 1)
    match = re.search(r'(?:^|,)text="((?:[^"\\]|\\.)*)"', fields)
    assert match, text
    return Event(int(ts), tag["type"], tag.get("bed"), _unescape(match.group(1)))


def simulate(influx_url: str, database: str, data_dir: Path, now_ms: int, garden: str = GARDEN) -> CommonsFacts:
    """The commons of a small garden over the three days before ``now_ms``, sent to ``database``."""
    settings = HubSettings(garden=garden, data_dir=data_dir, influx=InfluxSettings(url=influx_url, database=database))
    c = Commons(settings, parse_commons({"commons": {"rota": ROTA}}), WatchSettings(timezone=TIMEZONE))
    c.beds.update(BEDS)
    swap_day = first_monday_from(dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date())

    def at(hours_ago: float) -> int:
        return now_ms - int(hours_ago * HOUR_MS)

    def do(hours_ago: float, who: str, action: str, **body: Any) -> dict[str, Any]:
        c.tick(at(hours_ago))  # time passes first: what lapsed by now has lapsed
        return c.command({"who": who, "action": action, **body}, at(hours_ago))

    try:
        for name in ("ana", "ben", "cy"):
            do(72, name, "member.add", name=name)
        # s1: lettuce by the piece, open for a day; ana takes 3 of 4, the last one expires.
        do(70, "cy", "harvest.log", bed="bed-1", crop="Lettuce", quantity="12", share="4", expires_s=86_400)
        do(69, "ana", "harvest.claim", share="s1", quantity="3")
        do(50, "ana", "harvest.log", bed="bed-1", crop="courgette", quantity="3kg")
        # ben claims bed-1, logs his watering, and the watch sees the soil rise: confirmed.
        do(40, "ben", "water.claim", bed="bed-1")
        do(39, "ben", "water.done", bed="bed-1", litres=20)
        c.watering_seen({"bed": "bed-1", "ts": at(39.2), "mm": 8.0}, at(38.5))
        # s2: tomatoes for a weekend pickup; ben takes 500 g, 1.5 kg are left.
        do(30, "ana", "harvest.log", bed="bed-2", crop="tomato", quantity="6kg", share="2kg", pickup="Sat 10-12",
           place="shed", expires_s=5 * 86_400)  # fmt: skip
        do(29, "ben", "harvest.claim", share="s2", quantity="500g")
        # s3: beans, all of it claimed by ana (taken), and picked up.
        do(26, "ben", "harvest.log", bed="bed-4", crop="beans", quantity="1.2kg", share="1kg")
        do(25, "ana", "harvest.claim", share="s3", quantity="1kg")
        do(20, "ana", "harvest.collected", share="s3")
        do(12, "ben", "node.maintained", node="bed-1a", what="battery", note="new cells")
        # cy claims bed-4 for an hour and does not go: it lapses. ana waters it;
        # the soil never shows it: unconfirmed.
        do(10, "cy", "water.claim", bed="bed-4", for_s=3600)
        do(8, "ana", "water.done", bed="bed-4", litres=12)
        do(6.5, "ana", "water.done", bed="bed-3", litres=10)  # no probe: confirmed on her word
        do(5, "ben", "harvest.log", bed="bed-2", crop="tomato", quantity="2.5kg")
        # s4: lettuce from bed-3, ana takes one of two.
        do(4, "cy", "harvest.log", bed="bed-3", crop="lettuce", quantity="6", share="2", place="gate")
        do(3.5, "ana", "harvest.claim", share="s4", quantity="1")
        do(3, "ana", "rota.swap", **{"with": "ben", "date": swap_day.isoformat()})
        # Open now: ben will water bed-1; ana watered bed-2 and the hub waits for the soil.
        do(2, "ben", "water.claim", bed="bed-1")
        do(1.5, "ana", "water.done", bed="bed-2", litres=15)
        # cy claims bed-4 and then cannot go.
        do(1, "cy", "water.claim", bed="bed-4")
        do(0.8, "cy", "water.release", bed="bed-4")
        c.tick(now_ms)
        lines = [text for _, text in c.store.pending(limit=1_000_000)]
        while pending := c.store.pending():
            c.flush()
            assert c.store.pending() != pending, "the commons could not write to InfluxDB"
        store = c.store
        by_kind = {r["kind"]: r["n"] for r in store.rows("SELECT kind, COUNT(*) AS n FROM contributions GROUP BY kind")}
        return CommonsFacts(
            now_ms=now_ms,
            swap_day=swap_day,
            events=tuple(e for e in map(_event, lines) if e is not None),
            claims=tuple(store.rows("SELECT * FROM water_claims ORDER BY id")),
            shares=tuple(store.rows("SELECT * FROM shares ORDER BY id")),
            share_claims=tuple(store.rows("SELECT * FROM share_claims ORDER BY id")),
            harvests=tuple(store.rows("SELECT * FROM harvests ORDER BY id")),
            contributions=tuple(store.rows("SELECT * FROM contributions ORDER BY id")),
            contributions_by_kind=by_kind,
        )
    finally:
        c.store.close()
        c.influx.close()
