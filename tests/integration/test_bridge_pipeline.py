"""End to end: simulated nodes on ptys -> ``garden bridge run`` -> real Mosquitto.

Every test compares the simulator's ledger (each reading it wrote intact to
its port, as (node, boot, seq)) with what a persistent QoS1 subscriber
received, and prints the exact counts. The broker down or cut off and the
ports renamed are fault cases, in tests/faults.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from firmware_bridge.simulator.node import Faults, SimNode
from firmware_bridge.simulator.pty_runner import Simulation

from .conftest import COUNTS, BridgeProcess, Broker, Collector, wait_for

pytestmark = pytest.mark.integration


class SimThread:
    def __init__(self, tmp: Path, nodes: int, count: int, rate: float, faults: Faults) -> None:
        self.ledger_path = tmp / "ledger.jsonl"
        self.ledger = self.ledger_path.open("w")
        sim_nodes = [SimNode(f"n{i}", seed=7, interval_s=1, faults=faults) for i in range(1, nodes + 1)]
        self.sim = Simulation(sim_nodes, tmp / "ports", speed=rate, count=count, ledger=self.ledger)
        self.sim.open_ports()
        self.thread = threading.Thread(target=self.sim.run, daemon=True)

    @property
    def links(self) -> list[Path]:
        return self.sim.links()

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "simulator did not finish"

    def entries(self) -> list[dict[str, object]]:
        self.ledger.flush()
        return [json.loads(line) for line in self.ledger_path.read_text().splitlines()]

    def keys(self) -> set[tuple[str, int, int]]:
        """Readings written intact, less any an unplug took before the bridge read them.

        In order: a boot that lost all its lines to an unplug gives its number
        to the next, so a name taken back may be written again later.
        """
        produced: set[tuple[str, int, int]] = set()
        for e in self.entries():
            key = (str(e["node"]), int(e["boot"]), int(e["seq"]))  # type: ignore[call-overload]
            if e.get("lost"):
                produced.discard(key)
            else:
                produced.add(key)
        return produced

    def stop(self) -> None:
        self.sim.stop_event.set()
        self.thread.join(5)


def report(name: str, produced: set[tuple[str, int, int]], got: list[tuple[str, int, int]]) -> tuple[int, int]:
    counts = Counter(got)
    missing = produced - set(counts)
    lost = len(missing)
    if missing:
        print(f"[{name}] missing: {sorted(missing)[:20]}")
    dup = sum(n - 1 for n in counts.values())
    extra = len(set(counts) - produced)
    line = (
        f"[{name}] produced={len(produced)} received={len(got)} distinct={len(counts)} "
        f"lost={lost} duplicate_messages={dup} unexpected={extra}"
    )
    print("\n" + line)
    COUNTS.append(line)
    assert extra == 0, "received readings the nodes never produced"
    return lost, dup


def assert_seq_continuity(got: list[tuple[str, int, int]], produced: set[tuple[str, int, int]]) -> None:
    """Per node and boot, the seqs received are exactly the seqs produced, in order."""
    by_boot: dict[tuple[str, int], list[int]] = {}
    for node, boot, seq in dict.fromkeys(got):  # first arrivals; replays come later by nature
        by_boot.setdefault((node, boot), []).append(seq)
    for (node, boot), seqs in by_boot.items():
        assert seqs == sorted(seqs), f"{node} boot {boot} out of order"
        wanted = sorted(s for n, b, s in produced if (n, b) == (node, boot))
        assert sorted(set(seqs)) == wanted


def assert_replays_are_identical(collector: Collector) -> None:
    first: dict[tuple[str, int, int], bytes] = {}
    with collector.lock:
        pairs = list(zip(collector.messages, collector.raw, strict=True))
    for message, raw in pairs:
        key = (str(message["node"]), int(message["boot"]), int(message["seq"]))  # type: ignore[call-overload]
        assert first.setdefault(key, raw) == raw, f"{key} sent twice with different content"


@pytest.fixture
def sim_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    sims: list[SimThread] = []

    def make(nodes: int, count: int, rate: float, faults: Faults) -> SimThread:
        s = SimThread(tmp_path, nodes, count, rate, faults)
        sims.append(s)
        return s

    yield make
    for s in sims:
        s.stop()


def start_bridge(sim: SimThread, broker: Broker, tmp: Path, made: list[BridgeProcess], garden: str) -> BridgeProcess:
    bridge = BridgeProcess(sim.links, broker, tmp, garden)
    made.append(bridge)
    bridge.start()
    return bridge


def test_frames_in_equal_messages_out_with_faults(
    running_broker: Broker,
    collector: Collector,
    garden: str,
    sim_factory,
    bridge_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    faults = Faults(partial=0.03, bad_crc=0.03, noise=0.03, sentinel=0.03, failed=0.02, reboot_every=60)
    sim = sim_factory(nodes=3, count=150, rate=60.0, faults=faults)
    bridge = start_bridge(sim, running_broker, tmp_path, bridge_factory, garden)
    sim.start()
    sim.join(60)
    produced = sim.keys()
    wait_for(lambda: len(set(collector.keys())) >= len(produced), 20, "all readings at the subscriber")
    got = collector.keys()
    lost, dup = report("faults", produced, got)
    assert (lost, dup) == (0, 0)
    assert_seq_continuity(got, produced)
    # Three boots each: the first, and reboots after 60 and 120 readings.
    assert {b for _, b, _ in got} == {1, 2, 3}
    # Sentinels reached the hub as errors, never as values.
    flagged = [m for m in collector.messages if "errors" in m]
    assert flagged and all(k not in m["values"] for m in flagged for k in m["errors"])  # type: ignore[operator]

    def rejects() -> Counter[str]:
        counts: Counter[str] = Counter()
        for port in collector.status("bridge/test-bridge").get("ports", {}).values():  # type: ignore[attr-defined]
            counts.update(port["rejects"])
        return counts

    wait_for(lambda: sum(rejects().values()) >= 40, 10, "bridge status with the rejects")
    rejects = rejects()  # type: ignore[assignment]
    COUNTS.append(f"[faults] rejected lines by reason: {dict(rejects)}")  # type: ignore[call-overload]
    assert rejects["crc_mismatch"] > 0 and rejects["truncated"] > 0 and rejects["noise"] > 0
    assert collector.status("node/n1/status")["fw"] == "1.4.2-sim"
    bridge.kill(signal.SIGTERM)


def test_bridge_sigkill_and_restart(
    running_broker: Broker,
    collector: Collector,
    garden: str,
    sim_factory,
    bridge_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Two kills: one mid-stream with the broker up, one with readings spooled
    while the broker is down (they must all come out of the spool)."""
    sim = sim_factory(nodes=3, count=600, rate=40.0, faults=Faults())
    bridge = start_bridge(sim, running_broker, tmp_path, bridge_factory, garden)
    sim.start()
    wait_for(lambda: len(collector.keys()) > 150, 20, "the stream to flow")
    bridge.kill(signal.SIGKILL)
    time.sleep(2.0)
    bridge.start()
    wait_for(lambda: len(collector.keys()) > 600, 20, "the stream to flow again")
    running_broker.stop(signal.SIGTERM)
    time.sleep(3.0)  # readings go to the spool only
    bridge.kill(signal.SIGKILL)
    running_broker.start()
    bridge.start()
    sim.join(60)
    produced = sim.keys()
    wait_for(lambda: len(set(collector.keys())) >= len(produced), 30, "the spool to drain")
    time.sleep(1.0)
    got = collector.keys()
    lost, dup = report("sigkill", produced, got)
    assert lost == 0
    # A SIGKILL between a PUBACK and the spool's delete sends those readings
    # again: at most a publish window's worth, and byte for byte the same
    # (same ts, node, boot and seq), so the hub's write overwrites itself.
    assert dup <= 2 * 200
    assert_replays_are_identical(collector)
    # After each kill the nodes sent again what the bridge had not confirmed
    # stored (GR); the bridge dropped what its spool already had.
    wait_for(lambda: collector.status("bridge/test-bridge").get("counters"), 10, "bridge status")
    counters = collector.status("bridge/test-bridge")["counters"]
    COUNTS.append(f"[sigkill] node replays already stored, dropped: {counters.get('replays_already_stored', 0)}")  # type: ignore[union-attr]
    assert counters.get("replays_already_stored", 0) > 0  # type: ignore[union-attr]
    assert_seq_continuity(got, produced)
    bridge.kill(signal.SIGTERM)
