"""The node simulator: deterministic, physical, and faulty on request."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from firmware_bridge.line_protocol import (
    DataFrame,
    FrameDecoder,
    HelloFrame,
    Reject,
    encode_command,
    encode_stored,
    parse_line,
)
from firmware_bridge.sequencing import Step, advance
from firmware_bridge.simulator import physics
from firmware_bridge.simulator.node import Faults, SimNode
from firmware_bridge.simulator.pty_runner import Simulation


def lines(node: SimNode, n: int) -> bytes:
    out = node.boot().data
    for _ in range(n):
        out += b"".join(e.data for e in node.tick())
    return out


def test_same_seed_same_bytes() -> None:
    assert lines(SimNode("a", seed=3), 50) == lines(SimNode("a", seed=3), 50)
    assert lines(SimNode("a", seed=3), 50) != lines(SimNode("a", seed=4), 50)


def test_drydown_is_faster_by_day() -> None:
    p = physics.BedParams(water_at_vwc=0.0)
    night = physics.BedState(t_s=0.0, theta=28.0, tank_l=500.0)  # midnight
    noon = physics.BedState(t_s=12 * 3600.0, theta=28.0, tank_l=500.0)
    night_loss = 28.0 - physics.advance(p, night, 3600).theta
    day_loss = 28.0 - physics.advance(p, noon, 3600).theta
    assert day_loss > 3 * night_loss > 0


def test_watering_steps_up_drains_and_empties_the_tank() -> None:
    p = physics.BedParams()
    s = physics.BedState(t_s=12 * 3600.0, theta=p.water_at_vwc + 0.01, tank_l=500.0)
    after = physics.advance(p, s, 600)
    assert after.waterings == 1
    assert after.tank_l == 500.0 - p.watering_litres
    assert after.theta > s.theta + 5  # 40 l on 2 m2 is 20 mm: +6.7 % in 300 mm
    later = physics.advance(p, after, 6 * 3600)
    assert later.theta < after.theta


def test_warm_soil_reads_fewer_counts() -> None:
    p = physics.BedParams()
    assert physics.probe_counts(p, 25.0, 30.0) < physics.probe_counts(p, 25.0, 10.0)


def test_faults_turn_into_rejects_not_readings() -> None:
    node = SimNode("a", seed=1, faults=Faults(partial=0.1, bad_crc=0.1, noise=0.1))
    decoder = FrameDecoder()
    produced, got, rejects = set(), set(), 0
    decoder_out = list(decoder.feed(node.boot().data))
    for _ in range(500):
        for emission in node.tick():
            if emission.reading:
                produced.add(emission.reading[1])
            decoder_out += list(decoder.feed(emission.data))
    for item in decoder_out:
        if isinstance(item, DataFrame):
            got.add(item.seq)
        elif isinstance(item, Reject):
            rejects += 1
    assert got == produced
    assert 500 - len(produced) > 50 and rejects > 50
    assert isinstance(next(i for i in decoder_out if not isinstance(i, Reject)), HelloFrame)


def test_stuck_sensor_and_reboot() -> None:
    node = SimNode("a", faults=Faults(stuck_after=5, reboot_every=10, boot_garbage=False))
    node.boot()
    raws, seqs = [], []
    for _ in range(12):
        for e in node.tick():
            frame = parse_line(e.data.split(b"\n")[-2] + b"\n")
            if isinstance(frame, DataFrame):
                raws.append(frame.values["sm0"])
                seqs.append(frame.seq)
    assert len(set(raws[6:])) == 1
    assert seqs == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2]


def test_node_applies_and_acks_set_interval() -> None:
    node = SimNode("a", interval_s=300)
    [ack] = node.receive(encode_command("a", 9, "SET", {"interval_s": "600"}))
    assert ack.data.startswith(b"$GA,a,9,OK*")
    assert node.interval_s == 600
    [nak] = node.receive(encode_command("a", 10, "SET", {"interval_s": "0"}))
    assert b"ERR,bad_value" in nak.data
    assert node.receive(encode_command("b", 11, "SET", {"interval_s": "60"})) == []


def test_store_and_forward_replays_only_what_the_host_has_not_stored() -> None:
    node = SimNode("a", faults=Faults(boot_garbage=False))
    node.sent(node.boot())
    for _ in range(5):
        for emission in node.tick():
            node.sent(emission)
    node.receive(encode_stored("a", 3))
    replays = [parse_line(e.data) for e in node.replays()]
    assert [(f.seq, f.replay) for f in replays if isinstance(f, DataFrame)] == [(4, True), (5, True)]
    node.receive(encode_stored("b", 5))  # another node's GK changes nothing
    assert len(node.replays()) == 2
    node.boot()
    assert node.replays() == []  # a reboot forgets


def test_replays_are_dropped_when_stored_and_kept_when_new() -> None:
    s = advance(None, 5, hello=False)
    assert advance(s.state, 5, hello=False, replay=True).step is Step.REPLAYED
    assert advance(s.state, 3, hello=False, replay=True).step is Step.REPLAYED
    assert advance(s.state, 6, hello=False, replay=True).step is Step.NEXT


class HostClock:
    """Simulated wall time for driving a :class:`Simulation` turn by turn."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_until(sim: Simulation, clock: HostClock, until: float) -> None:
    sim.stop_event.set()  # so a turn never waits in real time: the test drives the clock
    while clock.now < until:
        sim._turn()
        clock.now = round(clock.now + 0.05, 2)


def host_reads(fd: int) -> list[tuple[int, int]]:
    """What a bridge that numbers boots from the lines it reads would name them."""
    state, names = None, []
    decoder = FrameDecoder()
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 4096):
            data += chunk
    for frame in decoder.feed(data):
        if isinstance(frame, HelloFrame | DataFrame):
            sequenced = advance(state, frame.seq, hello=isinstance(frame, HelloFrame))
            state = sequenced.state
            if isinstance(frame, DataFrame):
                names.append((state.boot, frame.seq))
    return names


def ledger_names(ledger: io.StringIO) -> list[tuple[int, int]]:
    names: list[tuple[int, int]] = []
    for entry in map(json.loads, ledger.getvalue().splitlines()):
        name = (entry["boot"], entry["seq"])
        if entry.get("lost"):
            names.remove(name)
        else:
            names.append(name)
    return names


def test_ledger_numbers_only_the_boots_the_host_can_see(tmp_path: Path) -> None:
    """The bridge numbers the boots it hears of. A node that powers up on a
    port the host never opens (a slow start, a long reconnect backoff) sends
    nothing, so that boot must not take a number in the ledger either: it did,
    and every later reading had a name one boot off the bridge's."""
    clock, ledger = HostClock(), io.StringIO()
    node = SimNode("n1", interval_s=1, faults=Faults(boot_garbage=False, unplug_every=3.0, unplug_for=1.0))
    sim = Simulation([node], tmp_path, speed=20.0, ledger=ledger, clock=clock)
    sim.open_ports()
    link = sim.links()[0]
    try:
        run_until(sim, clock, 4.5)  # power-on 1: the host never opens the port; replug at 4.0
        assert node.boot_no == 2 and ledger.getvalue() == ""
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            run_until(sim, clock, 6.0)
            got = host_reads(fd)
        finally:
            os.close(fd)
        assert got and {boot for boot, _ in got} == {1}
        assert ledger_names(ledger) == got
        assert {e["power_on"] for e in map(json.loads, ledger.getvalue().splitlines())} == {2}
    finally:
        sim.close()


def test_a_boot_the_unplug_took_unread_gives_its_number_back(tmp_path: Path) -> None:
    clock, ledger = HostClock(), io.StringIO()
    node = SimNode("n1", interval_s=1, faults=Faults(boot_garbage=False))
    sim = Simulation([node], tmp_path, speed=20.0, ledger=ledger, clock=clock)
    sim.open_ports()
    runner = sim.runners[0]
    fd = os.open(sim.links()[0], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        run_until(sim, clock, 1.0)
        assert runner.host_boots == {1: 1}
        sim._lost_in_port(runner, sum(line.size for line in runner.recent))  # none of it was read
        assert runner.host_boots == {} and ledger_names(ledger) == []
        runner.held.append(node.boot())  # power-on 2 reaches the host: it is the host's boot 1
        run_until(sim, clock, 1.5)
        assert runner.host_boots == {2: 1}
        assert ledger_names(ledger) and {boot for boot, _ in ledger_names(ledger)} == {1}
    finally:
        os.close(fd)
        sim.close()
