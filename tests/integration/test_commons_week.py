"""A week of garden life, end to end on real parts, in accelerated time.

A simulated bed on a pty dries (20,000x: a week in about 30 s); the real bridge
and the real hub (ingest, watch and commons) run as processes against the real
Mosquitto and InfluxDB, and volunteers act through the real ``garden`` CLI, each
call its own process. The water alert goes to the volunteer on duty (a webhook
receiver of this test's, per person), she claims the bed and waters it, the
watch detects the watering and the commons confirms her claim; someone harvests
and shares, two members claim, one picks up, another swaps a node's battery.
Then the CLI's answers, the hub's own SQLite state and the InfluxDB events are
checked against each other.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from firmware_bridge.simulator.node import SimNode
from firmware_bridge.simulator.physics import BedParams
from firmware_bridge.simulator.pty_runner import Simulation
from garden.commons.rota import WEEKDAYS
from garden.influx import Influx
from tests.servers import Influxd

from .conftest import COUNTS, BridgeProcess, Broker, HubProcess, wait_for
from .test_commons import cli, cli_json
from .test_watch_pipeline import AlertListener, Webhook, publish_retained

pytestmark = pytest.mark.integration

SPEED = 20_000
WEEK_S = 7 * 86_400


def test_a_week_of_garden_life(
    running_broker: Broker, running_influxd: Influxd, database: Influx, garden: str, tmp_path: Path
) -> None:
    ana_hook, ben_hook = Webhook(), Webhook()
    config = tmp_path / "garden.toml"
    rota = "\n".join(f'{day} = ["ana"]' for day in WEEKDAYS)  # ana's week; ben only hears of escalations
    config.write_text(f"""
[garden]
latitude = 52.5
timezone = "UTC"

[watch]
evaluate_every_s = 0.5
webhook_timeout_s = 2.0

[commons]
claim_expires_h = 2

[commons.rota]
{rota}
""")
    publish_retained(
        running_broker,
        [
            (f"garden/{garden}/bed/bed-1/config",
             {"soil": "loam", "crops": [{"crop": "courgette", "planted": "2026-05-01"}],
              "overrides": {"trigger_vwc": 22.0, "critical_vwc": 12.0}}),
            (f"garden/{garden}/node/bed-1/config", {"bed": "bed-1"}),
        ],
    )  # fmt: skip
    listener = AlertListener(running_broker, garden)
    hub = HubProcess(running_broker, running_influxd, tmp_path, garden, garden)
    hub.env["GARDEN_CONFIG"] = str(config)
    hub.start()
    try:
        hub.wait_online(running_broker)

        def run(user: str, *args: str) -> str:
            done = cli(running_broker, garden, user, *args)
            assert done.returncode == 0, (args, done.stderr)
            return done.stdout

        run("ana", "member", "add", "ana", "--webhook", ana_hook.url, "--notify-shares")
        run("ben", "member", "add", "ben", "--webhook", ben_hook.url, "--notify-shares")
        run("carla", "member", "add", "carla")
        assert cli_json(running_broker, garden, "ben", "rota", "show")["today"] == ["ana"]

        # The bed dries fast (a sunny week) and the simulated gardener waters at 17 %.
        node = SimNode("bed-1", seed=3, interval_s=600,
                       params=BedParams(water_at_vwc=17.0, dry_rate_per_h=0.03, watering_litres=80.0))  # fmt: skip
        start_sim_s = node.bed.t_s
        sim = Simulation([node], tmp_path / "ports", speed=SPEED)
        sim.open_ports()
        bridge = BridgeProcess(sim.links(), running_broker, tmp_path, garden)
        sim_thread = threading.Thread(target=sim.run, daemon=True)
        started = time.monotonic()
        try:
            bridge.start()
            sim_thread.start()
            # Monday-ish: bed-1 needs water. The alert goes to ana, who is on duty, and not to ben.
            wait_for(lambda: listener.of("water/bed-1", "raised"), 120, "the water alert")
            raised_sim_h = (node.bed.t_s - start_sim_s) / 3600
            assert "Yours: bed-1" in run("ana", "water", "claim", "bed-1")
            taken = cli(running_broker, garden, "ben", "water", "claim", "bed-1")
            assert taken.returncode == 1 and "bed-1 is taken: ana will water it" in taken.stderr
            assert "waiting for the moisture to rise" in run("ana", "water", "done", "bed-1", "--litres", "80")
            wait_for(lambda: any(b.get("key") == "water/bed-1" for _, b in ana_hook.received), 30, "ana's notice")

            def claim_status() -> str:
                claims = cli_json(running_broker, garden, "ana", "water", "claims")["claims"]
                return str(claims[0]["status"]) if claims else ""

            wait_for(lambda: claim_status() == "confirmed", 120, "the watering to confirm ana's claim")
            # Midweek: ben harvests and shares; ana and carla claim; ana picks up; carla swaps a battery.
            run("ben", "harvest", "log", "bed-1", "courgette", "4kg", "--share", "3kg", "--pickup", "Sat 10-12",
                "--place", "shed")  # fmt: skip
            assert "you have 2 kg of s1" in run("ana", "harvest", "claim", "s1", "2kg")
            carla = run("carla", "harvest", "claim", "s1", "2kg")
            assert "you have 1 kg of s1 (you asked 2 kg: that was what was left)" in carla
            run("ana", "harvest", "collected", "s1")
            run("carla", "node", "maintained", "bed-1", "--what", "battery", "--note", "new cell")
            # The rest of the week passes.
            wait_for(lambda: node.bed.t_s - start_sim_s >= WEEK_S, 120, "a simulated week")
            week_wall_s = time.monotonic() - started
        finally:
            sim.stop_event.set()
            sim_thread.join(5)
            bridge.kill()
        time.sleep(2.0)  # the commons' outbox and the ingest flush within a second or so

        # ---- what the CLI says
        ana = cli_json(running_broker, garden, "ana", "me")["contributions"]
        assert {k: v["count"] for k, v in ana.items()} == {"watering": 1, "claim_honoured": 1, "share_picked_up": 1}
        assert {k: v["count"] for k, v in cli_json(running_broker, garden, "ben", "me")["contributions"].items()} == {
            "harvest_shared": 1}  # fmt: skip
        assert {k: v["count"] for k, v in cli_json(running_broker, garden, "carla", "me")["contributions"].items()} == {
            "node_maintained": 1}  # fmt: skip
        totals = cli_json(running_broker, garden, "ana", "commons", "totals")
        month_counts: dict[str, int] = {}
        for row in totals["months"].values():
            for kind, v in row.items():
                month_counts[kind] = month_counts.get(kind, 0) + v["count"]
        expected = {"watering": 1, "claim_honoured": 1, "share_picked_up": 1, "harvest_shared": 1, "node_maintained": 1}
        assert {k: n for k, n in month_counts.items() if n} == expected
        shares = cli_json(running_broker, garden, "ana", "harvest", "shares", "--all")["shares"]
        assert [(s["id"], s["status"], s["remaining"]) for s in shares] == [("s1", "taken", 0)]

        # ---- who heard what: the alert went to the rota, not to ben; ana heard of ben's share
        # (ben asked for share notices too, but a sharer is not told of their own share)
        ana_keys = {b.get("key") for _, b in ana_hook.received}
        ben_keys = {b.get("key") for _, b in ben_hook.received}
        assert "water/bed-1" in ana_keys and "water/bed-1" not in ben_keys
        assert "share/s1" in ana_keys and "share/s1" not in ben_keys

        # ---- what InfluxDB holds (the dashboards' view)
        def count(q: str, params: dict[str, Any]) -> int:
            rows = database.query(q, params)
            return int(rows[0].records()[0]["count"]) if rows else 0

        influx_totals = {s.tags["kind"]: int(s.records()[0]["sum"])
                         for s in database.query('SELECT sum("n") FROM "contribution" GROUP BY "kind"')}  # fmt: skip
        assert influx_totals == expected
        types = {s.tags["type"]: len(s.values)
                 for s in database.query('SELECT "text", "who" FROM "event" GROUP BY "type"')}  # fmt: skip
        for kind, n in {"claim": 1, "watering_done": 1, "claim_confirmed": 1, "harvest": 1, "share": 1,
                        "share_claim": 2, "share_collected": 1, "maintenance": 1, "member": 3}.items():  # fmt: skip
            assert types.get(kind) == n, (kind, types)
        detected = count(
            'SELECT count("mm") FROM "event" WHERE "type" = $t AND "bed" = $b', {"t": "watering", "b": "bed-1"}
        )
        assert detected == len(listener.waterings) >= 1
        last = database.query('SELECT last("status") AS "status", last("who") AS "who" FROM "water_claim" '
                              'WHERE "bed" = $b', {"b": "bed-1"})[0].records()[0]  # fmt: skip
        assert (last["status"], last["who"]) == ("confirmed", "ana")
        kg = database.query('SELECT sum("kg") FROM "harvest" GROUP BY "crop", "bed"')
        assert [(s.tags["crop"], s.tags["bed"], s.records()[0]["sum"]) for s in kg] == [("courgette", "bed-1", 4.0)]
        share = database.query('SELECT last("remaining") AS "r", last("status") AS "s" FROM "harvest_share" '
                               'WHERE "share" = $s', {"s": "s1"})[0].records()[0]  # fmt: skip
        assert (share["r"], share["s"]) == (0.0, "taken")
    finally:
        hub.stop()
        listener.close()
        ana_hook.close()
        ben_hook.close()

    # ---- the hub's own state agrees
    db = sqlite3.connect(tmp_path / "hub-data" / "commons.sqlite3")
    claims = db.execute("SELECT who, status, mm, litres FROM water_claims").fetchall()
    assert len(claims) == 1
    who, status, mm, litres = claims[0]
    first = next(w for w in listener.waterings if w["bed"] == "bed-1")
    assert (who, status, litres) == ("ana", "confirmed", 80.0) and mm == pytest.approx(first["mm"])
    granted = dict(db.execute("SELECT who, SUM(granted) FROM share_claims GROUP BY who").fetchall())
    assert granted == {"ana": 2000, "carla": 1000}
    db.close()
    line = (
        f"[commons week] alert at sim hour {raised_sim_h:.0f}, claim confirmed by a detected rise of "
        f"{mm:.0f} mm; {len(listener.waterings)} waterings detected in the week; 5 contributions; "
        f"{week_wall_s:.0f} s wall for 7 simulated days"
    )
    print("\n" + line)
    COUNTS.append(line)
