"""Free text from volunteers, on its way to the line-protocol writer.

The writer refuses what no line can carry unchanged (line breaks, NUL and other
control characters, unpaired surrogates). The callers that take free text refuse
it at input, with a message naming the field, before anything is stored: the
commons' requests (``garden harvest log --pickup/--place``, ``garden node
maintained --note``) are refused whole, and the rest of the garden's data is as
it was. Text the writer can carry (quotes, backslashes, commas, emoji, combining
marks) goes through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from garden.commons.service import Commons, CommonsError
from garden.commons.settings import parse_commons
from garden.settings import HubSettings
from garden.watch_settings import WatchSettings

T0 = 1_780_000_000_000


def snapshot(c: Commons) -> dict[str, list[dict[str, Any]]]:
    return {table: c.store.rows(f"SELECT * FROM {table} ORDER BY rowid")
            for table in ("outbox", "harvests", "contributions")}  # fmt: skip


@pytest.fixture
def commons(tmp_path: Path) -> Iterator[Commons]:
    c = Commons(HubSettings(garden="t", hub_id="h", data_dir=tmp_path), parse_commons({}), WatchSettings(),
                clock_ms=lambda: T0)  # fmt: skip
    c.command({"action": "member.add", "who": "ana", "name": "ana", "email": "ana@example.org"}, T0)
    c.command({"action": "harvest.log", "who": "ana", "bed": "bed-1", "crop": "kale", "quantity": "1kg"}, T0)
    yield c
    c.store.close()


@pytest.mark.parametrize(
    "text",
    ["Sat\n10-12", "Sat\r\n10-12", "tab\there", "nul\x00", "esc\x1b[31m", "del\x7f", "c1\x85", "\ud800 lone"],
    ids=["LF", "CRLF", "tab", "NUL", "escape", "DEL", "C1", "surrogate"],
)
@pytest.mark.parametrize("field", ["pickup", "place"])
def test_a_share_with_unstorable_text_is_refused_whole(commons: Commons, field: str, text: str) -> None:
    before = snapshot(commons)
    body = {"action": "harvest.log", "who": "ana", "bed": "bed-2", "crop": "beans", "quantity": "2kg",
            "share": "1kg", field: text}  # fmt: skip
    with pytest.raises(CommonsError) as caught:
        commons.command(body, T0 + 1)
    message = str(caught.value)
    assert message.startswith(f"{field}: ") and "line breaks" in message and "control characters" in message
    assert snapshot(commons) == before  # nothing half-stored, the earlier harvest still there


@pytest.mark.parametrize("note", ["two\nlines", "nul\x00", "\udfff"])
def test_a_maintenance_note_with_unstorable_text_is_refused(commons: Commons, note: str) -> None:
    before = snapshot(commons)
    with pytest.raises(CommonsError, match=r"^note: a line of text"):
        commons.command({"action": "node.maintained", "who": "ana", "node": "n1", "what": "battery", "note": note},
                        T0 + 1)  # fmt: skip
    assert snapshot(commons) == before


def test_text_the_writer_can_carry_goes_through_unchanged(commons: Commons) -> None:
    pickup = 'Sat "10-12", by the shed\\gate 🌱 cafe\u0301'
    logged = commons.command({"action": "harvest.log", "who": "ana", "bed": "bed-2", "crop": "beans",
                              "quantity": "2kg", "share": "1kg", "pickup": pickup, "place": " the, shed = "},
                             T0 + 1)  # fmt: skip
    assert logged["share"]["pickup"] == pickup
    shares = commons.command({"action": "harvest.shares", "who": "ana"}, T0 + 2)["shares"]
    assert [s["pickup"] for s in shares] == [pickup]
    lines = [row["line"] for row in snapshot(commons)["outbox"] if row["line"].startswith("harvest_share,")]
    # The share's point carries the text as given, escaped only as line protocol escapes it.
    assert len(lines) == 1 and pickup.replace("\\", "\\\\").replace('"', '\\"') in lines[0]
