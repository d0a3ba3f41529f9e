"""The bridge's on-disk spool: every reading is here before it is published.

A SQLite database in WAL mode. One transaction stores a batch of readings
together with the sequence state of their nodes, so after a ``kill -9`` the
spool and the counters agree. A row is deleted only when the broker has
acknowledged it (PUBACK), so a crash or a broker outage loses nothing; a
crash between the PUBACK and the delete sends that reading once more, with
the same ``(node, boot, seq)`` and timestamp, which the hub writes
idempotently.

The spool is bounded (``max_rows``). When it is full, the overflow policy
decides: ``drop_oldest`` (the default: a garden cares more about what the
beds are doing now) deletes the oldest rows to make room, ``drop_newest``
refuses the new ones. Either way the count is kept in ``dropped`` and
survives restarts.

``synchronous`` is NORMAL by default: in WAL mode a committed row survives
the process being killed; a power cut may roll back the last commits since
the OS last flushed. ``full`` trades write speed for surviving that too.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path

from firmware_bridge.errors import SpoolError
from firmware_bridge.sequencing import NodeSeq

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class OverflowPolicy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"


class Spool:
    """A bounded, durable FIFO of (topic, payload) rows. Use from one thread."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_rows: int = 200_000,
        overflow: OverflowPolicy = OverflowPolicy.DROP_OLDEST,
        synchronous: str = "normal",
    ) -> None:
        if max_rows < 1:
            raise SpoolError(str(path), "max_rows must be at least 1")
        if synchronous not in ("normal", "full"):
            raise SpoolError(str(path), "synchronous must be 'normal' or 'full'")
        self.path = str(path)
        self.max_rows = max_rows
        self.overflow = overflow
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            integrity = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except (sqlite3.Error, OSError) as err:
            raise SpoolError(self.path, str(err)) from err
        if integrity != "ok":
            raise SpoolError(self.path, f"integrity check failed: {integrity}")
        self._depth: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        self.dropped = self._counter("dropped")

    # --------------------------------------------------------------- writing

    def append(
        self,
        rows: Sequence[tuple[str, bytes]],
        node_states: dict[str, NodeSeq] | None = None,
        *,
        in_flight_upto: int = 0,
    ) -> int:
        """Store rows and node states in one transaction; return rows dropped.

        Rows up to ``in_flight_upto`` are in flight (handed to the MQTT client,
        not yet acknowledged): drop_oldest never drops those, since they may
        still reach the broker; so every row dropped is a reading lost, and the
        spool holds at most ``max_rows`` plus what is in flight.
        """
        if not rows and not node_states:
            return 0
        dropped = 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                to_insert: Sequence[tuple[str, bytes]] = rows
                overflow = self._depth + len(rows) - self.max_rows
                if overflow > 0:
                    if self.overflow is OverflowPolicy.DROP_NEWEST:
                        keep = max(len(rows) - overflow, 0)
                        to_insert, dropped = rows[:keep], len(rows) - keep
                    else:
                        (flying,) = self._db.execute(
                            "SELECT count(*) FROM outbox WHERE id <= ?", (in_flight_upto,)
                        ).fetchone()
                        old = max(min(overflow, self._depth - flying), 0)
                        self._db.execute(
                            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE id > ? ORDER BY id LIMIT ?)",
                            (in_flight_upto, old),
                        )
                        self._depth -= old
                        dropped = old
                        if overflow > old:  # a batch larger than the whole spool
                            to_insert = rows[overflow - old :]
                            dropped += overflow - old
                self._db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", to_insert)
                if node_states:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO nodes (node, state) VALUES (?, ?)",
                        [(n, json.dumps(asdict(s))) for n, s in node_states.items()],
                    )
                if dropped:
                    self._add_counter("dropped", dropped)
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back itself (SQLITE_FULL does): a second
                # ROLLBACK would hide the real error behind "no transaction is active".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise SpoolError(self.path, f"cannot store {len(rows)} readings: {err}") from err
        self._depth += len(to_insert)
        if dropped:
            self.dropped += dropped
            log.warning(
                "spool full (%d rows): dropped %d readings by policy %s",
                self.max_rows,
                dropped,
                self.overflow.value,
            )
        return dropped

    def ack(self, ids: Iterable[int]) -> None:
        """Delete rows the broker has acknowledged."""
        batch = [(i,) for i in ids]
        if not batch:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.executemany("DELETE FROM outbox WHERE id = ?", batch)
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back itself (SQLITE_FULL does): a second
                # ROLLBACK would hide the real error behind "no transaction is active".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            raise SpoolError(self.path, f"cannot delete acknowledged rows: {err}") from err
        self._depth -= cur.rowcount

    # --------------------------------------------------------------- reading

    def pending(self, after_id: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` rows with id above ``after_id``, oldest first."""
        try:
            rows: list[tuple[int, str, bytes]] = self._db.execute(
                "SELECT id, topic, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        except sqlite3.Error as err:
            raise SpoolError(self.path, f"cannot read waiting rows: {err}") from err
        return rows

    @property
    def depth(self) -> int:
        return self._depth

    def node_states(self) -> dict[str, NodeSeq]:
        return {node: NodeSeq(**json.loads(state)) for node, state in self._db.execute("SELECT node, state FROM nodes")}

    def close(self) -> None:
        self._db.close()

    # -------------------------------------------------------------- counters

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _add_counter(self, name: str, delta: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, delta),
        )
