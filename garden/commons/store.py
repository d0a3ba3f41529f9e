"""The commons' durable state on the hub: SQLite, written only by the hub's commons thread.

Every change and the InfluxDB lines that mirror it are committed in one
transaction (the ``outbox``), so the dashboards get every event even when
InfluxDB was down at the time, and an erasure can reach lines not yet sent.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from garden.errors import GardenError

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY, body TEXT NOT NULL, joined_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS water_claims (id INTEGER PRIMARY KEY, bed TEXT NOT NULL, who TEXT NOT NULL, "
    "status TEXT NOT NULL, claimed_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, done_ms INTEGER, "
    "litres REAL, confirmed_ms INTEGER, mm REAL, note TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS water_claims_bed ON water_claims (bed, status)",
    "CREATE TABLE IF NOT EXISTS harvests (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, bed TEXT NOT NULL, "
    "crop TEXT NOT NULL, amount INTEGER NOT NULL, unit TEXT NOT NULL, who TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shares (id INTEGER PRIMARY KEY, harvest_id INTEGER NOT NULL, ts INTEGER NOT NULL, "
    "bed TEXT NOT NULL, crop TEXT NOT NULL, unit TEXT NOT NULL, offered INTEGER NOT NULL, who TEXT NOT NULL, "
    "pickup TEXT NOT NULL DEFAULT '', place TEXT NOT NULL DEFAULT '', expires_ms INTEGER NOT NULL, "
    "allocate_ms INTEGER, status TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS share_claims (id INTEGER PRIMARY KEY, share_id INTEGER NOT NULL, "
    "ts INTEGER NOT NULL, who TEXT NOT NULL, asked INTEGER NOT NULL, granted INTEGER NOT NULL, "
    "status TEXT NOT NULL, collected_ms INTEGER)",
    "CREATE INDEX IF NOT EXISTS share_claims_share ON share_claims (share_id)",
    "CREATE TABLE IF NOT EXISTS contributions (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, who TEXT NOT NULL, "
    "kind TEXT NOT NULL, amount REAL NOT NULL DEFAULT 1, unit TEXT NOT NULL DEFAULT '', bed TEXT, node TEXT, "
    "note TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS contributions_who ON contributions (who, ts)",
    "CREATE TABLE IF NOT EXISTS swaps (id INTEGER PRIMARY KEY, day TEXT NOT NULL, giver TEXT NOT NULL, "
    "taker TEXT NOT NULL, ts INTEGER NOT NULL, who TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, line TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbox_refused (id INTEGER PRIMARY KEY, line TEXT NOT NULL, error TEXT NOT NULL)",
)

# Where a person's name can be, besides their own row in ``members`` and the InfluxDB lines
# in ``outbox``/``outbox_refused``: (table, key columns, columns that hold a name,
# columns of free text that may mention one).
PERSONAL = (
    ("water_claims", ("id",), ("who",), ("note",)),
    ("harvests", ("id",), ("who",), ()),
    ("shares", ("id",), ("who",), ("pickup", "place")),
    ("share_claims", ("id",), ("who",), ()),
    ("contributions", ("id",), ("who",), ("note",)),
    ("swaps", ("id",), ("giver", "taker", "who"), ()),
)
# The fields of the commons' InfluxDB points (and the ingest's event and alert points)
# that hold people's names or words: an erasure rewrites these and nothing else.
PERSON_FIELDS = ("who", "text", "change")


class CommonsStore:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a volunteer's answer means it is on disk
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as err:
            raise GardenError(f"commons store {self.path}: {err}") from err

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise GardenError(f"commons store {self.path}: {err}") from err
        try:
            yield
        except BaseException:
            # SQLite may have rolled back itself (SQLITE_FULL does): a second
            # ROLLBACK would hide the real error behind "no transaction is active".
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            if self._db.in_transaction:  # a failed COMMIT (a full disk) leaves nothing half-done
                self._db.execute("ROLLBACK")
            raise GardenError(f"commons store {self.path}: {err}") from err

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]
        except sqlite3.Error as err:
            raise GardenError(f"commons store {self.path}: {err}") from err

    def one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        found = self.rows(sql, args)
        return found[0] if found else None

    def run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Execute; return the new row's id (for an INSERT)."""
        try:
            return int(self._db.execute(sql, args).lastrowid or 0)
        except sqlite3.Error as err:
            raise GardenError(f"commons store {self.path}: {err}") from err

    # The InfluxDB mirror.
    def mirror(self, lines: list[str]) -> None:
        for text in lines:
            self.run("INSERT INTO outbox (line) VALUES (?)", (text,))

    def pending(self, limit: int = 1000) -> list[tuple[int, str]]:
        return [(r["id"], r["line"]) for r in self.rows("SELECT id, line FROM outbox ORDER BY id LIMIT ?", (limit,))]

    def sent(self, last_id: int) -> None:
        self.run("DELETE FROM outbox WHERE id <= ?", (last_id,))

    # Members.
    def member(self, name: str) -> dict[str, Any] | None:
        row = self.one("SELECT body FROM members WHERE name = ?", (name,))
        return json.loads(row["body"]) if row else None

    def members(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.rows("SELECT body FROM members ORDER BY name")]

    def dump(self) -> str:
        """Every row of every table, as SQL text: what an erasure check reads."""
        return "\n".join(self._db.iterdump())

    def close(self) -> None:
        self._db.close()
