"""Put simulated nodes on virtual serial ports (pty pairs) and run them.

Each node gets a pty pair and a stable symlink ``<dir>/<node_id>`` to the
slave side, as ``/dev/serial/by-id`` gives a real adapter. Point the bridge
at the symlinks.

The simulated node behaves like a board with native USB (an ESP32-S3 or a
SAMD21): it knows whether the host has the port open (on a pty: the master
sees POLLHUP while no one has the slave open) and holds its lines in a
bounded buffer until the host is back, as ``if (Serial)`` lets real
firmware do. Lines the host had not read when it closed the port are lost
in the kernel's buffer, as on real hardware.

Simulated time runs ``speed`` times faster than wall time; one reading per
``interval_s`` of simulated time.

The ledger names readings as the host does, ``(node, boot, seq)``, where
``boot`` counts the boots the host can know of: a boot gets the next number
when its first line reaches the port intact (its hello, normally), and gives
it back if an unplug takes all its lines unread. A node that powers up on a
port the host never opens sends nothing, so the host cannot count that boot;
the node's own count is kept as ``power_on``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import select
import struct
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from firmware_bridge.simulator.node import Emission, SimNode

log = logging.getLogger(__name__)

HOLD_LINES = 2000  # what a node buffers while the host is away
SETTLE_S = 0.3  # wait after the host opens the port: pyserial flushes input on open


class PtyPort:
    """A pty pair whose slave side is reached through a stable symlink."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master, slave = pty.openpty()
        self.device = os.ttyname(slave)
        tty.setraw(slave)  # no echo, no CR/LF translation
        os.close(slave)  # the host opens it; POLLHUP on the master says when it is away
        os.set_blocking(self.master, False)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(self.device, tmp)
        os.replace(tmp, link)

    def host_present(self) -> bool:
        poller = select.poll()
        poller.register(self.master, select.POLLIN | select.POLLHUP)
        return not any(ev & select.POLLHUP for _, ev in poller.poll(0))

    def unread(self) -> int:
        """Bytes written to the port that the host has not read yet."""
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return 0
        try:
            return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.link.is_symlink() and os.readlink(self.link) == self.device:
            self.link.unlink(missing_ok=True)
        os.close(self.master)


@dataclass(frozen=True, slots=True)
class Written:
    """A line written to the port, kept to tell what an unplug took with it."""

    reading: tuple[int, int] | None  # (power-on, seq), if it was a reading written whole
    size: int
    opened_boot: int | None = None  # the power-on this line made known to the host


@dataclass
class NodeRunner:
    node: SimNode
    port: PtyPort | None = None
    held: deque[Emission] = field(default_factory=lambda: deque(maxlen=HOLD_LINES))
    recent: deque[Written] = field(default_factory=lambda: deque(maxlen=64))  # newest last
    # The node's power-ons the host can know of, numbered as the host numbers them.
    host_boots: dict[int, int] = field(default_factory=dict)
    next_tick: float = 0.0
    host_since: float | None = None
    unplugged_until: float = 0.0
    next_unplug: float = 0.0
    booted: bool = False
    done: bool = False


class Simulation:
    """Runs nodes until stopped, or until each has produced ``count`` readings."""

    def __init__(
        self,
        nodes: list[SimNode],
        directory: Path,
        *,
        speed: float = 1.0,
        count: int = 0,
        ledger: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.directory = directory
        self.speed = speed
        self.count = count
        self.ledger = ledger
        self.clock = clock
        self.stop_event = threading.Event()
        self.runners = [NodeRunner(n) for n in nodes]
        self.written = 0
        self.held_dropped = 0
        self.unplug_lost = 0

    def links(self) -> list[Path]:
        return [self.directory / r.node.node_id for r in self.runners]

    def open_ports(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        for runner in self.runners:
            runner.port = PtyPort(self.directory / runner.node.node_id)
            runner.next_tick = now + runner.node.interval_s / self.speed
            if runner.node.faults.unplug_every:
                runner.next_unplug = now + runner.node.faults.unplug_every

    def run(self) -> None:
        if not any(r.port for r in self.runners):
            self.open_ports()
        try:
            while not self.stop_event.is_set():
                if self.count and all(r.done and not r.held for r in self.runners):
                    self._linger(5.0)
                    break
                self._turn()
        finally:
            self.close()

    def _linger(self, timeout: float) -> None:
        """Before closing, let the host read what was written: closing a pty
        throws away what is still in its buffer, as unplugging a board would."""
        end = self.clock() + timeout
        quiet = 0
        while self.clock() < end and not self.stop_event.is_set() and quiet < 3:
            # The kernel moves written bytes into the tty's queue a moment
            # later, so an empty queue counts only when seen three times.
            self.stop_event.wait(0.03)
            busy = any(r.port and r.port.host_present() and r.port.unread() for r in self.runners)
            quiet = 0 if busy else quiet + 1

    def close(self) -> None:
        for runner in self.runners:
            if runner.port is not None:
                runner.port.close()
                runner.port = None
        if self.ledger is not None:
            self.ledger.flush()

    # -------------------------------------------------------------- a turn

    def _turn(self) -> None:
        now = self.clock()
        wake = now + 0.05
        for r in self.runners:
            self._unplug_schedule(r, now)
            if r.port is None:
                wake = min(wake, r.unplugged_until)
                continue
            if not r.booted:
                # Power on before anything else: a board replugged into a host
                # that is already waiting has nothing from before to replay.
                r.booted = True
                self._emit(r, [r.node.boot()], now)
            present = r.port.host_present()
            if present and r.host_since is None:
                r.host_since = now
                # The host is back: first what it may have missed, oldest first.
                r.held.extendleft(reversed(r.node.replays()))
            elif not present:
                r.host_since = None
            if not r.done and now >= r.next_tick:
                self._emit(r, r.node.tick(), now)
                r.next_tick += r.node.interval_s / self.speed
                if r.next_tick < now:  # fell behind: don't burst to catch up
                    r.next_tick = now
                if self.count and r.node.readings >= self.count:
                    r.done = True
            self._flush(r, now)
            if present:
                self._read_commands(r, now)
            wake = min(wake, r.next_tick)
        delay = wake - self.clock()
        if delay > 0:
            self.stop_event.wait(min(delay, 0.05))

    def _unplug_schedule(self, r: NodeRunner, now: float) -> None:
        faults = r.node.faults
        if not faults.unplug_every:
            return
        if r.port is not None and now >= r.next_unplug:
            log.info("node %s: port vanishes for %.1fs", r.node.node_id, faults.unplug_for)
            time.sleep(0.05)  # let the kernel queue what was just written, then count it
            self._lost_in_port(r, r.port.unread())
            r.port.close()
            r.port = None
            r.host_since = None
            r.held.clear()
            r.unplugged_until = now + faults.unplug_for
        elif r.port is None and r.unplugged_until and now >= r.unplugged_until:
            # Plugged back in: USB powers the board up again, under a new tty name.
            r.port = PtyPort(self.directory / r.node.node_id)
            r.unplugged_until = 0.0
            r.next_unplug = now + faults.unplug_every
            r.next_tick = now + r.node.interval_s / self.speed
            r.booted = False
            log.info("node %s: port back as %s", r.node.node_id, r.port.device)

    def _lost_in_port(self, r: NodeRunner, unread: int) -> None:
        """Lines the host had not read when the port vanished are gone with it:
        retract their readings from the ledger, and the number of a boot none
        of whose lines the host read."""
        while unread > 0 and r.recent:
            line = r.recent.pop()
            unread -= line.size
            if line.reading is not None:
                self.unplug_lost += 1
                self._record(r, line.reading, lost="unplugged")
            if line.opened_boot is not None:
                # Newest first, so every later line of this boot went before it:
                # the host never heard of the boot, and will give its number to the next.
                del r.host_boots[line.opened_boot]

    def _host_learns(self, r: NodeRunner, emission: Emission) -> int | None:
        """The power-on this intact line makes known to the host, if it is the first to."""
        power_on = emission.hello
        if power_on is None and emission.reading is not None:
            power_on = emission.reading[0]
        if power_on is None or power_on in r.host_boots:
            return None
        r.host_boots[power_on] = len(r.host_boots) + 1
        return power_on

    def _record(self, r: NodeRunner, reading: tuple[int, int], lost: str | None = None) -> None:
        if self.ledger is None:
            return
        entry: dict[str, object] = {
            "node": r.node.node_id,
            "boot": r.host_boots[reading[0]],
            "seq": reading[1],
            "power_on": reading[0],
            "t": time.time(),
        }
        if lost:
            entry["lost"] = lost
        self.ledger.write(json.dumps(entry) + "\n")

    def _emit(self, r: NodeRunner, emissions: list[Emission], now: float) -> None:
        for emission in emissions:
            if len(r.held) == r.held.maxlen and r.held[0].reading is not None:
                self.held_dropped += 1
            r.held.append(emission)

    def _flush(self, r: NodeRunner, now: float) -> None:
        port = r.port
        if port is None or r.host_since is None or now - r.host_since < SETTLE_S:
            return
        while r.held:
            emission = r.held[0]
            try:
                written = os.write(port.master, emission.data)
            except BlockingIOError:
                return  # the host is slow: keep the rest
            except OSError:
                r.host_since = None
                return
            r.held.popleft()
            r.node.sent(emission)
            if written < len(emission.data):
                # Half a line went out: the rest is lost, as when a UART's
                # buffer overruns. It is not counted as a reading.
                r.recent.append(Written(None, written))
                continue
            r.recent.append(Written(emission.reading, written, self._host_learns(r, emission)))
            if emission.reading is not None:
                self.written += 1
                self._record(r, emission.reading)

    def _read_commands(self, r: NodeRunner, now: float) -> None:
        assert r.port is not None
        try:
            data = os.read(r.port.master, 4096)
        except (BlockingIOError, OSError):
            return
        if data:
            for reply in r.node.receive(data):
                r.held.append(reply)
