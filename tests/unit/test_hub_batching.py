"""How the hub cuts its inbox into batches (Hub._collect). No broker: the hub is never started."""

from __future__ import annotations

import threading
from pathlib import Path

from garden.hub import Hub, Received
from garden.settings import HubSettings

NOW_MS = 1_800_000_000_000


def make_hub(tmp_path: Path, clock: list[int]) -> Hub:
    settings = HubSettings(garden="g", hub_id="h", data_dir=tmp_path, batch_size=3, batch_ms=200)
    return Hub(settings, clock_ms=lambda: clock[0])


def message(mid: int, received_ms: int) -> Received:
    return Received(mid, 1, "garden/g/node/n1/telemetry", b"{}", received_ms, 1)


def test_a_batch_stops_at_batch_size(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, [NOW_MS])
    for mid in range(1, 6):
        hub._inbox.put(message(mid, NOW_MS))
    assert [m.mid for m in hub._collect()] == [1, 2, 3]
    assert [m.mid for m in hub._collect()] == [4, 5]


def test_batch_ms_counts_from_the_first_messages_arrival(tmp_path: Path) -> None:
    """A message that has already waited batch_ms (it queued while the last batch was
    being stored) goes out with what is there now; the hub waits for nothing more."""
    clock = [NOW_MS]
    hub = make_hub(tmp_path, clock)
    hub._inbox.put(message(1, NOW_MS - 1000))
    later = threading.Timer(0.1, lambda: hub._inbox.put(message(2, NOW_MS)))
    later.start()
    try:
        assert [m.mid for m in hub._collect()] == [1]
    finally:
        later.join()
    # A fresh first message: the hub waits up to batch_ms for more to join it.
    clock[0] = NOW_MS
    hub._inbox.put(message(3, NOW_MS))
    assert [m.mid for m in hub._collect()] == [2, 3]
