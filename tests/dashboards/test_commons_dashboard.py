"""The Commons board (dashboards/json/commons.json) against what the hub's commons wrote.

The data is written by the real ``garden.commons.service.Commons``
(commons_seed.py: volunteers' requests, time passing, the outbox flushed) into
its own database on the session's influxd, three days up to a minute ago.
Every panel query and annotation query of the board is expanded as Grafana
does (grafana_queries.py) and run against it, over the last 30 days and the
last six hours, and its answer is compared with the commons' own state (its
SQLite tables) and with what the scenario did: the open claims and who holds
them, this week's rota with a swap, what is left of the open shares, the
harvests per crop and bed, the contributions per kind, every event it
recorded. The bed dashboard's harvest annotation is checked on the same data.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from garden.commons.rota import WEEKDAYS
from garden.commons.service import CONTRIBUTION_KINDS
from garden.influx import Influx, InfluxSettings, Series
from tests.dashboards import grafana_queries as gq
from tests.dashboards.commons_seed import GARDEN, ROTA, CommonsFacts, simulate
from tests.dashboards.test_dashboards import datasource_min_interval, load_dashboards, walk_panels
from tests.servers import Influxd

OTHER_GARDEN = "north"
DATABASE = "garden_commons"  # not the sensor seed's "garden": the two fixtures never meet
BOARD = "commons.json"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# docs/schema.md, "The commons": every type of event the commons writes.
EVENT_TYPES = {
    "claim", "claim_released", "claim_expired", "claim_confirmed", "claim_unconfirmed", "watering_done",
    "harvest", "share", "share_claim", "share_allocated", "share_collected", "share_expired", "swap",
    "maintenance", "member", "erasure",
}  # fmt: skip


@dataclass(frozen=True)
class Seeded:
    db: Influx
    facts: CommonsFacts  # GARDEN's
    gardens: dict[str, CommonsFacts]  # every garden on the hub


@pytest.fixture(scope="module")
def commons(influxd: Influxd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    if influxd.proc is None:  # an earlier test may have stopped the session's server
        influxd.start()
    db = Influx(InfluxSettings(url=influxd.url, database=DATABASE))
    db.execute(f'DROP DATABASE "{DATABASE}"')
    db.execute(f'CREATE DATABASE "{DATABASE}" WITH DURATION 400d REPLICATION 1 NAME "raw"')
    now_ms = int(time.time() * 1000) - 60_000  # everything seeded is in the past
    # A regional hub: a second garden's commons, the same scenario, in the same database.
    gardens = {g: simulate(influxd.url, DATABASE, Path(tmp_path_factory.mktemp(f"commons-{g}")), now_ms, g)
               for g in (GARDEN, OTHER_GARDEN)}  # fmt: skip
    yield Seeded(db, gardens[GARDEN], gardens)
    db.execute(f'DROP DATABASE "{DATABASE}"')
    db.close()


def board() -> dict[str, Any]:
    return load_dashboards()[BOARD]


def utc_day(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).date()


def midnight_ms(day: dt.date) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)


def ranges(now_ms: int) -> dict[str, gq.TimeRange]:
    return {"30 days": gq.TimeRange(now_ms - 30 * DAY_MS, now_ms),
            "last 6 hours": gq.TimeRange(now_ms - 6 * HOUR_MS, now_ms)}  # fmt: skip


def panel_range(panel: Mapping[str, Any], rng: gq.TimeRange) -> gq.TimeRange:
    """The panel's own relative time (Grafana's timeFrom), which replaces the dashboard's range.

    Only "now/M" (this month so far) is used; the browser is taken to be in UTC.
    """
    time_from = panel.get("timeFrom")
    if time_from is None:
        return rng
    assert time_from == "now/M", f"{panel['title']}: timeFrom {time_from!r} is not emulated here"
    return gq.TimeRange(midnight_ms(utc_day(rng.to_ms).replace(day=1)), rng.to_ms)


@dataclass(frozen=True)
class Case:
    gardens: dict[str, CommonsFacts]  # the gardens chosen
    rng: gq.TimeRange
    now_ms: int  # the real clock when the query ran: its now()

    def inside(self, ts: int) -> bool:
        return self.rng.from_ms <= ts <= self.rng.to_ms


Check = Callable[[Sequence[Series], Case], None]
CHECKS: dict[str, Check] = {}


def check(title: str) -> Callable[[Check], Check]:
    def register(f: Check) -> Check:
        CHECKS[title] = f
        return f

    return register


def only_series(series: Sequence[Series], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """A query without GROUP BY in its outer part: one series, no tags, these columns."""
    if not series:
        return []
    [s] = series
    assert not s.tags and s.columns == columns, (s.tags, s.columns)
    return s.records()


def grouped(series: Sequence[Series], keys: tuple[str, ...], columns: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """One series per value of the GROUP BY tags, each with one row."""
    out = {}
    for s in series:
        assert set(s.tags) == set(keys) and s.columns == columns, (s.tags, s.columns)
        [row] = s.records()
        out[tuple(s.tags[k] for k in keys)] = row
    assert len(out) == len(series)
    return out


@check("Open watering claims")
def _claims(series: Sequence[Series], case: Case) -> None:
    """Each bed's latest claim while it is open or done, whatever the time range."""
    rows = only_series(series, ("time", "garden", "bed", "who", "status", "until"))
    assert {r["garden"] for r in rows} == set(case.gardens)
    for garden, facts in case.gardens.items():
        got = {r["bed"]: (r["who"], r["status"], r["until"]) for r in rows if r["garden"] == garden}
        assert len(got) == len([r for r in rows if r["garden"] == garden]), "one row per bed"
        latest = {c["bed"]: c for c in facts.claims}  # by id: the newest claim of each bed
        assert got == {bed: (c["who"], c["status"], c["expires_ms"]) for bed, c in latest.items()
                       if c["status"] in ("open", "done")}  # fmt: skip
        _claims_of_the_scenario(got, facts)


def _claims_of_the_scenario(got: dict[str, tuple[Any, ...]], facts: CommonsFacts) -> None:
    # ben will water bed-1; ana watered bed-2 and the soil has yet to show it. bed-1's
    # earlier claim was confirmed, bed-3's watering taken on trust (no probe), cy's
    # claim on bed-4 lapsed, ana's watering there went unconfirmed, cy's next one was released.
    assert {bed: v[:2] for bed, v in got.items()} == {"bed-1": ("ben", "open"), "bed-2": ("ana", "done")}
    assert all(until > facts.now_ms for _, _, until in got.values())


def rota_week(facts: CommonsFacts, today: dt.date) -> list[tuple[int, str, str]]:
    """(midnight, weekday, who) from today for seven days, from the garden's rota and ana's swap."""
    days = []
    for d in (today + dt.timedelta(days=i) for i in range(7)):
        names = list(ROTA.get(WEEKDAYS[d.weekday()], []))
        if d == facts.swap_day:
            names = list(dict.fromkeys("ben" if n == "ana" else n for n in names))
        days.append((midnight_ms(d), d.strftime("%A"), ", ".join(names) or "-"))
    return days


@check("Watering rota this week")
def _rota(series: Sequence[Series], case: Case) -> None:
    rows = only_series(series, ("time", "garden", "weekday", "who"))
    assert {r["garden"] for r in rows} == set(case.gardens)
    today = utc_day(case.now_ms)
    for garden, facts in case.gardens.items():
        got = [(r["time"], r["weekday"], r["who"]) for r in rows if r["garden"] == garden]
        assert got == rota_week(facts, today)
        on_duty = {weekday: who for _, weekday, who in got}
        assert on_duty["Monday"] == ("ben" if facts.swap_day >= today else "ana"), "ana handed this Monday to ben"
        assert on_duty["Thursday"] == "ben, cy" and on_duty["Sunday"] == "-"


@check("Open harvest shares")
def _shares(series: Sequence[Series], case: Case) -> None:
    """Each open share's latest state, with what is left after the claims granted so far."""
    columns = ("time", "garden", "share", "crop", "bed", "remaining", "unit", "who", "text", "until")
    every = only_series(series, columns)
    assert {r["garden"] for r in every} == set(case.gardens)
    for garden, facts in case.gardens.items():
        _shares_of({r["share"]: r for r in every if r["garden"] == garden}, facts)


def _shares_of(rows: dict[str, dict[str, Any]], facts: CommonsFacts) -> None:
    expected = {}
    for s in facts.shares:
        if s["status"] != "open":
            continue
        granted = sum(c["granted"] for c in facts.share_claims if c["share_id"] == s["id"])
        scale = 1000 if s["unit"] == "g" else 1
        expected[f"s{s['id']}"] = (s["crop"], s["bed"], (s["offered"] - granted) / scale,
                                   "kg" if s["unit"] == "g" else "pcs", s["who"], s["expires_ms"])  # fmt: skip
    got = {sid: (r["crop"], r["bed"], r["remaining"], r["unit"], r["who"], r["until"]) for sid, r in rows.items()}
    assert got == expected
    # s1 expired, s3 was all claimed: only s2 (1.5 kg of 2 left) and s4 (1 of 2).
    assert {sid: (r["remaining"], r["unit"]) for sid, r in rows.items()} == {"s2": (1.5, "kg"), "s4": (1, "pcs")}
    assert rows["s2"]["text"] == "2 kg of tomato from bed-2, pickup Sat 10-12 at shed"
    assert rows["s4"]["text"] == "2 pcs of lettuce from bed-3 at gate"


@check("Harvests by crop and bed")
def _harvests(series: Sequence[Series], case: Case) -> None:
    sums: dict[tuple[str, ...], dict[str, float | None]] = {}
    for garden, facts in case.gardens.items():
        for h in facts.harvests:
            if not case.inside(h["ts"]):
                continue
            slot = sums.setdefault((garden, h["crop"], h["bed"]), {"kg": None, "pieces": None})
            field, amount = ("kg", h["amount"] / 1000) if h["unit"] == "g" else ("pieces", h["amount"])
            slot[field] = (slot[field] or 0) + amount
    got = grouped(series, ("garden", "crop", "bed"), ("time", "kg", "pieces"))
    assert set(got) == set(sums)
    for key, row in got.items():
        assert {k: row[k] for k in ("kg", "pieces")} == pytest.approx(sums[key]), key
    if case.rng.to_ms - case.rng.from_ms > 3 * DAY_MS:
        rounded = {k[1:]: tuple(None if v is None else round(v, 9) for v in (r["kg"], r["pieces"]))
                   for k, r in got.items() if k[0] == GARDEN}  # fmt: skip
        assert not rounded or rounded == {("tomato", "bed-2"): (8.5, None), ("courgette", "bed-1"): (3.0, None),
                                          ("beans", "bed-4"): (1.2, None), ("lettuce", "bed-1"): (None, 12),
                                          ("lettuce", "bed-3"): (None, 6)}  # fmt: skip


def _contributions(series: Sequence[Series], case: Case) -> None:
    """The chosen gardens' counts, added up."""
    counts: dict[str, int] = {}
    for facts in case.gardens.values():
        for c in facts.contributions:
            if case.inside(c["ts"]):
                counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    got = {kind: row["n"] for (kind,), row in grouped(series, ("kind",), ("time", "n")).items()}
    assert got == counts
    if case.rng.to_ms - case.rng.from_ms > 3 * DAY_MS:
        totals: dict[str, int] = {}
        for facts in case.gardens.values():
            for kind, n in facts.contributions_by_kind.items():
                totals[kind] = totals.get(kind, 0) + n
        assert got == totals, "the commons' own totals"
        one = {"watering": 4, "claim_honoured": 1, "harvest_shared": 4, "share_picked_up": 1, "node_maintained": 1}
        assert got == {kind: n * len(case.gardens) for kind, n in one.items()}


CHECKS["Contributions"] = _contributions
CHECKS["Contributions this month"] = _contributions


def test_every_panel_has_a_check() -> None:
    titles = {p["title"] for p in walk_panels(board()) if p["type"] != "row"}
    assert titles == set(CHECKS)


def run(db: Influx, query: str) -> tuple[list[Series], int]:
    """The answer, and the real time of the query (its now()), run again if a UTC day began meanwhile."""
    for _ in range(2):
        before = int(time.time() * 1000)
        series = db.query(query)
        if utc_day(before) == utc_day(int(time.time() * 1000)):
            break
    return series, before


@pytest.mark.parametrize("title", sorted(CHECKS))
def test_panel_query_answers(commons: Seeded, title: str) -> None:
    [panel] = [p for p in walk_panels(board()) if p["title"] == title]
    runs = 0
    for range_name, dashboard_range in ranges(int(time.time() * 1000)).items():
        rng = panel_range(panel, dashboard_range)
        for pick, gardens in garden_picks(commons):
            ctx = gq.Context(rng, gq.panel_interval_ms(panel, rng, datasource_min_interval()), {"garden": pick})
            for target in panel["targets"]:
                query = gq.expand_query(target["query"], ctx)
                assert not re.search(r"\$\w", query), f"unexpanded variable in {query}"
                series, now_ms = run(commons.db, query)
                try:
                    CHECKS[title](series, Case(gardens, rng, now_ms))
                except AssertionError as err:
                    raise AssertionError(f"{range_name}, garden={pick.current}: {query}\n{err}") from err
                runs += 1
    assert runs >= 6


def garden_picks(commons: Seeded) -> list[tuple[gq.Variable, dict[str, CommonsFacts]]]:
    """$garden as a gardener picks it: each garden alone, and All; with the gardens it shows."""
    [model] = [v for v in board()["templating"]["list"] if v["name"] == "garden"]
    names = sorted(commons.gardens)
    picks: list[tuple[gq.Variable, dict[str, CommonsFacts]]] = [
        (gq.Variable.from_model(model, names, [g]), {g: commons.gardens[g]}) for g in names
    ]
    picks.append((gq.Variable.from_model(model, names, gq.ALL_VALUE), dict(commons.gardens)))
    return picks


def test_contribution_panels_name_every_kind() -> None:
    for p in walk_panels(board()):
        if any('FROM "contribution"' in t["query"] for t in p.get("targets", [])):
            assert {o["matcher"]["options"] for o in p["fieldConfig"]["overrides"]} == set(CONTRIBUTION_KINDS)
            assert all(t["alias"] == "$tag_kind" for t in p["targets"])


# ------------------------------------------------------------ annotations


def annotation_rows(db: Influx, model: Mapping[str, Any], rng: gq.TimeRange,
                    variables: Mapping[str, gq.Variable] | None = None) -> list[tuple[int, str]]:  # fmt: skip
    ctx = gq.Context(rng, gq.interval_to_ms("5m"), variables or {})
    series = db.query(gq.expand_annotation(model["query"], ctx))
    for s in series:  # Grafana finds the text and the tags by column name
        assert {model["textColumn"], *model["tagsColumn"].split(",")} <= set(s.columns), s.columns
    return sorted((r["time"], r["text"]) for s in series for r in s.records())


def annotation_types(model: Mapping[str, Any]) -> set[str]:
    match = re.search(r"\"type\" =~ /\^\(([\w|]+)\)\$/", model["query"])
    assert match, model["query"]
    return set(match.group(1).split("|"))


def commons_annotations() -> list[dict[str, Any]]:
    return [a for a in board()["annotations"]["list"] if not a.get("builtIn")]


def test_annotations_show_every_kind_of_commons_event_once() -> None:
    shown = [annotation_types(a) for a in commons_annotations()]
    assert set().union(*shown) == EVENT_TYPES
    assert sum(map(len, shown)) == len(EVENT_TYPES), "an event type in two annotations"


@pytest.mark.parametrize("name", [a["name"] for a in commons_annotations()])
def test_annotation_query_answers(commons: Seeded, name: str) -> None:
    [model] = [a for a in commons_annotations() if a["name"] == name]
    types = annotation_types(model)
    for rng in ranges(int(time.time() * 1000)).values():
        for pick, gardens in garden_picks(commons):
            expected = sorted((e.ts, e.text) for f in gardens.values() for e in f.events if e.type in types
                              and rng.from_ms <= e.ts <= rng.to_ms)  # fmt: skip
            assert annotation_rows(commons.db, model, rng, {"garden": pick}) == expected
            assert expected, f"the seeded commons has {name} in every range"


def test_the_seed_recorded_the_events_the_board_shows(commons: Seeded) -> None:
    seen = {e.type for e in commons.facts.events}
    assert seen <= EVENT_TYPES
    # All but an allocation by contribution (the garden's rule is first come) and an erasure.
    assert seen == EVENT_TYPES - {"share_allocated", "erasure"}


def test_bed_dashboard_shows_the_commons_harvests(commons: Seeded) -> None:
    """bed-detail's Harvest annotation: the harvests the commons logged for that bed, and only those."""
    dashboard = load_dashboards()["bed-detail.json"]
    [model] = [a for a in dashboard["annotations"]["list"] if a.get("name") == "Harvest"]
    [garden_model, bed_model] = [v for v in dashboard["templating"]["list"] if v["name"] in ("garden", "bed")]
    beds = sorted({e.bed for e in commons.facts.events if e.bed})
    rng = ranges(int(time.time() * 1000))["30 days"]
    found = {}
    garden = gq.Variable.from_model(garden_model, sorted(commons.gardens), [GARDEN])
    for bed in beds:
        variables = {"garden": garden, "bed": gq.Variable.from_model(bed_model, beds, bed)}
        found[bed] = annotation_rows(commons.db, model, rng, variables)
        assert found[bed] == sorted((e.ts, e.text) for e in commons.facts.events if e.type == "harvest" and
                                    e.bed == bed)  # fmt: skip
    assert [text for _, text in found["bed-2"]] == ["ana harvested 6 kg of tomato from bed-2",
                                                   "ben harvested 2.5 kg of tomato from bed-2"]  # fmt: skip
    assert [text for _, text in found["bed-3"]] == ["cy harvested 6 pcs of lettuce from bed-3"]
