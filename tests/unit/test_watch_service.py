"""The watch's own loop, driven directly with a simulated clock (no broker needed).

Readings go in through the same ``handle`` the MQTT callback feeds, and each
evaluation runs the real science, rules and alert lifecycle; its MQTT client
is never connected (publishes are counted as failed), and the notification
dispatcher has no channels. The state store is a real SQLite file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from garden.notify.dispatch import Dispatcher
from garden.settings import HubSettings
from garden.watch import Watcher
from garden.watch_settings import WatchSettings

MIN = 60_000
T0 = 1_780_000_000_000  # 2026-05-28, a Thursday


def watcher(tmp_path: Path) -> Watcher:
    w = Watcher(HubSettings(garden="g", hub_id="h", data_dir=tmp_path), WatchSettings(), dispatcher=Dispatcher([]))
    w.handle("garden/g/bed/bed-1/config", json.dumps({"soil": "loam", "overrides": {"trigger_vwc": 22.0}}).encode())
    w.handle("garden/g/node/n1/config", json.dumps({"bed": "bed-1"}).encode())
    w.handle("garden/g/node/n1/status", json.dumps({"state": "online", "interval_s": 900}).encode())
    return w


def reading(w: Watcher, t_ms: int, seq: int, vwc: float) -> None:
    body = {"ts": t_ms, "node": "n1", "boot": 1, "seq": seq, "bed": "bed-1",
            "raw": {"sm0": round(500 - 6 * vwc), "bt0": 4000},
            "values": {"sm0": {"vwc_pct": vwc}, "bt0": {"battery_v": 4.0}}}  # fmt: skip
    w.handle("garden/g/node/n1/telemetry", json.dumps(body).encode())


def test_noise_at_the_trigger_one_alert_per_crossing_and_a_watering_resolves_it(tmp_path: Path) -> None:
    w = watcher(tmp_path)
    rng = random.Random(5)
    # Every 15 min for 5 days: dry from 27 % to the trigger (22 %) in a day, sit on it
    # for two days with ±1.5 % noise, watered to 30 % on day 3, dry to 22 % and sit again.
    truth: list[float] = []
    truth += [27 - 5 * i / 96 for i in range(96)] + [22.0] * 192
    truth += [30 - 8 * i / 96 for i in range(96)] + [22.0] * 96
    raised_at, resolved = [], []
    for i, vwc in enumerate(truth):
        t = T0 + i * 15 * MIN
        reading(w, t, i + 1, round(vwc + rng.uniform(-1.5, 1.5), 2))
        for transition in w.evaluate(t + MIN):
            if transition.alert.key == "water/bed-1" and transition.change == "raised":
                raised_at.append(i)
            if transition.alert.key == "water/bed-1" and transition.change == "resolved":
                resolved.append((i, transition.alert.resolution))
    assert len(raised_at) == 2, raised_at
    # Raised once the truth was within the noise (1.5 % VWC = 7 h of drying here) of the trigger.
    assert 96 - 30 <= raised_at[0] <= 96 + 8 and 384 - 30 <= raised_at[1] <= 384 + 8
    # The watering on day 3 was detected and closed the first alert; the second is still open.
    assert w.counters["waterings"] == 1
    assert len(resolved) == 1 and 288 <= resolved[0][0] <= 288 + 16 and resolved[0][1].startswith("watered")
    assert w.alerts["water/bed-1"].open


def test_a_node_that_sleeps_between_readings_is_never_lost_and_one_that_stops_is(tmp_path: Path) -> None:
    w = watcher(tmp_path)
    node_changes = []
    seq = 0
    # Two days of readings every 15 min, evaluated every 2 min: the node sleeps 14 of 15.
    for minute in range(2 * 24 * 60):
        t = T0 + minute * MIN
        if minute % 15 == 0:
            seq += 1
            reading(w, t, seq, 25.0 + (seq % 3) * 0.3)
        if minute % 2 == 0 or minute % 15 == 14:  # and always just before the next reading
            node_changes += [tr for tr in w.evaluate(t) if tr.alert.kind == "node"]
    assert node_changes == []
    # Then it stops: late, then lost within interval x lost_tolerance (15 min x 3).
    last = T0 + (2 * 24 * 60 - 15) * MIN
    for minute in range(2 * 24 * 60, 2 * 24 * 60 + 60):
        node_changes += [tr for tr in w.evaluate(T0 + minute * MIN) if tr.alert.kind == "node"]
    kinds = [(tr.change, tr.alert.severity, (tr.ts_ms - last) // MIN) for tr in node_changes]
    assert [k[:2] for k in kinds] == [("raised", "info"), ("escalated", "warning")]
    assert kinds[1][2] <= 45
