"""Faults under the hub, while telemetry keeps coming (cases 1, 2 and 4 of the suite).

A publisher sends synthetic telemetry at QoS 1 at a steady rate and records every
(node, boot, seq) the broker acknowledged. At the end InfluxDB must hold exactly
those, each once: nothing lost, nothing duplicated, the hub's backlog drained.
Real Mosquitto (with our production queue limits), real InfluxDB, the real hub.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter

import pytest

from garden.influx import Influx
from tests.integration.conftest import Broker, HubProcess, stored_keys, wait_for
from tests.integration.test_hub_pipeline import Publisher
from tests.servers import Influxd

from .conftest import FAST_WATCH, record, wait_until

pytestmark = pytest.mark.faults

Key = tuple[str, int, int]


def compare(case: str, sent: list[Key], stored: list[Key], **more: object) -> tuple[int, int]:
    counts = Counter(stored)
    missing = sorted(set(sent) - set(counts))
    if missing:
        print(f"[{case}] missing, first: {missing[:10]}")
    lost = len(missing)
    duplicates = sum(n - 1 for n in counts.values())
    unexpected = len(set(counts) - set(sent))
    record(case, published=len(sent), stored=len(stored), lost=lost, duplicates=duplicates,
           unexpected=unexpected, **more)  # fmt: skip
    return lost, duplicates + unexpected


def drained(influx: Influx, sent: list[Key], timeout: float) -> float | None:
    """Seconds until InfluxDB holds as many readings as were sent; None if it never
    did (the counts that follow then say what is missing)."""
    return wait_until(lambda: len(stored_keys(influx)) >= len(sent), timeout, interval=0.5)


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def test_influxdb_killed_60s_at_500_msgs(
    broker: Broker,
    running_influxd: Influxd,
    garden: str,
    hub_factory,
    database: Influx,  # type: ignore[no-untyped-def]
) -> None:
    """Case 1: InfluxDB SIGKILLed for 60 s while 500 readings a second arrive."""
    hub: HubProcess = hub_factory()
    publisher = Publisher(broker, garden)
    try:
        publisher.run(rate=500, seconds=3)
        running_influxd.kill()
        down = time.monotonic()
        publisher.run(rate=500, seconds=60)
        running_influxd.start()
        down_s = time.monotonic() - down
        publisher.run(rate=500, seconds=3)
    finally:
        publisher.close()
    drain_s = drained(database, publisher.sent, 120)
    time.sleep(1)
    status = hub.status_body(broker)
    lost, dup = compare(
        "1 influxdb-down-60s",
        publisher.sent,
        stored_keys(database, settled=True),
        rate=500,
        down_s=round(down_s, 1),
        drained_after_s=rounded(drain_s),
        spooled_points=status["counters"].get("spooled_points"),
    )  # type: ignore[attr-defined]
    assert (lost, dup) == (0, 0)
    assert status["counters"].get("spooled_points", 0) > 0, "the outage never reached the hub's spool"  # type: ignore[attr-defined]
    wait_for(lambda: hub.status_body(broker)["backlog_batches"] == 0, 30, "an empty spool")


def test_hub_sigkilled_and_restarted_after_30s(
    broker: Broker,
    garden: str,
    hub_factory,
    database: Influx,  # type: ignore[no-untyped-def]
) -> None:
    """Case 2: the hub SIGKILLed mid-stream, started again 30 s later. Its persistent
    session keeps the readings at the broker; what it had taken but not acknowledged
    comes again, and overwrites itself in InfluxDB (same series, same timestamp)."""
    hub: HubProcess = hub_factory()
    publisher = Publisher(broker, garden)
    done = threading.Event()

    def feed() -> None:
        publisher.run(rate=500, seconds=40)
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(4)
    hub.stop(signal.SIGKILL)
    killed_at = len(publisher.sent)
    time.sleep(30)
    hub.start()
    done.wait(60)
    publisher.close()
    drain_s = drained(database, publisher.sent, 120)
    time.sleep(1)
    lost, dup = compare("2 hub-sigkill-30s", publisher.sent, stored_keys(database, settled=True),
                        rate=500, sent_before_kill=killed_at, drained_after_s=rounded(drain_s))  # fmt: skip
    assert (lost, dup) == (0, 0)


def test_hub_offline_120s_nothing_lost(
    broker: Broker,
    garden: str,
    hub_factory,
    database: Influx,  # type: ignore[no-untyped-def]
) -> None:
    """Case 4: the hub stopped for 120 s while readings flow: the broker queues them
    for its persistent session within our configs' limits (deploy/mosquitto), and the
    hub takes them all when it is back."""
    hub: HubProcess = hub_factory()
    publisher = Publisher(broker, garden)
    try:
        publisher.run(rate=200, seconds=2)
        hub.stop(signal.SIGTERM)
        before = len(publisher.sent)
        publisher.run(rate=200, seconds=120)
        queued = len(publisher.sent) - before
        hub.start()
        publisher.run(rate=200, seconds=2)
    finally:
        publisher.close()
    drain_s = drained(database, publisher.sent, 120)
    time.sleep(1)
    lost, dup = compare("4 hub-offline-120s", publisher.sent, stored_keys(database, settled=True),
                        queued_at_broker=queued, drained_after_s=rounded(drain_s))  # fmt: skip
    assert (lost, dup) == (0, 0)


def test_queue_overflow_is_counted_and_alerted(
    tmp_path,
    running_influxd: Influxd,
    garden: str,
    database: Influx,
    listener_factory,  # type: ignore[no-untyped-def]
) -> None:
    """Case 4, past the limit: a broker whose per-client queue holds only 300 messages
    drops the rest while the hub is away (Mosquitto drops silently). The nodes' own
    sequence numbers make the loss visible: the watch raises a ``gaps`` alert per node
    whose count is exactly what InfluxDB lacks."""
    small = Broker(tmp_path / "small-broker", queues="max_queued_messages 300\nmax_inflight_messages 20\n")
    small.start()
    try:
        hub = HubProcess(small, running_influxd, tmp_path, garden, garden, config=FAST_WATCH)
        hub.start()
        hub.wait_online(small)
        alerts = listener_factory([f"garden/{garden}/alert/gaps/+"], on=small)
        publisher = Publisher(small, garden)
        try:
            publisher.run(rate=100, seconds=2)
            hub.stop(signal.SIGTERM)
            publisher.run(rate=100, seconds=10)  # 1000 messages for a queue of 300
            hub.start()
            hub.wait_online(small)  # the readings after the gap are what make it visible
            publisher.run(rate=100, seconds=3)
        finally:
            publisher.close()
        time.sleep(3)
        stored = stored_keys(database, settled=True)
        missing = Counter(node for node, _, _ in set(publisher.sent) - set(stored))
        assert sum(missing.values()) > 0, "the small queue dropped nothing: the case proves nothing"

        def alerted() -> dict[str, int]:
            latest: dict[str, int] = {}
            for _, body in alerts.bodies("/alert/gaps/"):
                if body.get("transition") != "resolved":
                    latest[str(body["subject"])] = int(body["details"]["missing"])  # type: ignore[call-overload,index]
            return latest

        took = wait_until(lambda: alerted() == dict(missing), 30)
        assert took is not None, f"gaps alerts {alerted()} do not match the loss {dict(missing)}"
        record("4 queue-overflow", published=len(publisher.sent), stored=len(set(stored)),
               dropped_by_broker=sum(missing.values()), alerted=json.dumps(alerted(), sort_keys=True))  # fmt: skip
        hub.stop(signal.SIGTERM)
    finally:
        small.stop()
