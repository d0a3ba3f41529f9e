"""The Grafana dashboards and their provisioning: valid models, and queries that answer.

Grafana itself cannot run here, so queries are expanded the way Grafana does and
run against the real InfluxDB (the session's influxd 1.6; the expansion, macros,
interval and template variables, is in grafana_queries.py). The data is written
through the hub's own point builder, ``garden.points.telemetry_lines`` (and
``garden.points.line`` for status points and events, ``garden.ingest.need_points``
and ``alert_points`` for the watch's water needs and alert changes), from three
simulated nodes over three days (seed.py); tests/integration runs the dashboards
against the full MQTT pipeline.

Every panel query, annotation query and template variable query is run for
every value of the dashboard's variable, over the whole three days, the last six
hours, the last 7 days and the last 365 days (so that ``$rp`` reads raw, hourly and
daily: the seed holds the hub's rollups, computed with ``garden.rollups.roll_up``),
and its answer is compared with what the simulated garden
actually sent: one series per bed, tank, node or port as the panel groups them,
the right columns, and values recomputed here from the data.

The Commons board (commons.json) is checked the same way, against data the
hub's commons writes itself, in test_commons_dashboard.py; its model is
checked here with the others.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from garden.influx import Influx, InfluxSettings, Series
from garden.rollups import DAILY, HOURLY, roll_up
from garden.schema import RP_CHOICES, ensure_schema
from tests.dashboards import grafana_queries as gq
from tests.dashboards import yaml_subset
from tests.dashboards.seed import DAY_MS, GARDEN, NODES, OTHER_GARDEN, OTHER_SEED, Facts, NodeFacts, simulate
from tests.servers import Influxd

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
DASHBOARD_FILES = sorted((DASHBOARDS / "json").glob("*.json"))
DATASOURCE_YAML = DASHBOARDS / "provisioning" / "datasources" / "garden.yaml"
DATASOURCE_V1_EXAMPLE = DASHBOARDS / "provisioning" / "datasources" / "garden-influx1.yaml.example"
PROVIDER_YAML = DASHBOARDS / "provisioning" / "dashboards" / "garden.yaml"
DS_UID = "garden-influx"
DATABASE = "garden"
# Boards about the commons are proven against the hub's commons' own data, not
# the sensor seed here: test_commons_dashboard.py.
COMMONS_BOARDS = frozenset({"commons.json"})
HOUR_MS = 3_600_000

try:  # PyYAML is not a project dependency; the strict subset reader stands in
    import yaml as _pyyaml
except ImportError:  # pragma: no cover - depends on the machine
    _pyyaml = None


def load_yaml(path: Path) -> Any:
    text = path.read_text()
    if _pyyaml is not None:
        return _pyyaml.safe_load(text)
    return yaml_subset.loads(text, str(path))


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def sensor_dashboards() -> dict[str, dict[str, Any]]:
    """The boards whose answers are checked against the sensor seed below."""
    return {name: d for name, d in load_dashboards().items() if name not in COMMONS_BOARDS}


def datasource_min_interval() -> str | None:
    interval: str | None = load_yaml(DATASOURCE_YAML)["datasources"][0]["jsonData"].get("timeInterval")
    return interval


def walk_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


# ===================================================== provisioning (YAML)


ENV_ONLY = re.compile(r"^(?:[^$]*\$\{[A-Z][A-Z0-9_]*\})+[^$]*$")


def test_datasource_is_influxql_on_2x_with_a_token_from_the_environment() -> None:
    doc = load_yaml(DATASOURCE_YAML)
    assert doc["apiVersion"] == 1
    [ds] = doc["datasources"]
    assert ds["uid"] == DS_UID and ds["type"] == "influxdb" and ds["access"] == "proxy"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == DATABASE
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token ${GARDEN_GRAFANA_INFLUX_TOKEN}"}
    assert ENV_ONLY.match(ds["url"]), "the URL comes from the environment"
    gq.interval_to_ms(ds["jsonData"]["timeInterval"])  # a valid Grafana interval
    for forbidden in ("password", "basicAuthPassword", "token"):
        assert forbidden not in ds and forbidden not in ds["jsonData"]


def test_influx1_example_uses_the_same_uid_and_user_and_password_from_the_environment() -> None:
    assert not DATASOURCE_V1_EXAMPLE.name.endswith((".yaml", ".yml")), "Grafana must not load it"
    [v1] = load_yaml(DATASOURCE_V1_EXAMPLE)["datasources"]
    [v2] = load_yaml(DATASOURCE_YAML)["datasources"]
    assert v1["uid"] == v2["uid"] == DS_UID
    assert v1["jsonData"]["dbName"] == DATABASE and v1["jsonData"]["version"] == "InfluxQL"
    assert ENV_ONLY.match(v1["user"]) and ENV_ONLY.match(v1["url"])
    assert set(v1["secureJsonData"]) == {"password"} and ENV_ONLY.match(v1["secureJsonData"]["password"])
    assert "httpHeaderName1" not in v1["jsonData"]
    assert v1["jsonData"]["timeInterval"] == v2["jsonData"]["timeInterval"]


def test_no_literal_secret_in_any_provisioning_file() -> None:
    def secrets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
        if isinstance(node, Mapping):
            for k, v in node.items():
                yield from secrets(v, k)
        elif isinstance(node, list):
            for v in node:
                yield from secrets(v, key)
        elif re.search(r"password|secret|token|httpHeaderValue|^user$", key, re.IGNORECASE):
            yield key, node

    for path in (DATASOURCE_YAML, DATASOURCE_V1_EXAMPLE, PROVIDER_YAML):
        for key, value in secrets(load_yaml(path)):
            assert isinstance(value, str) and ENV_ONLY.match(value), f"{path.name}: {key} is literal"


def test_dashboard_provider_loads_the_mounted_json_folder() -> None:
    doc = load_yaml(PROVIDER_YAML)
    assert doc["apiVersion"] == 1
    [provider] = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/garden"


def test_yaml_subset_reader_agrees_with_pyyaml() -> None:
    """The fallback reader must read our files exactly as PyYAML (and so Grafana) does."""
    files = (DATASOURCE_YAML, DATASOURCE_V1_EXAMPLE, PROVIDER_YAML)
    ours = [yaml_subset.loads(p.read_text(), str(p)) for p in files]
    if _pyyaml is not None:
        assert ours == [_pyyaml.safe_load(p.read_text()) for p in files]
        return
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.fail("PyYAML is needed to check the YAML reader: pip install -e '.[test]'")
    script = "import json,sys,yaml; print(json.dumps([yaml.safe_load(open(f)) for f in sys.argv[1:]]))"
    run = subprocess.run([python, "-c", script, *map(str, files)], capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        pytest.fail("PyYAML is needed to check the YAML reader: pip install -e '.[test]'")
    assert ours == json.loads(run.stdout)


def test_yaml_subset_reader_refuses_what_it_does_not_understand() -> None:
    for bad in ("a: {b: 1}\n", "a: &x 1\n", "a: |\n  text\n", "a: 1\n a: 2\n", "a: 1\na: 2\n"):
        with pytest.raises(yaml_subset.YamlSubsetError):
            yaml_subset.loads(bad)


# ========================================================= dashboard models

DASHBOARD_KEYS = {"uid", "title", "panels", "templating", "annotations", "schemaVersion", "time", "tags"}
PANEL_TYPES = {"timeseries", "stat", "bargauge", "table", "row", "text", "gauge", "state-timeline"}
UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def test_five_dashboards_with_unique_uids_and_titles() -> None:
    dashboards = load_dashboards()
    assert len(dashboards) == 5
    assert set(dashboards) >= COMMONS_BOARDS
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(uids)) == 5 and len(set(titles)) == 5
    assert all(UID_RE.match(uid) for uid in uids)


@pytest.mark.parametrize("name", [p.name for p in DASHBOARD_FILES])
def test_dashboard_model(name: str) -> None:
    d = load_dashboards()[name]
    assert set(d) >= DASHBOARD_KEYS, f"missing {DASHBOARD_KEYS - set(d)}"
    assert 36 <= d["schemaVersion"] <= 41
    assert d.get("id") is None, "provisioned dashboards carry no database id"
    assert d["time"]["from"].startswith("now-")
    panels = list(walk_panels(d))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in panels:
        where = f"{name} panel {p['id']} {p.get('title')!r}"
        assert p["type"] in PANEL_TYPES, where
        assert p.get("title") and p.get("description"), f"{where}: needs a title and a description"
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] >= 1 and pos["h"] >= 1, where
        assert pos["x"] + pos["w"] <= 24, f"{where}: wider than the 24-column grid"
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{where}: overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "influxdb", "uid": DS_UID}, where
        defaults = p["fieldConfig"]["defaults"]
        assert defaults.get("unit"), f"{where}: needs a unit"
        assert defaults["thresholds"]["steps"][0]["value"] is None, f"{where}: first threshold is the base"
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), where
        for t in p["targets"]:
            assert t["datasource"] == {"type": "influxdb", "uid": DS_UID}, where
            assert t["rawQuery"] is True and t["query"].lstrip().upper().startswith("SELECT"), where
            assert t["resultFormat"] in ("time_series", "table"), where
            if "GROUP BY time(" in t["query"]:
                assert "$timeFilter" in t["query"], f"{where}: a time grouping needs $timeFilter"
    for a in d["annotations"]["list"]:
        if a.get("builtIn"):
            assert a["datasource"]["type"] == "grafana"
            continue
        assert a["datasource"] == {"type": "influxdb", "uid": DS_UID}
        assert "$timeFilter" in a["query"]
        target = a["target"]  # what Grafana 10+ runs; the top-level fields are the legacy form
        assert target["query"] == a["query"] and target["fromAnnotations"] is True
        assert target["textColumn"] == a["textColumn"] and target["tagsColumn"] == a["tagsColumn"]
    for v in d["templating"]["list"]:
        assert v["type"] == "query" and v["datasource"] == {"type": "influxdb", "uid": DS_UID}
        assert v["query"] == v["definition"]


@pytest.mark.parametrize("name", [p.name for p in DASHBOARD_FILES])
def test_every_variable_used_is_defined(name: str) -> None:
    d = load_dashboards()[name]
    defined = {v["name"] for v in d["templating"]["list"]}
    texts: list[tuple[str, str, bool]] = []  # (where, text, is_alias)
    for p in walk_panels(d):
        texts.append((f"panel {p['id']} title", p["title"], False))
        for t in p.get("targets", []):
            texts.append((f"panel {p['id']} query {t['refId']}", t["query"], False))
            texts.append((f"panel {p['id']} alias {t['refId']}", t.get("alias", ""), True))
    for a in d["annotations"]["list"]:
        texts.append((f"annotation {a['name']}", a.get("query", ""), False))
    for v in d["templating"]["list"]:
        texts.append((f"variable {v['name']}", v["query"], False))
    for where, text, is_alias in texts:
        for used in gq.names_used(text):
            ok = used in defined or used in gq.MACROS or (is_alias and gq.ALIAS_PATTERNS.match(used))
            assert ok, f"{name} {where}: ${used} is not a variable of this dashboard or a Grafana macro"
    for v in d["templating"]["list"]:
        assert any(f"${v['name']}" in text for _, text, _ in texts), f"variable {v['name']} is never used"


WATER_NEED = [("red", None), ("orange", 15), ("green", 20), ("blue", 40)]


def test_moisture_panels_colour_by_water_need() -> None:
    found = 0
    for d in load_dashboards().values():
        for p in walk_panels(d):
            if any('"vwc_pct"' in t["query"] and re.search(r'FROM (?:"\$rp"\.)?"soil_moisture"', t["query"])
                   for t in p.get("targets", [])):  # fmt: skip
                steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                assert [(s["color"], s["value"]) for s in steps] == WATER_NEED, p["title"]
                assert p["fieldConfig"]["defaults"]["unit"] == "percent"
                found += 1
    assert found >= 3


# The hub's water need (docs/schema.md, water_need.level): the words and colours gardeners see.
GREY = "#8e8e8e"
NEED_LEVELS = {-1: ("Unknown", GREY), 0: ("OK", "green"), 1: ("Water soon", "yellow"),
               2: ("Needs water", "orange"), 3: ("Critical: water now", "red")}  # fmt: skip


# "level" is selected only so that the row is the latest evaluation, even one without a forecast.
HIDE_LEVEL = {"id": "filterFieldsByName", "options": {"exclude": {"names": ["level"]}}}


def need_mapping(mappings: Sequence[Mapping[str, Any]]) -> dict[int, tuple[str, str]]:
    [values] = [m["options"] for m in mappings if m["type"] == "value"]
    return {int(k): (v["text"], v["color"]) for k, v in values.items()}


def field_config(panel: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A field's config: the defaults with the properties of the overrides matching ``name`` by name."""
    config = dict(panel["fieldConfig"]["defaults"])
    for o in panel["fieldConfig"]["overrides"]:
        if o["matcher"] == {"id": "byName", "options": name}:
            config.update({prop["id"]: prop["value"] for prop in o["properties"]})
    return config


def test_need_panels_show_each_level_in_words_and_colour() -> None:
    found = []
    for d in load_dashboards().values():
        for p in walk_panels(d):
            for t in p.get("targets", []):
                if 'FROM "water_need"' not in t["query"] or '"level"' not in t["query"]:
                    continue
                if p["type"] == "stat" and 'last("level")' in t["query"]:
                    config = p["fieldConfig"]["defaults"]
                elif p["type"] == "table":
                    config = field_config(p, "level")
                    assert config["custom.cellOptions"]["type"] == "color-background"
                else:  # selected for the latest row only (Water in), not shown
                    assert p["transformations"] == [HIDE_LEVEL], p["title"]
                    continue
                assert need_mapping(config["mappings"]) == NEED_LEVELS, p["title"]
                found.append((d["uid"], p["title"]))
    assert sorted(found) == [("garden-bed", "Need"), ("garden-overview", "When to water"),
                             ("garden-overview", "Which beds need water")]  # fmt: skip


def test_bed_moisture_graph_draws_the_beds_own_lines() -> None:
    """Trigger, critical level and field capacity from water_need, the band between them filled."""
    bed = load_dashboards()["bed-detail.json"]
    [p] = [p for p in walk_panels(bed) if p["title"] == "Soil moisture in $bed"]
    aliases = {t["alias"]: t["query"] for t in p["targets"]}
    for alias, field in (("Trigger", "trigger_vwc"), ("Critical", "critical_vwc"), ("Field capacity", "fc_vwc")):
        assert f'mean("{field}")' in aliases[alias] and 'FROM "water_need"' in aliases[alias], alias
    assert p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "off", "the bed's own lines instead"
    overrides = {o["matcher"]["options"] for o in p["fieldConfig"]["overrides"]}
    assert overrides <= set(aliases), "an override names a series the panel does not have"
    assert field_config(p, "Trigger")["custom.fillBelowTo"] == "Critical"
    colours = {name: field_config(p, name)["color"]["fixedColor"] for name in ("Trigger", "Critical", "Field capacity")}
    assert colours == {"Trigger": "orange", "Critical": "red", "Field capacity": "blue"}


# ================================================ Grafana's query expansion


def ctx_for(text_vars: Mapping[str, gq.Variable] | None = None, interval_ms: int = 300_000) -> gq.Context:
    return gq.Context(gq.TimeRange(1_700_000_000_000, 1_700_086_400_000), interval_ms, text_vars or {})


def test_time_filter_and_interval_macros_expand_as_the_influxql_backend_does() -> None:
    q = 'SELECT mean("x") FROM "m" WHERE $timeFilter GROUP BY time($__interval) -- $__interval_ms $interval'
    assert gq.expand_query(q, ctx_for()) == (
        'SELECT mean("x") FROM "m" WHERE time >= 1700000000000ms and time <= 1700086400000ms '
        "GROUP BY time(5m) -- 300000 5m"
    )
    assert gq.expand_query("${__from} ${__to}", ctx_for()) == "1700000000000 1700086400000"


@pytest.mark.parametrize(
    ("span_ms", "points", "min_interval", "expected"),
    [
        (6 * HOUR_MS, 1920, "5m", "5m"),  # 11 s rounds to 10 s, raised to the datasource's 5 m
        (6 * HOUR_MS, 1920, None, "10s"),
        (3 * DAY_MS, 1920, "5m", "5m"),
        (30 * DAY_MS, 1920, "5m", "20m"),  # 1350 s rounds to 20 m
        (30 * DAY_MS, 500, "5m", "1h"),  # 5184 s rounds to 1 h
        (30 * DAY_MS, 480, "5m", "2h"),  # 5400 s is where 2 h begins
        (365 * DAY_MS, 1920, "5m", "6h"),
    ],
)
def test_interval_is_grafanas(span_ms: int, points: int, min_interval: str | None, expected: str) -> None:
    rng = gq.TimeRange(0, span_ms)
    assert gq.format_interval(gq.calculate_interval(rng, points, min_interval)) == expected


def test_template_variables_are_escaped_only_where_grafana_escapes_them() -> None:
    bed = gq.Variable("bed", "bed.1(b)")
    beds = gq.Variable("beds", ["a.b", "c"], options=["a.b", "c", "d"], multi=True, include_all=True)
    ctx = ctx_for({"bed": bed, "beds": beds})
    # Used inside a regex somewhere in the query: escaped, there and everywhere else in it.
    regex_use = """WHERE "bed" =~ /^$bed$/ AND "x" = '$bed'"""
    assert gq.expand_query(regex_use, ctx) == r"""WHERE "bed" =~ /^bed\.1\(b\)$/ AND "x" = 'bed\.1\(b\)'"""
    assert gq.expand_query("WHERE \"bed\" = '$bed'", ctx) == "WHERE \"bed\" = 'bed.1(b)'"
    assert gq.expand_query("WHERE \"bed\" = '${bed}'", ctx) == "WHERE \"bed\" = 'bed.1(b)'"
    assert gq.expand_query('"b" =~ /^$beds$/', ctx) == r'"b" =~ /^(a\.b|c)$/'
    all_beds = gq.Context(ctx.time_range, ctx.interval_ms, {"beds": gq.Variable(
        "beds", gq.ALL_VALUE, options=["a", "b/c"], multi=True, include_all=True)})  # fmt: skip
    assert gq.expand_query('"b" =~ /^$beds$/', all_beds) == r'"b" =~ /^(a|b\/c)$/'
    custom_all = gq.Context(ctx.time_range, ctx.interval_ms, {"beds": gq.Variable(
        "beds", gq.ALL_VALUE, options=["a"], multi=True, include_all=True, all_value=".*")})  # fmt: skip
    assert gq.expand_query('"b" =~ /^$beds$/', custom_all) == '"b" =~ /^.*$/'
    numeric = gq.Context(ctx.time_range, ctx.interval_ms, {"bed": gq.Variable("bed", "3.5")})
    assert gq.expand_query('"bed" =~ /^$bed$/', numeric) == '"bed" =~ /^3.5$/'
    # Annotations: Grafana passes no query text, so a single value is never escaped.
    assert gq.expand_annotation('"bed" =~ /^$bed$/', ctx) == '"bed" =~ /^bed.1(b)$/'
    assert gq.expand_query("$unknown stays", ctx) == "$unknown stays"


# ================================================== the real InfluxDB, seeded


@dataclass(frozen=True)
class Seeded:
    db: Influx
    facts: Facts  # the garden GARDEN
    gardens: Mapping[str, Facts]  # every garden on the hub: GARDEN and OTHER_GARDEN


@pytest.fixture(scope="module")
def seeded(influxd: Influxd) -> Iterator[Seeded]:
    if influxd.proc is None:  # an earlier test may have stopped the session's server
        influxd.start()
    db = Influx(InfluxSettings(url=influxd.url, database=DATABASE))
    db.execute(f'DROP DATABASE "{DATABASE}"')
    # As `garden hub init` does on 1.x (docs/schema.md): raw is the default policy.
    db.execute(f'CREATE DATABASE "{DATABASE}" WITH DURATION 400d REPLICATION 1 NAME "raw"')
    db.execute(f'CREATE RETENTION POLICY "hourly" ON "{DATABASE}" DURATION 1825d REPLICATION 1')
    db.execute(f'CREATE RETENTION POLICY "daily" ON "{DATABASE}" DURATION INF REPLICATION 1')
    end_ms = int(time.time() // 86_400) * DAY_MS  # the last midnight (UTC): whole days, all in the past
    # A regional hub: two gardens in one database, each with a bed-1, a node bed-1a and so on.
    gardens = {GARDEN: simulate(end_ms), OTHER_GARDEN: simulate(end_ms, OTHER_GARDEN, OTHER_SEED)}
    for facts in gardens.values():
        for i in range(0, len(facts.lines), 5000):
            db.write_lines(facts.lines[i : i + 5000])
    ensure_schema(db)  # as `garden hub init` again: the dashboards' rp_choice points
    start_ms = min(f.start_ms for f in gardens.values())
    for period in (HOURLY, DAILY):  # as the hub does: every period that holds a reading
        roll_up(db, period, start_ms - DAY_MS, end_ms + DAY_MS)
    yield Seeded(db, gardens[GARDEN], gardens)
    db.execute(f'DROP DATABASE "{DATABASE}"')
    db.close()


def ranges(facts: Facts) -> dict[str, gq.TimeRange]:
    """Ranges over the seeded days; their length picks the policy $rp reads: raw, hourly, daily."""
    return {
        "3 days": gq.TimeRange(facts.start_ms, facts.end_ms),
        "last 6 hours": gq.TimeRange(facts.end_ms - 6 * HOUR_MS, facts.end_ms),
        "last 7 days": gq.TimeRange(facts.end_ms - 7 * DAY_MS, facts.end_ms),
        "last 365 days": gq.TimeRange(facts.end_ms - 365 * DAY_MS, facts.end_ms),
    }


def variable_options(db: Influx, model: Mapping[str, Any], rng: gq.TimeRange,
                     variables: Mapping[str, gq.Variable] | None = None) -> list[str]:  # fmt: skip
    """A variable's options, its query expanded with the values of the variables before it."""
    ctx = gq.Context(rng, gq.interval_to_ms("5m"), variables or {})
    return gq.variable_options(model, db.query(gq.expand_query(model["query"], ctx)))


def variable_choices(db: Influx, dashboard: Mapping[str, Any], rng: gq.TimeRange) -> list[dict[str, gq.Variable]]:
    """Every value a gardener can pick: each option, and All where offered.

    Variables are chosen in their order, each one's options found with the choices
    before it (the beds and nodes of the chosen gardens), as Grafana refreshes them.
    """
    choices: list[dict[str, gq.Variable]] = [{}]
    for model in dashboard["templating"]["list"]:
        following = []
        for chosen in choices:
            options = variable_options(db, model, rng, chosen)
            picks: list[str | list[str]] = [[o] if model.get("multi") else o for o in options]
            if model.get("includeAll"):
                picks.insert(0, gq.ALL_VALUE)
            following += [{**chosen, model["name"]: gq.Variable.from_model(model, options, p)} for p in picks]
        choices = following
    return choices


def garden_pick(dashboard: Mapping[str, Any], gardens: Iterable[str], pick: str | list[str]) -> gq.Variable:
    """The dashboard's $garden with these gardens on offer and ``pick`` chosen (ALL_VALUE for All)."""
    [model] = [v for v in dashboard["templating"]["list"] if v["name"] == "garden"]
    return gq.Variable.from_model(model, sorted(gardens), pick)


def selected(variable: gq.Variable) -> list[str]:
    if variable.current == gq.ALL_VALUE:
        return list(variable.options)
    return [variable.current] if isinstance(variable.current, str) else list(variable.current)


def test_template_variable_queries_list_the_gardens_beds_and_nodes(seeded: Seeded) -> None:
    dashboards = load_dashboards()
    rng = ranges(seeded.facts)["3 days"]
    for name, d in dashboards.items():
        garden = d["templating"]["list"][0]
        assert garden["name"] == "garden", f"{name}: $garden comes first, the others depend on it"
        assert garden["multi"] and garden["includeAll"] and garden["allValue"] == ".*" and garden["sort"] == 1
        assert variable_options(seeded.db, garden, rng) == sorted(seeded.gardens) == [GARDEN, OTHER_GARDEN]
    [bed] = [v for v in dashboards["bed-detail.json"]["templating"]["list"] if v["name"] == "bed"]
    [node] = [v for v in dashboards["node-health.json"]["templating"]["list"] if v["name"] == "node"]
    for g, facts in seeded.gardens.items():
        for pick in ([g], g):  # several gardens chosen, or one (from a link's var-garden)
            variables = {"garden": garden_pick(dashboards["bed-detail.json"], seeded.gardens, pick)}
            assert variable_options(seeded.db, bed, rng, variables) == facts.beds
            assert variable_options(seeded.db, node, rng, variables) == sorted(facts.nodes)
    every = {"garden": garden_pick(dashboards["bed-detail.json"], seeded.gardens, gq.ALL_VALUE)}
    assert variable_options(seeded.db, bed, rng, every) == sorted({b for f in seeded.gardens.values() for b in f.beds})
    nodes = sorted({n for f in seeded.gardens.values() for n in f.nodes})
    assert variable_options(seeded.db, node, rng, every) == nodes


# ------------------------------------------------- recomputing the answers


def chosen_gardens(gardens: Mapping[str, Facts], variables: Mapping[str, gq.Variable]) -> dict[str, Facts]:
    """The seeded gardens that the $garden chosen shows (All: every one)."""
    if variables["garden"].current == gq.ALL_VALUE:
        return dict(gardens)
    return {g: f for g, f in gardens.items() if g in selected(variables["garden"])}


@dataclass(frozen=True)
class Case:
    facts: Facts  # GARDEN's: its times and scenario
    rng: gq.TimeRange
    interval_ms: int
    variables: Mapping[str, gq.Variable]
    panel: Mapping[str, Any]
    gardens: Mapping[str, Facts]  # the gardens chosen

    def inside(self, ts: int) -> bool:
        return self.rng.from_ms <= ts <= self.rng.to_ms

    def nodes(self) -> list[NodeFacts]:
        chosen = selected(self.variables["node"]) if "node" in self.variables else None
        bed = self.variables["bed"].current if "bed" in self.variables else None
        return [
            nf
            for facts in self.gardens.values()
            for nf in facts.nodes.values()
            if (chosen is None or nf.node in chosen) and (bed is None or nf.bed == bed)
        ]

    def node(self, garden: str, node: str) -> NodeFacts:
        return self.gardens[garden].nodes[node]

    def events(self) -> list[tuple[str, int, str | None, str]]:
        """(garden, time, bed, type) of every event of the chosen gardens."""
        return [(g, ts, bed, kind) for g, f in self.gardens.items() for ts, bed, kind in f.events]

    def needs(self, garden: str, bed: str) -> list[tuple[int, dict[str, Any]]]:
        """The bed's water_need points in the range."""
        return [(ts, f) for ts, f in self.gardens[garden].needs.get(bed, []) if self.inside(ts)]

    def need_beds(self) -> set[tuple[str, str]]:
        return {(g, bed) for g, f in self.gardens.items() for bed in f.needs if self.needs(g, bed)}

    def last_status(self, nf: NodeFacts, port: bool = False) -> dict[str, Any]:
        statuses = nf.port_statuses if port else nf.statuses
        return [s for ts, s in statuses if self.inside(ts)][-1]


def one_series_each(series: Sequence[Series], keys: tuple[str, ...], expected: AbstractSet[tuple[str, ...]],
                    columns: tuple[str, ...]) -> dict[tuple[str, ...], Series]:  # fmt: skip
    got = {tuple(s.tags.get(k, "") for k in keys): s for s in series}
    assert len(got) == len(series), f"more than one series per {keys}"
    assert set(got) == expected, f"series by {keys}: {sorted(got)} != {sorted(expected)}"
    for s in series:
        assert s.columns == columns, f"{s.tags}: columns {s.columns} != {columns}"
    return got


ASSIGNED_AFTER_MS = {spec.node: spec.assigned_after_s * 1000 for spec in NODES}
RP_PERIOD_MS = {"raw": 0, HOURLY.name: HOURLY.ms, DAILY.name: DAILY.ms}


def rp_of(case: Case) -> str:
    """The retention policy the panel read: the dashboard's $rp (raw without one)."""
    rp = case.variables["rp"].current if "rp" in case.variables else "raw"
    assert isinstance(rp, str)
    return rp


def as_stored(nf: NodeFacts, points: Sequence[tuple[int, float]], case: Case,
              with_bed: bool = False) -> list[tuple[int, float]]:  # fmt: skip
    """One node's readings as the policy ``$rp`` holds them: every reading (raw), or each
    period's mean, per bed tag as the hub's rollups group them (garden.rollups), at the
    period's start. ``with_bed``: only those with the node's bed tag (``"bed" = '$bed'``)."""
    assigned = case.gardens[nf.garden].start_ms + ASSIGNED_AFTER_MS[nf.node]
    tagged = [(ts, v, nf.bed if ts >= assigned else "") for ts, v in points]
    if with_bed:
        tagged = [t for t in tagged if t[2]]
    period = RP_PERIOD_MS[rp_of(case)]
    if not period:
        return [(ts, v) for ts, v, _ in tagged]
    groups: dict[tuple[int, str], list[float]] = {}
    for ts, v, bed in tagged:
        groups.setdefault((ts - ts % period, bed), []).append(v)
    return sorted((t, mean(vs)) for (t, _), vs in groups.items())


def assert_means(s: Series, column: str, stored: Sequence[tuple[int, float]], case: Case) -> None:
    """A graph's buckets: the mean of what the policy holds in each $__interval."""
    got = [(row[0], row[1]) for row in s.values if row[1] is not None]
    want = bucketed(stored, case, case.interval_ms, mean)
    assert [t for t, _ in got] == [t for t, _ in want], f"{s.tags} {column}: buckets ({rp_of(case)})"
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9), f"{s.tags} {column}"


def bucketed(points: Sequence[tuple[int, float]], case: Case, interval_ms: int,
             agg: Callable[[list[float]], float]) -> list[tuple[int, float]]:  # fmt: skip
    """InfluxQL's GROUP BY time(interval) of one field, empty buckets left out."""
    groups: dict[int, list[float]] = {}
    for ts, v in points:
        if case.inside(ts):
            groups.setdefault(ts - ts % interval_ms, []).append(v)
    return [(t, agg(vs)) for t, vs in sorted(groups.items())]


def non_negative_differences(buckets: Sequence[tuple[int, float]]) -> list[float]:
    diffs = (b[1] - a[1] for a, b in itertools.pairwise(buckets))
    return [d for d in diffs if d >= 0]


def derivatives_per_day(buckets: Sequence[tuple[int, float]]) -> list[float]:
    return [(b[1] - a[1]) / ((b[0] - a[0]) / DAY_MS) for a, b in itertools.pairwise(buckets)]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def last_in(points: Sequence[tuple[int, float]], case: Case) -> float:
    return [v for ts, v in points if case.inside(ts)][-1]


def values_of(s: Series, column: str) -> list[Any]:
    index = s.columns.index(column)
    return [row[index] for row in s.values if row[index] is not None]


def within(values: Sequence[float], low: float, high: float, what: str) -> None:
    assert values, f"{what}: no values"
    slack = 1e-9 * max(abs(low), abs(high), 1.0)  # a mean of equal values may differ in the last bit
    assert low - slack <= min(values) and max(values) <= high + slack, (
        f"{what}: {min(values)}..{max(values)} not in {low}..{high}"
    )


def assert_time_buckets(s: Series, case: Case) -> None:
    times = [row[0] for row in s.values]
    assert all(t % case.interval_ms == 0 for t in times), "buckets not aligned to $__interval"
    assert all(case.rng.from_ms - case.interval_ms < t <= case.rng.to_ms for t in times)


# Per panel: what its query must answer. Keyed by (dashboard uid, panel title).
Check = Callable[[Sequence[Series], Case], None]
EXPECT: dict[tuple[str, str], Check] = {}


def expect(uid: str, title: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        EXPECT[(uid, title)] = check
        return check

    return register


def beds_of(case: Case) -> set[tuple[str, str]]:
    return {(nf.garden, nf.bed) for nf in case.nodes() if any(case.inside(ts) for ts, _ in nf.vwc)}


def tanks_of(case: Case) -> set[tuple[str, str, str]]:
    return {(nf.garden, nf.node, "tk0") for nf in case.nodes()}


NEED_COLUMNS = ("level", "hours_left", "hours_low", "hours_high", "vwc_pct", "trigger_vwc")


def need_colour(panel: Mapping[str, Any], level: int, table: bool = False) -> str:
    mappings = field_config(panel, "level")["mappings"] if table else panel["fieldConfig"]["defaults"]["mappings"]
    return need_mapping(mappings)[level][1]


@expect("garden-overview", "Which beds need water")
def _need_tiles(series: Sequence[Series], case: Case) -> None:
    """One tile per bed the hub evaluated, with its latest level, coloured by the panel's mappings."""
    by_bed = one_series_each(series, ("garden", "bed"), case.need_beds(), ("time", "level"))
    colours = {}
    for (garden, bed), s in by_bed.items():
        [(ts, level)] = s.values
        last_ts, last = case.needs(garden, bed)[-1]
        assert (ts, level) == (last_ts, last["level"]), bed
        if garden == GARDEN:
            colours[bed] = need_colour(case.panel, level)
    if case.rng.to_ms == case.facts.end_ms and GARDEN in case.gardens:
        # The seeded garden now: bed-1 dries towards its trigger, bed-2 was just watered,
        # bed-3 (its gardener is away) is past its critical level, bed-4 has no node yet.
        assert colours == {"bed-1": "yellow", "bed-2": "green", "bed-3": "red", "bed-4": GREY}


@expect("garden-overview", "When to water")
def _need_table(series: Sequence[Series], case: Case) -> None:
    """One row per bed: its latest evaluation, each number as the hub wrote it, or empty."""
    by_bed = one_series_each(series, ("garden", "bed"), case.need_beds(), ("time", *NEED_COLUMNS))
    for (garden, bed), s in by_bed.items():
        [row] = s.records()
        ts, last = case.needs(garden, bed)[-1]
        assert row == {"time": ts, **{k: last.get(k) for k in NEED_COLUMNS}}, bed
    if case.rng.to_ms - case.rng.from_ms >= DAY_MS and GARDEN in case.gardens:
        rows = {s.tags["bed"]: s.records()[0] for s in series if s.tags["garden"] == GARDEN}
        assert rows["bed-3"]["hours_left"] == 0.0, "past its trigger: water now"
        assert rows["bed-1"]["hours_left"] is not None and 0 < rows["bed-1"]["hours_left"] <= 24, "soon"
        assert all(rows["bed-4"][k] is None for k in ("hours_left", "vwc_pct")), "no readings, no forecast"


@expect("garden-bed", "Need")
def _bed_need(series: Sequence[Series], case: Case) -> None:
    bed = case.variables["bed"].current
    assert isinstance(bed, str)
    expected = {(g,) for g in case.gardens if case.needs(g, bed)}
    for (garden,), s in one_series_each(series, ("garden",), expected, ("time", "level")).items():
        ts, last = case.needs(garden, bed)[-1]
        assert s.values == ((ts, last["level"]),)
        assert need_colour(case.panel, last["level"]) == NEED_LEVELS[last["level"]][1]


@expect("garden-bed", "Water in")
def _bed_water_in(series: Sequence[Series], case: Case) -> None:
    """The latest evaluation's forecast, even when it has none (then the stat says "No forecast")."""
    bed = case.variables["bed"].current
    assert isinstance(bed, str)
    columns = ("level", "hours_left", "hours_low", "hours_high")
    expected = {(g,) for g in case.gardens if case.needs(g, bed)}
    for (garden,), s in one_series_each(series, ("garden",), expected, ("time", *columns)).items():
        ts, last = case.needs(garden, bed)[-1]
        assert s.values == ((ts, *(last.get(k) for k in columns)),)
    assert case.panel["transformations"] == [HIDE_LEVEL]


@expect("garden-overview", "Soil moisture now")
def _moisture_tiles(series: Sequence[Series], case: Case) -> None:
    by_bed = one_series_each(series, ("garden", "bed"), beds_of(case), ("time", "vwc_pct"))
    colours = set()
    for nf in case.nodes():
        [(_, value)] = by_bed[(nf.garden, nf.bed)].values
        assert value == last_in(nf.vwc, case), nf.bed
        steps = case.panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        if nf.garden == GARDEN:
            colours.add([s["color"] for s in steps if s["value"] is None or value >= s["value"]][-1])
    if case.rng.to_ms - case.rng.from_ms >= DAY_MS and GARDEN in case.gardens:
        assert {"red", "orange", "green"} <= colours, "the seeded garden has a thirsty, a dry and a fine bed"


@expect("garden-overview", "Soil moisture by bed")
def _moisture_by_bed(series: Sequence[Series], case: Case) -> None:
    by_bed = one_series_each(series, ("garden", "bed"), beds_of(case), ("time", "vwc_pct"))
    for nf in case.nodes():
        s = by_bed[(nf.garden, nf.bed)]
        assert_time_buckets(s, case)
        raw = [v for ts, v in nf.vwc if case.inside(ts)]
        within(values_of(s, "vwc_pct"), min(raw), max(raw), nf.bed)
        assert_means(s, "vwc_pct", as_stored(nf, nf.vwc, case, with_bed=True), case)


@expect("garden-overview", "Water in the tanks")
@expect("garden-water", "Water left")
def _litres_now(series: Sequence[Series], case: Case) -> None:
    by_tank = one_series_each(series, ("garden", "node", "sensor"), tanks_of(case), ("time", "litres"))
    for nf in case.nodes():
        [(_, litres)] = by_tank[(nf.garden, nf.node, "tk0")].values
        assert litres == last_in(nf.litres, case)


def _per_node(column: str, low: float, high: float) -> Check:
    def check(series: Sequence[Series], case: Case) -> None:
        expected = {(nf.garden, nf.node) for nf in case.nodes()}
        for s in one_series_each(series, ("garden", "node"), expected, ("time", column)).values():
            assert_time_buckets(s, case)
            within(values_of(s, column), low, high, f"{s.tags} {column}")

    return check


# The simulator's weather: air 16 ± 7 °C, light up to 60,000 lux.
EXPECT[("garden-overview", "Air temperature")] = _per_node("temp_c", 8.5, 23.5)
EXPECT[("garden-overview", "Light")] = _per_node("lux", 0, 60_000)


@expect("garden-bed", "Moisture now")
def _moisture_now(series: Sequence[Series], case: Case) -> None:
    expected = {(nf.garden, nf.node, "sm0") for nf in case.nodes()}
    by_probe = one_series_each(series, ("garden", "node", "sensor"), expected, ("time", "vwc_pct"))
    for nf in case.nodes():
        [(_, value)] = by_probe[(nf.garden, nf.node, "sm0")].values
        assert value == last_in(nf.vwc, case)


@expect("garden-bed", "Soil moisture in $bed")
def _bed_moisture(series: Sequence[Series], case: Case) -> None:
    column = series[0].columns[-1]
    if column != "vwc_pct":  # the bed's own lines, from the hub's water_need
        assert column in ("trigger_vwc", "critical_vwc", "fc_vwc")
        bed = case.variables["bed"].current
        assert isinstance(bed, str)
        expected_gardens = {(g,) for g in case.gardens if case.needs(g, bed)}
        for (garden,), s in one_series_each(series, ("garden",), expected_gardens, ("time", column)).items():
            assert_time_buckets(s, case)
            seeded = [f[column] for _, f in case.needs(garden, bed)]
            within(values_of(s, column), min(seeded), max(seeded), column)
        return
    expected = {(nf.garden, nf.node, "sm0") for nf in case.nodes()}
    by_probe = one_series_each(series, ("garden", "node", "sensor"), expected, ("time", "vwc_pct"))
    for nf in case.nodes():
        s = by_probe[(nf.garden, nf.node, "sm0")]
        assert_time_buckets(s, case)
        raw = [v for ts, v in nf.vwc if case.inside(ts)]
        within(values_of(s, "vwc_pct"), min(raw), max(raw), nf.bed)
        assert_means(s, "vwc_pct", as_stored(nf, nf.vwc, case, with_bed=True), case)


@expect("garden-bed", "Soil temperature in $bed")
def _soil_temperature(series: Sequence[Series], case: Case) -> None:
    expected = {(nf.garden, nf.node, "st0") for nf in case.nodes()}
    for s in one_series_each(series, ("garden", "node", "sensor"), expected, ("time", "temp_c")).values():
        assert_time_buckets(s, case)
        within(values_of(s, "temp_c"), 13.0, 19.0, "soil: 16 °C ± 0.4 × 7")  # the simulator's soil


@expect("garden-bed", "What happened in $bed")
def _bed_events(series: Sequence[Series], case: Case) -> None:
    bed = case.variables["bed"].current
    expected = sorted((ts, kind) for _, ts, b, kind in case.events() if b == bed and case.inside(ts))
    rows = [(r["time"], r["type"]) for s in series for r in s.records()]
    assert sorted(rows) == expected, "the chosen gardens' events of the bed, no others"
    assert [ts for ts, _ in rows] == sorted((ts for ts, _ in rows), reverse=True), "newest first"
    for s in series:
        assert s.columns == ("time", "type", "text", "who", "litres", "mm", "kg")


def _hourly_tank(nf: NodeFacts, case: Case) -> tuple[float, float]:
    """Litres last, and the mean fall per day over the range, as the panels' subquery computes them
    from what $rp holds (hourly or daily means: the last is the last period's mean)."""
    stored = as_stored(nf, nf.litres, case)
    hourly = bucketed(stored, case, HOUR_MS, mean)
    return last_in(stored, case), -mean(derivatives_per_day(hourly))


@expect("garden-water", "Days of water left")
def _days_left(series: Sequence[Series], case: Case) -> None:
    by_tank = one_series_each(series, ("garden", "node", "sensor"), tanks_of(case), ("time", "days_left"))
    for nf in case.nodes():
        [(_, days)] = by_tank[(nf.garden, nf.node, "tk0")].values
        litres, fall = _hourly_tank(nf, case)
        assert days == pytest.approx(litres / fall, rel=1e-9)
        watered = [ts for g, ts, b, kind in case.events() if (g, b) == (nf.garden, nf.bed) and kind == "watering"]
        if case.rng.to_ms - case.rng.from_ms >= DAY_MS and watered and rp_of(case) != DAILY.name:
            assert 7 < days < 120, f"{nf.node}: a realistic tank lasts weeks, not {days:.0f} days"


@expect("garden-water", "Water used per day")
def _use_per_day(series: Sequence[Series], case: Case) -> None:
    by_tank = one_series_each(series, ("garden", "node", "sensor"), tanks_of(case), ("time", "litres_per_day"))
    for nf in case.nodes():
        [(_, per_day)] = by_tank[(nf.garden, nf.node, "tk0")].values
        assert per_day == pytest.approx(_hourly_tank(nf, case)[1], rel=1e-9, abs=1e-9)


def _tank_series(column: str, scale: float) -> Check:
    def check(series: Sequence[Series], case: Case) -> None:
        for (garden, node, _), s in one_series_each(series, ("garden", "node", "sensor"), tanks_of(case),
                                                    ("time", column)).items():  # fmt: skip
            assert_time_buckets(s, case)
            nf = case.node(garden, node)
            litres = [v for ts, v in nf.litres if case.inside(ts)]
            within(values_of(s, column), min(litres) * scale - 1, max(litres) * scale + 1, f"{node} {column}")
            if column == "litres":
                assert_means(s, column, as_stored(nf, nf.litres, case), case)

    return check


EXPECT[("garden-water", "Water in the tanks")] = _tank_series("litres", 1.0)
EXPECT[("garden-water", "Water level")] = _tank_series("level_cm", 0.1)  # 10 l per cm


@expect("garden-nodes", "Nodes")
def _nodes_table(series: Sequence[Series], case: Case) -> None:
    columns = ("time", "last_seen", "online", "seq", "lost", "reboots", "battery_v")
    by_node = one_series_each(series, ("garden", "node"), {(nf.garden, nf.node) for nf in case.nodes()}, columns)
    for nf in case.nodes():
        [row] = by_node[(nf.garden, nf.node)].records()
        status = case.last_status(nf)
        assert {k: row[k] for k in columns[1:]} == {k: status[k] for k in columns[1:]}
        assert row["last_seen"] <= case.rng.to_ms


@expect("garden-nodes", "Readings lost on the line")
def _lost(series: Sequence[Series], case: Case) -> None:
    expected = {(nf.garden, nf.node) for nf in case.nodes()}
    by_node = one_series_each(series, ("garden", "node"), expected, ("time", "lost"))
    for nf in case.nodes():
        s = by_node[(nf.garden, nf.node)]
        assert_time_buckets(s, case)
        lost = [(ts, float(st["lost"])) for ts, st in nf.statuses]
        assert sum(values_of(s, "lost")) == sum(non_negative_differences(bucketed(lost, case, case.interval_ms, max)))
    if case.rng.to_ms - case.rng.from_ms >= DAY_MS:
        assert sum(sum(values_of(s, "lost")) for s in series) > 0, "the seeded nodes lost readings"


@expect("garden-nodes", "Battery voltage")
def _battery(series: Sequence[Series], case: Case) -> None:
    expected = {(nf.garden, nf.node) for nf in case.nodes()}
    for (garden, node), s in one_series_each(series, ("garden", "node"), expected, ("time", "battery_v")).items():
        assert_time_buckets(s, case)
        volts = case.node(garden, node).battery_v
        within(values_of(s, "battery_v"), min(volts), max(volts), node)


def _port_counter(nf: NodeFacts, case: Case, field: str) -> float | None:
    counts = [(ts, float(st[field])) for ts, st in nf.port_statuses if field in st]
    diffs = non_negative_differences(bucketed(counts, case, case.interval_ms, lambda vs: vs[-1]))
    return sum(diffs) if diffs else None


def _ports(case: Case) -> dict[tuple[str, str, str], NodeFacts]:
    """One port per node here; both gardens' bridges are called shed-pi, with the same ports."""
    return {(g, "shed-pi", nf.port): nf for g, f in case.gardens.items() for nf in f.nodes.values()}


@expect("garden-nodes", "Rejected lines by port and reason")
def _rejects_table(series: Sequence[Series], case: Case) -> None:
    ports = _ports(case)
    assert {(s.tags["garden"], s.tags["bridge"], s.tags["port"]) for s in series} == set(ports)
    reasons = sorted({r for nf in ports.values() for r in nf.rejects})
    prefix = "sum_non_negative_difference_"
    assert series[0].columns == ("time", f"{prefix}rejected", *(f"{prefix}rejects_{r}" for r in reasons))
    for s in series:
        nf = ports[(s.tags["garden"], s.tags["bridge"], s.tags["port"])]
        [row] = s.records()
        for column in s.columns[1:]:
            assert row[column] == _port_counter(nf, case, column.removeprefix(prefix)), column
    if case.rng.to_ms - case.rng.from_ms >= DAY_MS:
        assert all(s.records()[0][f"{prefix}rejected"] for s in series), "every seeded port rejected lines"


@expect("garden-nodes", "Rejected lines over time")
def _rejects_over_time(series: Sequence[Series], case: Case) -> None:
    ports: dict[tuple[str, ...], NodeFacts] = {(garden, port): nf for (garden, _, port), nf in _ports(case).items()}
    for key, s in one_series_each(series, ("garden", "port"), set(ports), ("time", "rejected")).items():
        assert_time_buckets(s, case)
        assert sum(values_of(s, "rejected")) == (_port_counter(ports[key], case, "rejected") or 0)


def panel_cases() -> list[tuple[str, int]]:
    return [(name, p["id"]) for name, d in sensor_dashboards().items() for p in walk_panels(d) if p["type"] != "row"]


def test_every_panel_has_an_expected_answer() -> None:
    panels = {(d["uid"], p["title"]) for d in sensor_dashboards().values() for p in walk_panels(d)}
    assert panels == set(EXPECT), f"no expectation for {panels - set(EXPECT)}; stale: {set(EXPECT) - panels}"


@pytest.mark.parametrize(("name", "panel_id"), panel_cases(), ids=lambda v: str(v).removesuffix(".json"))
def test_panel_query_answers(seeded: Seeded, name: str, panel_id: int) -> None:
    dashboard = load_dashboards()[name]
    panel = next(p for p in walk_panels(dashboard) if p["id"] == panel_id)
    check = EXPECT[(dashboard["uid"], panel["title"])]
    min_interval = datasource_min_interval()
    runs = 0
    for range_name, rng in ranges(seeded.facts).items():
        interval_ms = gq.panel_interval_ms(panel, rng, min_interval)
        for variables in variable_choices(seeded.db, dashboard, rng):
            ctx = gq.Context(rng, interval_ms, variables)
            for target in panel["targets"]:
                query = gq.expand_query(target["query"], ctx)
                assert not re.search(r"\$\w", query), f"unexpanded variable in {query}"
                series = seeded.db.query(query)
                what = f"{range_name}, {', '.join(f'{k}={v.current}' for k, v in variables.items())}: {query}"
                assert series or panel["type"] == "table", f"no data for {what}"
                try:
                    gardens = chosen_gardens(seeded.gardens, variables)
                    check(series, Case(seeded.facts, rng, interval_ms, variables, panel, gardens))
                except AssertionError as err:
                    raise AssertionError(f"{what}\n{err}") from err
                runs += 1
    assert runs >= 2


@pytest.mark.parametrize(("name", "panel_id"), panel_cases(), ids=lambda v: str(v).removesuffix(".json"))
def test_each_garden_sees_only_its_own(seeded: Seeded, name: str, panel_id: int) -> None:
    """Two gardens on one hub, with the same bed, node and port names: garden A's board answers
    with A's data only, B's with B's, All with both, side by side and never merged."""
    dashboard = load_dashboards()[name]
    panel = next(p for p in walk_panels(dashboard) if p["id"] == panel_id)
    rng = ranges(seeded.facts)["3 days"]
    interval_ms = gq.panel_interval_ms(panel, rng, datasource_min_interval())
    choices = variable_choices(seeded.db, dashboard, rng)
    # bed-1 in each garden (bed detail); every node (node health): the choices besides the garden.
    others = {"bed": "bed-1", "node": gq.ALL_VALUE}

    def answer(target: Mapping[str, Any], pick: str | list[str]) -> list[Series]:
        [variables] = [v for v in choices if v["garden"].current == pick
                       and all(v[k].current == value for k, value in others.items() if k in v)]  # fmt: skip
        return seeded.db.query(gq.expand_query(target["query"], gq.Context(rng, interval_ms, variables)))

    for target in panel["targets"]:
        alone = {g: answer(target, [g]) for g in seeded.gardens}
        every = answer(target, gq.ALL_VALUE)
        for g, series in alone.items():
            assert series, f"{g}: no data for {target['query']}"
            assert all(s.tags.get("garden", g) == g for s in series), f"{g}: another garden's series"
        if all("garden" in s.tags for s in every):  # grouped by garden: All is each garden's answer side by side
            by_garden = sorted(every, key=lambda s: s.tags["garden"])
            assert by_garden == [s for g in sorted(alone) for s in alone[g]]
        else:  # one list (a garden's events): All is the rows of both
            rows = sorted(row for s in every for row in s.values)
            assert rows == sorted(row for series in alone.values() for s in series for row in s.values)
        assert alone[GARDEN] != alone[OTHER_GARDEN], "the two gardens' data differ"


# ------------------------------------------------------------ annotations


def annotation_cases() -> list[tuple[str, str]]:
    return [
        (name, a["name"])
        for name, d in sensor_dashboards().items()
        for a in d["annotations"]["list"]
        if not a.get("builtIn")
    ]


def expected_annotations(query: str, gardens: Mapping[str, Facts], rng: gq.TimeRange,
                         bed: str | None) -> list[tuple[int, str | None]]:  # fmt: skip
    """(time, text) of what an annotation query must find in the chosen gardens: events of one type,
    or alert changes.

    Event texts are not kept by the seed (None); alert texts are.
    """
    inside = lambda ts: rng.from_ms <= ts <= rng.to_ms  # noqa: E731
    if 'FROM "alert"' in query:
        states = re.search(r"\"state\" =~ /\^\(([\w|]+)\)\$/", query)
        allowed = set(states.group(1).split("|")) if states else None
        return sorted(
            (a.ts, a.text)
            for facts in gardens.values()
            for a in facts.alerts
            if inside(a.ts) and (bed is None or a.bed == bed) and (allowed is None or a.state in allowed)
        )
    kind = re.search(r"\"type\" = '(\w+)'", query)
    assert kind, "an event annotation shows one type of event"
    return sorted(
        (ts, None)
        for facts in gardens.values()
        for ts, b, k in facts.events
        if k == kind.group(1) and inside(ts) and (bed is None or b == bed)
    )


def annotation_rows(seeded: Seeded, model: Mapping[str, Any], rng: gq.TimeRange,
                    variables: Mapping[str, gq.Variable]) -> list[dict[str, Any]]:  # fmt: skip
    series = seeded.db.query(gq.expand_annotation(model["query"], gq.Context(rng, gq.interval_to_ms("5m"), variables)))
    for s in series:  # Grafana finds the text and the tags by column name
        wanted = {model["textColumn"], *model["tagsColumn"].replace(" ", "").split(",")}
        assert wanted <= set(s.columns), s.columns
    return sorted((r for s in series for r in s.records()), key=lambda r: (r["time"], r["text"]))


@pytest.mark.parametrize(("name", "annotation"), annotation_cases(), ids=lambda v: str(v).removesuffix(".json"))
def test_annotation_query_answers(seeded: Seeded, name: str, annotation: str) -> None:
    dashboard = load_dashboards()[name]
    model = next(a for a in dashboard["annotations"]["list"] if a.get("name") == annotation)
    found = 0
    for rng in ranges(seeded.facts).values():
        for variables in variable_choices(seeded.db, dashboard, rng):
            bed = variables["bed"].current if "bed" in variables else None
            assert bed is None or isinstance(bed, str)
            gardens = chosen_gardens(seeded.gardens, variables)
            expected = expected_annotations(model["query"], gardens, rng, bed)
            rows = annotation_rows(seeded, model, rng, variables)
            assert [r["time"] for r in rows] == [ts for ts, _ in expected]
            if "garden" in model["tagsColumn"]:
                assert {r["garden"] for r in rows} <= set(gardens)
            for row, (_, text) in zip(rows, expected, strict=True):
                assert row["text"] and text in (None, row["text"]), row
            found += len(expected)
    assert found, "the seeded garden has some"


def test_water_in_never_shows_an_older_forecast(seeded: Seeded) -> None:
    """Just after a watering the hub has no forecast: the stat must say so, not show the one before."""
    dashboard = load_dashboards()["bed-detail.json"]
    [panel] = [p for p in walk_panels(dashboard) if p["title"] == "Water in"]
    needs = seeded.facts.needs["bed-2"]
    # The first evaluation without a forecast right after one with a forecast.
    end = next(b for a, b in itertools.pairwise(needs) if "hours_left" in a[1] and "hours_left" not in b[1])
    rng = gq.TimeRange(seeded.facts.start_ms, end[0])
    garden = garden_pick(dashboard, seeded.gardens, [GARDEN])
    bed = gq.Variable.from_model(dashboard["templating"]["list"][1], seeded.facts.beds, "bed-2")
    ctx = gq.Context(rng, gq.panel_interval_ms(panel, rng, datasource_min_interval()), {"garden": garden, "bed": bed})
    [s] = seeded.db.query(gq.expand_query(panel["targets"][0]["query"], ctx))
    assert s.tags == {"garden": GARDEN}
    assert s.records() == [{"time": end[0], "level": end[1]["level"], "hours_left": None, "hours_low": None,
                            "hours_high": None}]  # fmt: skip
    stale = gq.expand_query(
        'SELECT last("hours_left") FROM "water_need" WHERE $timeFilter AND "garden" =~ /^$garden$/ '
        "AND \"bed\" = '$bed'",
        ctx,
    )
    assert seeded.db.query(stale)[0].values[0][1] is not None, "what a last() of each field would have shown"


def test_bed_alerts_are_the_beds_own(seeded: Seeded) -> None:
    """bed-3's alerts on bed-3's dashboard (all their changes), never bed-1's, nor alerts without a bed."""
    dashboard = load_dashboards()["bed-detail.json"]
    model = next(a for a in dashboard["annotations"]["list"] if a.get("name") == "Alerts")
    rng = ranges(seeded.facts)["3 days"]
    choices = variable_choices(seeded.db, dashboard, rng)
    mine = [GARDEN]
    [choice] = [v for v in choices if v["bed"].current == "bed-3" and v["garden"].current == mine]
    rows = annotation_rows(seeded, model, rng, choice)
    texts = {r["text"] for r in rows}
    alerts = seeded.facts.alerts
    assert texts == {a.text for a in alerts if a.bed == "bed-3"}
    bed_1 = {a.text for a in alerts if a.bed == "bed-1"}
    assert bed_1 and not texts & bed_1, "bed-1's alerts on bed-3's dashboard"
    assert not texts & {a.text for a in alerts if a.bed is None}, "an alert without a bed on a bed's dashboard"
    assert {r["kind"] for r in rows} == {"water"}
    assert {r["state"] for r in rows} == {"raised", "repeated", "escalated", "acked"}
    assert {r["severity"] for r in rows} == {"warning", "critical"}
    [choice] = [v for v in choices if v["bed"].current == "bed-2" and v["garden"].current == mine]
    kinds = {(r["kind"], r["state"]) for r in annotation_rows(seeded, model, rng, choice)}
    assert ("node", "raised") in kinds and ("water", "resolved") in kinds, "bed-2's node is on bed-2's dashboard"


def test_garden_alerts_show_raised_escalated_and_resolved(seeded: Seeded) -> None:
    dashboard = load_dashboards()["garden-overview.json"]
    model = next(a for a in dashboard["annotations"]["list"] if a.get("name") == "Alerts")
    rng = ranges(seeded.facts)["3 days"]
    rows = annotation_rows(seeded, model, rng, {"garden": garden_pick(dashboard, seeded.gardens, [GARDEN])})
    assert {r["garden"] for r in rows} == {GARDEN}
    assert {r["state"] for r in rows} == {"raised", "escalated", "resolved"}
    assert {r["kind"] for r in rows} == {"water", "node", "gaps", "tank"}
    assert {(r["kind"], r["subject"]) for r in rows} >= {("gaps", "bed-3a"), ("tank", "bed-1a")}, "no bed, shown"
    hidden_states = ("repeated", "acked", "muted")
    hidden = [a for a in seeded.facts.alerts if a.state in hidden_states]
    assert {a.state for a in hidden} == {"repeated", "acked", "muted"}, "the seed has each, to leave out"
    assert len(rows) == len(seeded.facts.alerts) - len(hidden)
    every = annotation_rows(seeded, model, rng, {"garden": garden_pick(dashboard, seeded.gardens, gq.ALL_VALUE)})
    assert {r["garden"] for r in every} == {GARDEN, OTHER_GARDEN}
    assert len(every) == sum(1 for f in seeded.gardens.values() for a in f.alerts if a.state not in hidden_states)


def test_seeded_data_is_what_the_hub_writes(seeded: Seeded) -> None:
    """The points went through garden.points: tags and fields as docs/schema.md lists them."""
    db = seeded.db
    measurements = {row[0] for s in db.query("SHOW MEASUREMENTS") for row in s.values}
    assert {"soil_moisture", "soil_temperature", "air_temperature", "air_humidity", "light", "tank",
            "battery", "node_status", "bridge_port", "event", "water_need", "alert"} <= measurements  # fmt: skip
    tag_keys = {row[0] for s in db.query('SHOW TAG KEYS FROM "soil_moisture"') for row in s.values}
    assert tag_keys == {"garden", "bed", "node", "sensor"}
    fields = {row[0]: row[1] for s in db.query('SHOW FIELD KEYS FROM "tank"') for row in s.values}
    assert fields.pop("error", "string") == "string"  # only where a reading was rejected
    assert fields == {"raw": "float", "distance_cm": "float", "level_cm": "float", "litres": "float",
                      "seq": "integer", "boot": "integer"}  # fmt: skip
    need_fields = {row[0]: row[1] for s in db.query('SHOW FIELD KEYS FROM "water_need"') for row in s.values}
    numbers = ("vwc_pct", "trigger_vwc", "critical_vwc", "fc_vwc", "wp_vwc", "hours_left", "hours_low",
               "hours_high", "balance_hours", "et0_mm", "kc", "p")  # fmt: skip
    assert need_fields == {"state": "string", "level": "integer", **dict.fromkeys(numbers, "float")}
    assert {row[0] for s in db.query('SHOW TAG KEYS FROM "water_need"') for row in s.values} == {"garden", "bed"}
    alert_fields = {row[0]: row[1] for s in db.query('SHOW FIELD KEYS FROM "alert"') for row in s.values}
    assert alert_fields == {"text": "string", "severity": "string", "who": "string"}
    alert_tags = {row[0] for s in db.query('SHOW TAG KEYS FROM "alert"') for row in s.values}
    assert alert_tags == {"garden", "kind", "subject", "state", "bed"}
    retention = {row[0] for s in db.query(f'SHOW RETENTION POLICIES ON "{DATABASE}"') for row in s.values}
    assert retention == {"raw", "hourly", "daily"}
    for garden, facts in seeded.gardens.items():
        total = sum(nf.readings for nf in facts.nodes.values())
        [count] = db.query(f'SELECT count("seq") FROM "battery" WHERE "garden" = \'{garden}\'')
        assert count.values[0][1] == total, "one battery point per reading that reached the bridge"


# ------------------------------------------- the retention policy by range

READING_MEASUREMENTS = ("soil_moisture", "soil_temperature", "air_temperature", "air_humidity", "light", "tank",
                        "battery")  # fmt: skip


def test_rp_is_hidden_refreshed_on_time_range_change_and_raw_by_default() -> None:
    for name, d in load_dashboards().items():
        models = [v for v in d["templating"]["list"] if v["name"] == "rp"]
        queries = [t["query"] for p in walk_panels(d) for t in p.get("targets", [])]
        if not any('"$rp".' in q for q in queries):
            assert not models, f"{name}: $rp but no panel reads it"
            continue
        [rp] = models
        assert rp["hide"] == 2 and rp["refresh"] == 2 and rp["sort"] == 1, name
        assert not rp["multi"] and not rp["includeAll"], name
        assert rp["current"]["value"] == "raw", f"{name}: raw when rp_choice is missing"
        assert 'FROM "daily"."rp_choice"' in rp["query"], name


def test_every_reading_graph_reads_rp_and_every_latest_reading_the_last_days_of_raw() -> None:
    raw_days = f"- {RP_CHOICES[0][2] // DAY_MS}d"
    for d in load_dashboards().values():
        for p in walk_panels(d):
            for t in p.get("targets", []):
                q = t["query"]
                for m in READING_MEASUREMENTS:
                    if f'"{m}"' not in q:
                        continue
                    where = f"{d['uid']} {p['title']!r}"
                    if "GROUP BY time(" in q:
                        assert f'FROM "$rp"."{m}"' in q, f"{where}: a graph over the range reads $rp"
                    else:  # the latest reading: raw, its last days only (fast over a year)
                        assert f'FROM "{m}"' in q and f"time >= ${{__to}}ms {raw_days}" in q, where


@pytest.mark.parametrize(
    ("span_ms", "expected"),
    [(6 * HOUR_MS, "raw"), (DAY_MS, "raw"), (2 * DAY_MS, "raw"), (2 * DAY_MS + 1, "hourly"),
     (7 * DAY_MS, "hourly"), (60 * DAY_MS, "hourly"), (61 * DAY_MS, "daily"), (365 * DAY_MS, "daily"),
     (5 * 365 * DAY_MS, "daily")],
)  # fmt: skip
def test_rp_variable_picks_the_policy_by_range(seeded: Seeded, span_ms: int, expected: str) -> None:
    """The same thresholds as `garden readings` (garden/readings.py)."""
    from garden.readings import Resolution, choose_resolution

    board = load_dashboards()["water-tank.json"]
    rng = gq.TimeRange(seeded.facts.end_ms - span_ms, seeded.facts.end_ms)
    variables = gq.resolve_variables(board, rng, seeded.db.query)
    assert variables["rp"].current == expected
    resolution: Resolution = choose_resolution(-(-span_ms // 1000))
    assert resolution.name == expected


def test_rp_is_raw_without_rp_choice(seeded: Seeded) -> None:
    """Before `garden hub init` wrote rp_choice: no option, so the saved raw (or Grafana's
    empty None, which InfluxDB reads as the default policy, raw)."""
    board = load_dashboards()["water-tank.json"]
    rng = gq.TimeRange(seeded.facts.end_ms - 365 * DAY_MS, seeded.facts.end_ms)

    def empty(q: str) -> list[Series]:
        return [] if "rp_choice" in q else seeded.db.query(q)

    assert gq.resolve_variables(board, rng, empty)["rp"].current == "raw"
    [s] = seeded.db.query('SELECT count("litres") FROM ""."tank"')
    [raw] = seeded.db.query('SELECT count("litres") FROM "raw"."tank"')
    assert s.values == raw.values


def test_rollups_hold_what_the_graphs_expect(seeded: Seeded) -> None:
    """The seed's rollups are the hub's (garden.rollups.roll_up): the hourly mean of bed-1a's moisture."""
    nf = seeded.facts.nodes["bed-1a"]
    hour = seeded.facts.start_ms + 5 * HOUR_MS
    want = mean([v for ts, v in nf.vwc if hour <= ts < hour + HOUR_MS])
    q = f"""SELECT "vwc_pct" FROM "hourly"."soil_moisture" WHERE time = {hour}ms AND "node" = 'bed-1a'
            AND "garden" = '{GARDEN}'"""
    [s] = seeded.db.query(q)
    assert s.values[0][1] == pytest.approx(want, rel=1e-12)
