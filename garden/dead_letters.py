"""The dead-letter store: messages the hub refused, kept for a volunteer to inspect.

SQLite, next to the hub's spool. Bounded: the newest ``max_rows`` are kept.
``garden hub dead-letters`` lists them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from garden.errors import GardenError


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_ms: int
    topic: str
    reason: str
    detail: str
    payload: bytes


class DeadLetterStore:
    def __init__(self, path: Path | str, max_rows: int = 10_000) -> None:
        self.path = str(path)
        self.max_rows = max_rows
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "received_ms INTEGER NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL, "
                "detail TEXT NOT NULL, payload BLOB NOT NULL)"
            )
        except sqlite3.Error as err:
            raise GardenError(f"dead-letter store {self.path}: {err}") from err

    def add(self, items: list[tuple[int, str, str, str, bytes]]) -> None:
        """Store (received_ms, topic, reason, detail, payload) rows, then trim to the bound."""
        if not items:
            return
        try:
            self._insert(items)
        except sqlite3.Error as err:
            raise GardenError(f"dead-letter store {self.path}: cannot store {len(items)} messages: {err}") from err

    def _insert(self, items: list[tuple[int, str, str, str, bytes]]) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO dead_letters (received_ms, topic, reason, detail, payload) VALUES (?, ?, ?, ?, ?)",
                [(ts, topic, reason, detail[:500], payload[:65536]) for ts, topic, reason, detail, payload in items],
            )
            self._db.execute(
                "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?", (self.max_rows,)
            )

    def count(self) -> int:
        try:
            return int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        except sqlite3.Error as err:
            raise GardenError(f"dead-letter store {self.path}: {err}") from err

    def latest(self, limit: int = 50) -> list[DeadLetter]:
        rows = self._db.execute(
            "SELECT id, received_ms, topic, reason, detail, payload FROM dead_letters ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def close(self) -> None:
        self._db.close()
