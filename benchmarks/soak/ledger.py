"""The simulator's ledger, read as it grows: which readings the garden produced, and when.

Interpreted as ``SimThread.keys()`` in tests/integration/test_bridge_pipeline.py
does: each entry is a reading written intact to a port, named
``(node, boot, seq)`` as the bridge names it; an entry with ``"lost"`` takes
a reading back (an unplug took it before the bridge read it). Read in
order, since a name taken back may be written again later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

Key = tuple[str, int, int]


@dataclass
class Tail:
    """A file that grows: the whole lines appended since the last call (none while it does not exist)."""

    path: Path
    _offset: int = 0
    _rest: bytes = b""

    def new_lines(self) -> list[bytes]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        return lines


@dataclass
class Ledger:
    path: Path
    produced: dict[Key, float] = field(default_factory=dict)  # reading -> wall time it was written
    taken_back: int = 0  # entries with "lost": readings an unplug took before the bridge read them
    taken_back_at: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tail = Tail(self.path)

    def refresh(self) -> None:
        """Read what was appended since the last call (whole lines only)."""
        for line in self._tail.new_lines():
            if not line:
                continue
            entry = json.loads(line)
            key = (str(entry["node"]), int(entry["boot"]), int(entry["seq"]))
            if entry.get("lost"):
                self.produced.pop(key, None)
                self.taken_back += 1
                self.taken_back_at.append(float(entry["t"]))
            else:
                self.produced[key] = float(entry["t"])

    def between(self, since: float, until: float) -> set[Key]:
        return {k for k, t in self.produced.items() if since <= t <= until}

    def first_after(self, node: str, t: float) -> tuple[Key, float] | None:
        """The node's first reading written after ``t``, if any yet."""
        best: tuple[Key, float] | None = None
        for key, written in self.produced.items():
            if key[0] == node and written > t and (best is None or written < best[1]):
                best = (key, written)
        return best
