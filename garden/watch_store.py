"""The watch's durable state, in SQLite next to the hub's spool: alerts, mutes,
detected waterings and each bed's last need state, so that a restart neither
raises an alert twice nor forgets who acknowledged it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from garden.alerting.lifecycle import Alert
from garden.commons.scrub import mentions, scrub_value
from garden.errors import GardenError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alerts (key TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mutes (key TEXT PRIMARY KEY, until_ms INTEGER NOT NULL, who TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS waterings (bed TEXT NOT NULL, t_ms INTEGER NOT NULL, body TEXT NOT NULL, "
    "PRIMARY KEY (bed, t_ms))",
    "CREATE TABLE IF NOT EXISTS needs (bed TEXT PRIMARY KEY, state TEXT NOT NULL)",
)
# The keys of an alert's JSON that hold a person or their words (an erasure rewrites these only).
ALERT_PERSON_KEYS = frozenset({"acked_by", "text", "resolution"})


class WatchStore:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as err:
            raise GardenError(f"watch store {self.path}: {err}") from err

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise GardenError(f"watch store {self.path}: {err}") from err

    # alerts
    def alerts(self) -> dict[str, Alert]:
        return {key: Alert.from_json(json.loads(body)) for key, body in self._run("SELECT key, body FROM alerts")}

    def save_alert(self, alert: Alert) -> None:
        self._run("INSERT OR REPLACE INTO alerts (key, body) VALUES (?, ?)", (alert.key, json.dumps(alert.to_json())))

    # mutes
    def mutes(self) -> dict[str, tuple[int, str]]:
        return {key: (until, who) for key, until, who in self._run("SELECT key, until_ms, who FROM mutes")}

    def mute(self, key: str, until_ms: int, who: str) -> None:
        self._run("INSERT OR REPLACE INTO mutes (key, until_ms, who) VALUES (?, ?, ?)", (key, until_ms, who))

    def unmute(self, key: str) -> None:
        self._run("DELETE FROM mutes WHERE key = ?", (key,))

    # waterings
    def watering_times(self, bed: str) -> list[int]:
        return [t for (t,) in self._run("SELECT t_ms FROM waterings WHERE bed = ? ORDER BY t_ms", (bed,))]

    def add_watering(self, bed: str, t_ms: int, body: dict[str, Any]) -> None:
        self._run("INSERT OR IGNORE INTO waterings (bed, t_ms, body) VALUES (?, ?, ?)", (bed, t_ms, json.dumps(body)))

    def last_watering(self, bed: str) -> dict[str, Any] | None:
        rows = self._run("SELECT body FROM waterings WHERE bed = ? ORDER BY t_ms DESC LIMIT 1", (bed,))
        return json.loads(rows[0][0]) if rows else None

    # need states
    def needs(self) -> dict[str, str]:
        return {str(bed): str(state) for bed, state in self._run("SELECT bed, state FROM needs")}

    def save_need(self, bed: str, state: str) -> None:
        self._run("INSERT OR REPLACE INTO needs (bed, state) VALUES (?, ?)", (bed, state))

    def scrub(self, name: str, alias: str) -> int:
        """Replace a person's name in this store (an erasure): who acknowledged, who muted,
        who watered, and the texts; returns the rows changed."""
        changed = 0
        for key, body in self._run("SELECT key, body FROM alerts"):
            alert = json.loads(body)
            if mentions(alert, name):
                new = scrub_value(alert, name, alias, ALERT_PERSON_KEYS)
                self._run("UPDATE alerts SET body = ? WHERE key = ?", (json.dumps(new), key))
                changed += 1
        for (key,) in self._run("SELECT key FROM mutes WHERE who = ?", (name,)):
            self._run("UPDATE mutes SET who = ? WHERE key = ?", (alias, key))
            changed += 1
        for bed, t_ms, body in self._run("SELECT bed, t_ms, body FROM waterings"):
            watering = json.loads(body)
            if mentions(watering, name):
                new = scrub_value(watering, name, alias)
                self._run("UPDATE waterings SET body = ? WHERE bed = ? AND t_ms = ?", (json.dumps(new), bed, t_ms))
                changed += 1
        return changed

    def dump(self) -> str:
        with self._lock:
            return "\n".join(self._db.iterdump())

    def close(self) -> None:
        with self._lock:
            self._db.close()
