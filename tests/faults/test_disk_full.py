"""Case 8: the disk under the hub's spool fills up (a 1 MiB tmpfs of its own).

InfluxDB is killed, so the hub spools every batch to disk until the disk is
full. From then on it cannot make a batch durable, so it does not acknowledge
it: the broker keeps the readings. A clear, critical ``storage`` alert says so.
When InfluxDB is back the spool drains, the waiting readings are stored, the
alert resolves, and every SQLite file the hub keeps passes its integrity check.
Real Mosquitto, real InfluxDB, the real hub (in a private mount namespace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from garden.influx import Influx
from tests.integration.conftest import Broker, HubProcess, stored_keys, wait_for
from tests.integration.test_hub_pipeline import Publisher
from tests.servers import Influxd

from .conftest import FAST_WATCH, record

pytestmark = pytest.mark.faults


def test_disk_full_under_the_hub_spool(
    broker: Broker, running_influxd: Influxd, garden: str, database: Influx, hub_factory, listener_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:  # fmt: skip
    report = tmp_path / "small-disk.json"
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
    wrapper = [*unshare, sys.executable, "-m", "tests.faults.small_disk", str(tmp_path / "hub-data"), "1m",
               str(report), "--"]  # fmt: skip
    hub: HubProcess = hub_factory(config=FAST_WATCH + "[hub]\nstatus_interval_s = 1\n", wrapper=wrapper)
    alerts = listener_factory([f"garden/{garden}/alert/storage/+"])
    publisher = Publisher(broker, garden)

    def storage_alerts(transition: str) -> list[tuple[float, dict[str, object]]]:
        return [(t, b) for t, b in alerts.bodies("/alert/storage/") if b.get("transition") == transition]

    try:
        publisher.run(rate=200, seconds=2)
        running_influxd.kill()
        killed = time.time()
        for _ in range(120):  # until the disk is full and the alert is out
            publisher.run(rate=300, seconds=1)
            if storage_alerts("raised"):
                break
        assert storage_alerts("raised"), "no storage alert while the disk was full"
        publisher.run(rate=300, seconds=5)  # these wait at the broker, unacknowledged
        status = hub.status_body(broker)
        shown = subprocess.run(
            [sys.executable, "-m", "garden", "hub", "status", "--mqtt", broker.url, "--garden", garden],
            capture_output=True, text=True, env={**os.environ, "GARDEN_CONFIG": "/dev/null"}, timeout=30,
        )  # fmt: skip
        running_influxd.start()
        publisher.run(rate=200, seconds=2)
    finally:
        publisher.close()
    wait_for(lambda: len(stored_keys(database)) >= len(publisher.sent), 120, "everything stored", interval=0.5)
    wait_for(lambda: bool(storage_alerts("resolved")), 30, "the storage alert to resolve")
    time.sleep(1)
    stored = stored_keys(database, settled=True)
    lost = len(set(publisher.sent) - set(stored))
    duplicates = len(stored) - len(set(stored))
    hub.stop(signal.SIGTERM)
    checks = json.loads(report.read_text())
    raised_at, raised = storage_alerts("raised")[0]
    record("8 disk-full", published=len(publisher.sent), stored=len(stored), lost=lost, duplicates=duplicates,
           alert_after_s=round(raised_at - killed, 1), unstored_batches=status["counters"].get("unstored_batches"),  # type: ignore[attr-defined]
           integrity=checks["integrity"], severity=raised["severity"])  # fmt: skip
    print(f"alert: {raised['text']}")
    assert (lost, duplicates) == (0, 0)
    assert raised["severity"] == "critical" and "full" in str(raised["text"])
    assert status["storage"]["ok"] is False  # type: ignore[index]
    assert "cannot store readings" in shown.stdout and "full" in shown.stdout, shown.stdout + shown.stderr
    assert checks["integrity"] and all(v == "ok" for v in checks["integrity"].values())
    assert {"hub-spool.sqlite3", "watch.sqlite3"} <= set(checks["integrity"])
