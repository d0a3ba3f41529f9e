"""The soak's garden: simulated nodes on pty pairs, in a child process, with ports unplugged on request.

The child (``python -m benchmarks.soak.garden_sim``) runs the simulator's
:class:`Simulation` in a thread and writes its ledger, line-buffered, for
the parent to read as it grows. Each node's first reading is offset at
random within its interval, so the nodes do not all report in the same
instant.

Unplugs are driven, not periodic, so that the parent decides when, and no
other fault runs at the same time: every node has ``unplug_every`` set to
:data:`NEVER`, and an ``unplug`` command sets the chosen nodes' next unplug
to now and their ``unplug_for`` to the length asked. The simulator then does
what it does for its own unplug faults: the port (symlink and pty) goes, the
ledger takes back what the bridge had not read, and after ``unplug_for`` the
node powers up again on a new pty behind the same symlink.

The parent talks to the child in JSON lines: commands on its stdin
(``{"cmd": "unplug", "nodes": [...], "for_s": 30}``, ``{"cmd": "stop"}``),
events on its stdout (``ready``, ``gone``, ``back``, ``stopped``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_harness import BenchError
from benchmarks.soak.servers import end_group, spawn

NEVER = 1e9  # unplug_every: seconds, so never within a soak
LINGER_S = 30.0  # at stop, how long the nodes wait for the bridge to read what was written


def node_ids(count: int) -> list[str]:
    return [f"bed-{i:02d}" for i in range(1, count + 1)]


# ------------------------------------------------------------------- child


_SAY_LOCK = threading.Lock()


def say(**event: Any) -> None:
    with _SAY_LOCK:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def child_main(argv: list[str] | None = None) -> int:
    from firmware_bridge.simulator.node import Faults, SimNode
    from firmware_bridge.simulator.pty_runner import Simulation

    parser = argparse.ArgumentParser(description="The soak's simulated garden (started by benchmarks.soak)")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--interval", type=int, required=True)
    parser.add_argument("--speed", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)

    ledger = args.ledger.open("w", buffering=1)  # whole lines, as they are written
    nodes = [
        SimNode(node, seed=args.seed, interval_s=args.interval, faults=Faults(unplug_every=NEVER))
        for node in node_ids(args.nodes)
    ]
    sim = Simulation(nodes, args.dir, speed=args.speed, ledger=ledger)
    sim.open_ports()
    rng = random.Random(f"{args.seed}:offsets")
    now = time.monotonic()
    period = args.interval / args.speed
    for runner in sim.runners:
        runner.next_tick = now + rng.uniform(0.0, period)
    runners = {r.node.node_id: r for r in sim.runners}
    thread = threading.Thread(target=sim.run, name="simulation", daemon=True)
    thread.start()
    threading.Thread(target=_watch_ports, args=(sim, thread), name="watch-ports", daemon=True).start()
    say(event="ready", links=[str(p) for p in sim.links()], t=time.time())

    for line in sys.stdin:
        try:
            command = json.loads(line)
        except ValueError:
            continue
        if command.get("cmd") == "unplug":
            for node in command["nodes"]:
                r = runners[node]
                r.node.faults = dataclasses.replace(r.node.faults, unplug_for=float(command["for_s"]))
                r.next_unplug = 0.0  # due now: the simulator's own unplug does the rest
        elif command.get("cmd") == "stop":
            break
    # Stop: no more readings, and let the bridge read what was written before
    # the ports close (closing a pty throws away what is in it). With a count
    # set and every node done, the simulator lingers until the ports are read.
    for r in sim.runners:
        r.done = True
    sim.count = 1
    thread.join(LINGER_S)
    if thread.is_alive():
        sim.stop_event.set()
        thread.join(10)
    ledger.close()
    say(event="stopped", written=sim.written, unplug_lost=sim.unplug_lost, held_dropped=sim.held_dropped, t=time.time())
    return 0


def _watch_ports(sim: Any, thread: threading.Thread) -> None:
    """Tell the parent when a node's port goes and when it is back, and as which device."""
    devices: dict[str, str | None] = {r.node.node_id: r.port.device if r.port else None for r in sim.runners}
    while thread.is_alive():
        for r in sim.runners:
            port = r.port
            device = port.device if port is not None else None
            node = r.node.node_id
            if device != devices[node]:
                if device is None:
                    say(event="gone", node=node, device=devices[node], t=time.time())
                else:
                    say(event="back", node=node, device=device, t=time.time())
                devices[node] = device
        time.sleep(0.02)


# ------------------------------------------------------------------ parent


class GardenSim:
    """The child process, seen from the soak: its links, its events, its commands."""

    def __init__(self, workdir: Path, nodes: int, interval: int, speed: float, seed: int) -> None:
        self.ledger_path = workdir / "ledger.jsonl"
        self.events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        cmd = [sys.executable, "-m", "benchmarks.soak.garden_sim", "--dir", str(workdir / "ports"),
               "--ledger", str(self.ledger_path), "--nodes", str(nodes), "--interval", str(interval),
               "--speed", str(speed), "--seed", str(seed)]  # fmt: skip
        self.proc = spawn(
            cmd,
            workdir / "garden_sim.log",
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        threading.Thread(target=self._read, name="garden-sim-events", daemon=True).start()
        ready = self.wait_event("ready", 30)
        self.links: list[str] = list(ready["links"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put({"event": "exit"})

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """The next event called ``name``; others met on the way are dropped."""
        end = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"the simulated garden: no {name!r} in {timeout:g} s") from None
            if event["event"] == name:
                return event
            if event["event"] == "exit":
                raise BenchError("the simulated garden exited; see garden_sim.log")

    def poll_events(self) -> list[dict[str, Any]]:
        """The events that came since the last call, without waiting."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def unplug(self, nodes: list[str], for_s: float) -> None:
        self.send(cmd="unplug", nodes=nodes, for_s=for_s)

    def stop(self) -> dict[str, Any]:
        """No more readings; the ports close once the bridge has read them. The child's totals."""
        self.send(cmd="stop")
        return self.wait_event("stopped", LINGER_S + 20)

    def end(self) -> None:
        end_group(self.proc, timeout=10)


if __name__ == "__main__":
    sys.exit(child_main())
