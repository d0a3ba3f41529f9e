"""The commons on real parts: the hub as the single writer, volunteers' CLIs as separate processes.

Real Mosquitto, real InfluxDB, the real hub process (``garden hub run``) and the
real ``garden`` CLI, each call its own process, as on volunteers' laptops.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.mqtt_link import parse_broker_url, read_retained
from garden.commands import request
from garden.influx import Influx
from tests.servers import Influxd

from .conftest import COUNTS, Broker, HubProcess, wait_for

pytestmark = pytest.mark.integration

CONFIG = """
[garden]
timezone = "Europe/Berlin"

[commons]
claim_expires_h = 3

[commons.rota]
monday = ["ana"]
tuesday = ["ben"]
wednesday = ["ana", "ben"]
thursday = ["ben"]
friday = ["ana"]
saturday = ["ben"]
sunday = ["ana"]
"""


def garden_cmd(broker: Broker, garden: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "garden", *args, "--mqtt", broker.url, "--garden", garden]


def env_for(user: str) -> dict[str, str]:
    return {**os.environ, "GARDEN_CONFIG": "/dev/null", "GARDEN_USER": user, "COLUMNS": "200"}


def cli(broker: Broker, garden: str, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(garden_cmd(broker, garden, *args), capture_output=True, text=True,
                          env=env_for(user), timeout=60)  # fmt: skip


def cli_json(broker: Broker, garden: str, user: str, *args: str) -> dict[str, Any]:
    done = cli(broker, garden, user, *args, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def ask(broker: Broker, garden: str, user: str, action: str, **body: Any) -> dict[str, Any]:
    """A request from this process (fast set-up; what is under test goes through the CLI)."""
    from firmware_bridge.topics import Topics

    return request(parse_broker_url(broker.url), Topics(garden), "commons", {"action": action, "who": user, **body})


def start_commons_hub(broker: Broker, influxd: Influxd, tmp_path: Path, garden: str) -> HubProcess:
    """A hub with the commons (and no watch), answering requests."""
    config = tmp_path / "garden.toml"
    config.write_text(CONFIG)
    hub = HubProcess(broker, influxd, tmp_path, garden, garden)
    hub.env["GARDEN_CONFIG"] = str(config)
    hub.cmd.append("--no-watch")
    hub.start()
    hub.wait_online(broker)
    wait_for(lambda: _answers(broker, garden), 20, "the commons to answer")
    return hub


@pytest.fixture
def commons_hub(
    running_broker: Broker, running_influxd: Influxd, tmp_path: Path, garden: str, database: Influx
) -> Iterator[HubProcess]:
    hub = start_commons_hub(running_broker, running_influxd, tmp_path, garden)
    yield hub
    hub.stop()


def _answers(broker: Broker, garden: str) -> bool:
    try:
        ask(broker, garden, "ana", "rota.show")
    except Exception:  # not up yet
        return False
    return True


def test_twenty_concurrent_claims_on_five_kilos_take_five_kilos(
    running_broker: Broker, commons_hub: HubProcess, garden: str, database: Influx
) -> None:
    """20 processes claim 300 g each of a 5 kg share at once: exactly 5 kg goes, the rest are told."""
    ask(running_broker, garden, "ana", "member.add", name="ana")
    claimers = [f"m{i:02d}" for i in range(20)]
    for name in claimers:
        ask(running_broker, garden, "ana", "member.add", name=name)
    logged = cli_json(running_broker, garden, "ana", "harvest", "log", "bed-1", "tomato", "7kg", "--share", "5kg",
                      "--pickup", "Sat 10-12", "--place", "shed")  # fmt: skip
    share = logged["share"]["id"]
    procs = [
        subprocess.Popen(garden_cmd(running_broker, garden, "harvest", "claim", share, "300g"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(who))
        for who in claimers
    ]  # fmt: skip
    results = [(p.wait(60), *p.communicate()) for p in procs]
    winners = [out for code, out, _ in results if code == 0]
    losers = [err for code, _, err in results if code != 0]
    assert all("all claimed" in err and "nothing left for you" in err for err in losers), losers
    state = cli_json(running_broker, garden, "ana", "harvest", "shares", "--all")
    (s,) = [x for x in state["shares"] if x["id"] == share]
    granted = sum(c["granted"] for c in s["claims"])
    assert granted == 5000 and s["remaining"] == 0 and s["status"] == "taken"
    # 16 full claims (4.8 kg) and one of the 200 g left; the other three were refused.
    assert len(winners) == 17 and len(losers) == 3
    assert sum("you asked 300 g: that was what was left" in out for out in winners) == 1
    # The mirror in InfluxDB says the same.
    wait_for(lambda: _share_remaining(database, share) == 0.0, 10, "the share's last state in InfluxDB")
    rows = database.query('SELECT count("text") FROM "event" WHERE "type" = $t', {"t": "share_claim"})
    assert rows[0].records()[0]["count"] == 17
    line = f"[commons] 20 concurrent claims of 300 g on a 5 kg share: {len(winners)} granted, 5000 g in all"
    COUNTS.append(line)


def _share_remaining(database: Influx, share: str) -> float | None:
    rows = database.query('SELECT last("remaining") FROM "harvest_share" WHERE "share" = $s', {"s": share})
    return rows[0].records()[0]["last"] if rows else None


def test_ten_concurrent_water_claims_have_one_winner(
    running_broker: Broker, commons_hub: HubProcess, garden: str, database: Influx
) -> None:
    people = [f"w{i}" for i in range(10)]
    for name in people:
        ask(running_broker, garden, "ana", "member.add", name=name)
    procs = [
        subprocess.Popen(garden_cmd(running_broker, garden, "water", "claim", "bed-4"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(who))
        for who in people
    ]  # fmt: skip
    results = {who: (p.wait(60), *p.communicate()) for who, p in zip(people, procs, strict=True)}
    winners = [who for who, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    winner = winners[0]
    for who, (code, _, err) in results.items():
        if who != winner:
            assert code == 1 and f"bed-4 is taken: {winner} will water it" in err, err
    claims = cli_json(running_broker, garden, "ana", "water", "claims")["claims"]
    assert [(c["bed"], c["who"], c["status"]) for c in claims] == [("bed-4", winner, "open")]
    # Everyone sees it as taken: the retained claim, and `garden water needs`.
    retained = read_retained(parse_broker_url(running_broker.url), (f"garden/{garden}/commons/claim/+",), wait_s=0.5)
    assert json.loads(retained[f"garden/{garden}/commons/claim/bed-4"])["who"] == winner
    wait_for(lambda: _claim_status(database, "bed-4") == ("open", winner), 10, "the claim in InfluxDB")
    COUNTS.append(f"[commons] 10 concurrent water claims on one bed: 1 winner ({winner}), 9 told who has it")


def _claim_status(database: Influx, bed: str) -> tuple[str, str] | None:
    rows = database.query('SELECT last("status") AS "status", last("who") AS "who" FROM "water_claim" '
                          'WHERE "bed" = $bed', {"bed": bed})  # fmt: skip
    if not rows:
        return None
    r = rows[0].records()[0]
    return r["status"], r["who"]


COMMANDS: list[tuple[str, ...]] = [
    ("member", "add", "zoe", "--email", "zoe@example.org"),
    ("member", "list"),
    ("member", "show", "ana"),
    ("member", "remove", "ana"),
    ("member", "export", "ana"),
    ("member", "erase", "ana", "--yes"),
    ("rota", "show"),
    ("rota", "swap", "2030-01-07", "--with", "ben"),
    ("water", "claim", "bed-1"),
    ("water", "done", "bed-1", "--litres", "10"),
    ("water", "release", "bed-1"),
    ("water", "claims"),
    ("harvest", "log", "bed-1", "tomato", "2kg", "--share", "1kg"),
    ("harvest", "shares"),
    ("harvest", "claim", "s1", "500g"),
    ("harvest", "collected", "s1"),
    ("harvest", "list"),
    ("me",),
    ("commons", "totals"),
    ("node", "maintained", "bed-1a", "--what", "battery"),
]


def _run_timed(broker: Broker, garden: str, commands: list[tuple[str, ...]], parallel: int) -> dict[str, float]:
    """Each command as its own process, ``parallel`` at a time; each must fail saying the hub is unreachable."""
    took: dict[str, float] = {}
    for i in range(0, len(commands), parallel):
        batch = []
        for args in commands[i : i + parallel]:
            started = time.monotonic()
            proc = subprocess.Popen(garden_cmd(broker, garden, *args), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env_for("ana"))  # fmt: skip
            batch.append((args, started, proc))
        for args, started, proc in batch:
            code = proc.wait(30)
            took[" ".join(args)] = time.monotonic() - started
            err = proc.communicate()[1]
            assert code == 1, (args, err)
            assert "the hub is unreachable" in err and "garden hub run" in err, (args, err)
    return took


def test_with_the_hub_down_every_commons_command_fails_within_five_seconds(
    running_broker: Broker, running_influxd: Influxd, tmp_path: Path, garden: str, database: Influx
) -> None:
    """The broker is up, the hub is not: each command says the hub is unreachable, fast, and queues nothing.

    Stopped cleanly, the hub's retained status says offline and commands fail at once;
    killed, its status says online until the broker notices, and commands give up
    after the answer timeout.
    """

    def start_hub() -> HubProcess:
        return start_commons_hub(running_broker, running_influxd, tmp_path, garden)

    never = _run_timed(running_broker, garden, [("rota", "show")], 1)
    hub = start_hub()
    ask(running_broker, garden, "ana", "member.add", name="ana")
    hub.stop()
    stopped = _run_timed(running_broker, garden, COMMANDS, 2)
    hub = start_hub()
    hub.stop(signal.SIGKILL)
    killed = _run_timed(running_broker, garden, [("water", "claim", "bed-1"), ("me",)], 1)
    took = {**never, **stopped, **{f"{k} (killed hub)": v for k, v in killed.items()}}
    slowest = max(took, key=lambda k: took[k])
    assert took[slowest] < 5.0, took
    # Nothing was queued: the hub, back, has none of it.
    hub = start_hub()
    try:
        time.sleep(1.0)  # anything delivered late would be applied by now
        assert [m["name"] for m in ask(running_broker, garden, "ana", "member.list")["members"]] == ["ana"]
        assert ask(running_broker, garden, "ana", "water.claims")["claims"] == []
        assert ask(running_broker, garden, "ana", "harvest.shares", all=True)["shares"] == []
        assert ask(running_broker, garden, "ana", "me")["contributions"] == {}
    finally:
        hub.stop()
    median = sorted(stopped.values())[len(stopped) // 2]
    COUNTS.append(f"[commons] hub down: {len(took)} commands failed; stopped hub: median {median:.1f} s; "
                  f"killed hub: {max(killed.values()):.1f} s; slowest {took[slowest]:.1f} s ({slowest})")  # fmt: skip


def test_erasure_leaves_the_name_nowhere_and_the_totals_as_they_were(
    running_broker: Broker, running_influxd: Influxd, tmp_path: Path, garden: str, database: Influx
) -> None:
    """After `garden member erase`, the name is in no InfluxDB answer, no retained message, no hub table."""
    name = "marguerite"
    config = tmp_path / "garden.toml"
    config.write_text(CONFIG + "\n[watch]\nevaluate_every_s = 0.5\n")
    hub = HubProcess(running_broker, running_influxd, tmp_path, garden, garden)
    hub.env["GARDEN_CONFIG"] = str(config)
    broker = parse_broker_url(running_broker.url)
    # A node that has been silent for a day: the watch raises a "lost" alert for her to acknowledge.
    from tests.integration.test_watch_pipeline import publish_retained

    last_seen = time.time_ns() // 1_000_000 - 86_400_000
    publish_retained(running_broker, [(f"garden/{garden}/node/bed-9a/status",
                                       {"state": "online", "interval_s": 600, "last_seen": last_seen})])  # fmt: skip
    hub.start()
    try:
        hub.wait_online(running_broker)
        wait_for(lambda: _answers(running_broker, garden), 20, "the commons to answer")
        assert cli(running_broker, garden, name, "member", "add", name, "--email", f"{name}@example.org",
                   "--notify-shares").returncode == 0  # fmt: skip
        ask(running_broker, garden, "ana", "member.add", name="ana")
        assert cli(running_broker, garden, name, "water", "claim", "bed-2").returncode == 0
        assert cli(running_broker, garden, name, "water", "done", "bed-2", "--litres", "12").returncode == 0
        ask(running_broker, garden, "ana", "harvest.log", bed="bed-1", crop="beans", quantity="3kg", share="2kg")
        assert cli(running_broker, garden, name, "harvest", "claim", "s1", "1kg").returncode == 0
        ask(running_broker, garden, name, "harvest.log", bed="bed-2", crop="kale", quantity="1kg", share="500g")
        ask(running_broker, garden, name, "node.maintained", node="bed-9a", what="battery", note=f"by {name} herself")
        ask(running_broker, garden, "ana", "rota.swap", date="2030-01-07", **{"with": name})  # a Monday: ana's day
        wait_for(lambda: _alert_open(broker, garden, "node/bed-9a"), 30, "the lost-node alert")
        done = cli(running_broker, garden, name, "alerts", "ack", "node/bed-9a")
        assert done.returncode == 0, done.stderr
        exported = cli(running_broker, garden, name, "member", "export", name)
        assert exported.returncode == 0, exported.stderr
        data = json.loads(exported.stdout)
        assert data["member"]["email"] == f"{name}@example.org"
        kinds = sorted(c["kind"] for c in data["contributions"])
        assert kinds == ["claim_honoured", "harvest_shared", "node_maintained", "watering"]
        assert data["alerts_acknowledged"][0]["key"] == "node/bed-9a"
        before = cli_json(running_broker, garden, "ana", "commons", "totals")
        wait_for(lambda: _mentioned(database, name), 15, "her name in InfluxDB (the ack reaches the ingest)")
        erased = cli_json(running_broker, garden, "ana", "member", "erase", name, "--yes")
        assert erased["alias"].startswith("erased-") and erased["influx_points"] > 0 and erased["retained"] > 0
        after = cli_json(running_broker, garden, "ana", "commons", "totals")
        assert after["months"] == before["months"] and after["contributors"] == before["contributors"]
        assert not _mentioned(database, name)
        retained = read_retained(broker, (f"garden/{garden}/#",), wait_s=1.0)
        assert retained and not [t for t, p in retained.items() if name.encode() in p or name in t]
        assert erased["alias"] in json.dumps(cli_json(running_broker, garden, "ana", "water", "claims"))
    finally:
        hub.stop()
    dumps = {p.name: "\n".join(sqlite3.connect(p).iterdump()) for p in (tmp_path / "hub-data").glob("*.sqlite3")}
    assert {"commons.sqlite3", "watch.sqlite3"} <= set(dumps)
    assert not [f for f, text in dumps.items() if name in text]
    points = erased["influx_points"]
    COUNTS.append(f"[commons] erasure: {erased['rows']} hub rows, {points} InfluxDB points, "
                  f"{erased['retained']} retained messages rewritten; totals unchanged")  # fmt: skip


def _alert_open(broker: Any, garden: str, key: str) -> bool:
    kind, subject = key.split("/")
    found = read_retained(broker, (f"garden/{garden}/alert/{kind}/{subject}",), wait_s=0.3)
    return any(json.loads(p).get("resolved_ms") is None for p in found.values() if p)


def _mentioned(database: Influx, name: str) -> bool:
    """Whether any point of any measurement holds ``name``."""
    for s in database.query("SHOW MEASUREMENTS"):
        for (measurement,) in s.values:
            for series in database.query(f'SELECT * FROM "{measurement}"'):
                if name in json.dumps(series.values):
                    return True
    return False


def test_doctor_sees_the_hub_answer_and_a_rota_nobody_can_be_told_of(
    running_broker: Broker, running_influxd: Influxd, commons_hub: HubProcess, garden: str, tmp_path: Path
) -> None:
    ask(running_broker, garden, "ana", "member.add", name="ana", email="ana@example.org")
    ask(running_broker, garden, "ana", "member.add", name="ben")
    config = Path(commons_hub.env["GARDEN_CONFIG"])
    done = subprocess.run(
        [sys.executable, "-m", "garden", "doctor", "--mqtt", running_broker.url, "--influx", running_influxd.url,
         "--garden", garden, "--config", str(config), "--json"],
        capture_output=True, text=True, env=env_for("ana"), timeout=60,
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["commons config"]["state"] == "ok"
    assert checks["hub"]["state"] == "ok" and checks["hub"]["detail"] == "answers; 2 members"
    assert checks["rota"]["state"] == "warn" and checks["rota"]["detail"].endswith(": ben")
    assert checks["rota"]["fix"].startswith("garden member add ben --email")


def test_an_erasure_while_influxdb_is_down_is_finished_when_it_is_back(
    running_broker: Broker, running_influxd: Influxd, database: Influx, garden: str, tmp_path: Path
) -> None:
    """The commons in this process (its MQTT client is not started), against the real InfluxDB."""
    from garden.commons.service import Commons
    from garden.commons.settings import parse_commons
    from garden.influx import InfluxSettings
    from garden.settings import HubSettings
    from garden.watch_settings import WatchSettings

    from .conftest import free_port

    settings = HubSettings(garden=garden, data_dir=tmp_path, broker=parse_broker_url(running_broker.url),
                           influx=InfluxSettings(url=running_influxd.url, database=garden))  # fmt: skip
    c = Commons(settings, parse_commons({}), WatchSettings())
    now = time.time_ns() // 1_000_000
    c.command({"who": "zenobia", "action": "member.add", "name": "zenobia"}, now)
    c.command({"who": "zenobia", "action": "harvest.log", "bed": "bed-1", "crop": "kale", "quantity": "1kg"}, now)
    c.flush()
    assert _mentioned(database, "zenobia")
    real = c.influx
    c.influx = Influx(InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database=garden))  # down
    c.erase_retry_s = 0.2
    result = c.command({"who": "ana", "action": "member.erase", "name": "zenobia"}, now + 1000)
    assert result["influx_pending"] and result["influx_points"] == 0 and _mentioned(database, "zenobia")
    c.tick(now + 2000)
    c.influx = real  # back
    wait_for(lambda: (c.tick(now + 3000), not _mentioned(database, "zenobia"))[1], 10, "the erasure to finish")
    c.flush()  # the erasure's own event
    assert not _mentioned(database, "zenobia") and "zenobia" not in c.store.dump()
    c.store.close()


def test_a_line_influxdb_refuses_is_set_aside_and_the_rest_still_goes(
    running_broker: Broker, running_influxd: Influxd, database: Influx, garden: str, tmp_path: Path
) -> None:
    """A field whose type InfluxDB already knows otherwise (here planted by hand) must not jam the mirror."""
    from garden.commons.service import Commons
    from garden.commons.settings import parse_commons
    from garden.influx import InfluxSettings
    from garden.settings import HubSettings
    from garden.watch_settings import WatchSettings

    now = time.time_ns() // 1_000_000
    database.write_lines([f"contribution,garden={garden},kind=watering n=1.5 {now - 60_000}"])  # n as a float
    settings = HubSettings(garden=garden, data_dir=tmp_path, broker=parse_broker_url(running_broker.url),
                           influx=InfluxSettings(url=running_influxd.url, database=garden))  # fmt: skip
    c = Commons(settings, parse_commons({}), WatchSettings())
    c.command({"who": "ana", "action": "member.add", "name": "ana"}, now)
    c.command({"who": "ana", "action": "water.done", "bed": "bed-1", "litres": 5}, now)  # contribution n=1i
    c.flush()
    assert c.store.pending() == []
    refused = c.store.rows("SELECT line, error FROM outbox_refused")
    assert len(refused) == 1 and refused[0]["line"].startswith("contribution,") and "conflict" in refused[0]["error"]
    rows = database.query('SELECT "text" FROM "event" WHERE "type" = $t', {"t": "watering_done"})
    assert rows and rows[0].records()[0]["text"] == "ana watered bed-1 (5 l)"
    c.store.close()
