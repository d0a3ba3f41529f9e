"""The SQLite spool: FIFO, acks, persistence, overflow policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge.errors import SpoolError
from firmware_bridge.sequencing import NodeSeq
from firmware_bridge.spool import OverflowPolicy, Spool


def rows(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [("t", str(i).encode()) for i in range(start, start + n)]


def test_fifo_ack_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spool = Spool(path)
    spool.append(rows(5), {"n1": NodeSeq(boot=2, last_seq=9)})
    pending = spool.pending(0, 3)
    assert [p[2] for p in pending] == [b"0", b"1", b"2"]
    spool.ack([pending[0][0], pending[1][0]])
    assert spool.depth == 3
    spool.close()
    again = Spool(path)
    assert again.depth == 3
    assert [p[2] for p in again.pending(0, 10)] == [b"2", b"3", b"4"]
    assert again.node_states() == {"n1": NodeSeq(boot=2, last_seq=9)}


def test_drop_oldest_keeps_the_newest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", max_rows=10)
    spool.append(rows(8))
    assert spool.append(rows(5, 8)) == 3
    assert [p[2] for p in spool.pending(0, 100)] == [str(i).encode() for i in range(3, 13)]
    assert spool.dropped == 3
    spool.close()
    assert Spool(tmp_path / "s.sqlite3", max_rows=10).dropped == 3  # the count survives


def test_drop_oldest_spares_rows_in_flight(tmp_path: Path) -> None:
    """Rows handed to the MQTT client may still reach the broker: dropping them would
    count as lost readings that arrive after all. The oldest of the rest go instead."""
    spool = Spool(tmp_path / "s.sqlite3", max_rows=10)
    spool.append(rows(8))
    in_flight = spool.pending(0, 3)[-1][0]  # rows 0, 1, 2 handed over
    assert spool.append(rows(5, 8), in_flight_upto=in_flight) == 3
    assert [p[2] for p in spool.pending(0, 100)] == [str(i).encode() for i in (0, 1, 2, *range(6, 13))]
    # Everything in flight: the overflow comes off the new batch, and the spool
    # holds max_rows plus what is in flight.
    last = spool.pending(0, 100)[-1][0]
    assert spool.append(rows(2, 13), in_flight_upto=last) == 2
    assert spool.depth == 10


def test_drop_newest_refuses_the_overflow(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", max_rows=10, overflow=OverflowPolicy.DROP_NEWEST)
    spool.append(rows(8))
    assert spool.append(rows(5, 8)) == 3
    assert [p[2] for p in spool.pending(0, 100)] == [str(i).encode() for i in range(10)]


def test_a_batch_larger_than_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite3", max_rows=4)
    spool.append(rows(2))
    assert spool.append(rows(6, 2)) == 4
    assert [p[2] for p in spool.pending(0, 100)] == [b"4", b"5", b"6", b"7"]


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError) as caught:
        Spool(path)
    assert str(path) in str(caught.value)
