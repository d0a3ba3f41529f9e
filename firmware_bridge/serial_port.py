"""The serial adapter: one reader thread per port, chunked reads, reopen on unplug.

The port is opened exclusively (``flock``), by the path given: a
``/dev/serial/by-id/...`` link survives a replug that gives the adapter a
new ``ttyUSB`` number. Reads take whatever the port has (``in_waiting``) and
hand it to a :class:`FrameDecoder`; pyserial's ``readline()`` reads byte by
byte and costs hundreds of times more CPU per line.

Results go to the caller's ``sink`` as :class:`PortChunk` and
:class:`PortState` values, from the reader thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial

from firmware_bridge.backoff import Backoff
from firmware_bridge.errors import PortError
from firmware_bridge.line_protocol import Frame, FrameDecoder, Reject

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2
WRITE_TIMEOUT_S = 0.5


class _KeepInputSerial(serial.Serial):  # type: ignore[misc]
    """pyserial flushes the input queue when it opens a port. We keep it: the
    lines a node sent while the bridge was restarting are readings, and the
    decoder copes with any half line at the front."""

    def _reset_input_buffer(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class PortChunk:
    """What one read of a port decoded to, with the time it was read."""

    port: str
    items: tuple[Frame | Reject, ...]
    received_ms: int


@dataclass(frozen=True, slots=True)
class PortState:
    """The port was opened (``open=True``, with the device it resolved to) or lost."""

    port: str
    open: bool
    device: str = ""
    problem: str = ""


PortEvent = PortChunk | PortState


class PortReader:
    """Reads one port in its own thread until :meth:`stop`; reopens it after loss."""

    def __init__(
        self,
        port: str,
        sink: Callable[[PortEvent], None],
        *,
        baudrate: int = 115200,
        backoff: Backoff | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.port = port
        self._sink = sink
        self._baudrate = baudrate
        # Capped at 2 s: a port that comes back is read again within 2 s (the promise is 5 s).
        self._backoff = backoff or Backoff(base=0.2, cap=2.0)
        self._clock_ms = clock_ms
        self._stop = threading.Event()
        self._serial: serial.Serial | None = None
        self._write_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"port:{port}", daemon=True)
        self.opens = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def write(self, data: bytes) -> None:
        """Send bytes to the node (a command frame). Raises PortError if closed."""
        with self._write_lock:
            ser = self._serial
            if ser is None:
                raise PortError(self.port, "not open")
            try:
                ser.write(data)
            except (serial.SerialException, OSError) as err:
                raise PortError(self.port, f"write failed: {err}") from err

    # ------------------------------------------------------------ thread

    def _run(self) -> None:
        was_lost = False
        while not self._stop.is_set():
            try:
                ser = _KeepInputSerial(
                    self.port,
                    self._baudrate,
                    timeout=READ_TIMEOUT_S,
                    # A node that stops reading must not block the bridge's loop,
                    # which writes GK and SET frames.
                    write_timeout=WRITE_TIMEOUT_S,
                    exclusive=True,
                )
            except (serial.SerialException, OSError, ValueError) as err:
                if not was_lost:
                    log.warning("port %s unavailable: %s", self.port, err)
                    self._sink(PortState(self.port, False, problem=str(err)))
                    was_lost = True
                self._stop.wait(self._backoff.next_delay())
                continue
            device = os.path.realpath(self.port)
            self.opens += 1
            self._backoff.reset()
            was_lost = False
            log.info("port %s open (%s)", self.port, device)
            with self._write_lock:
                self._serial = ser
            self._sink(PortState(self.port, True, device=device))
            problem = self._read_until_lost(ser)
            with self._write_lock:
                self._serial = None
            with contextlib.suppress(serial.SerialException, OSError):
                ser.close()
            if problem is not None:
                log.warning("port %s lost: %s", self.port, problem)
                self._sink(PortState(self.port, False, device=device, problem=problem))
                was_lost = True
                self._stop.wait(self._backoff.next_delay())

    def _read_until_lost(self, ser: serial.Serial) -> str | None:
        decoder = FrameDecoder()
        try:
            while not self._stop.is_set():
                waiting = ser.in_waiting
                data = ser.read(waiting if waiting else 1)
                if not data:
                    continue
                if not waiting:
                    more = ser.in_waiting
                    if more:
                        data += ser.read(more)
                items = tuple(decoder.feed(data))
                if items:
                    self._sink(PortChunk(self.port, items, self._clock_ms()))
        except (serial.SerialException, OSError) as err:
            leftover = tuple(decoder.flush())
            if leftover:
                self._sink(PortChunk(self.port, leftover, self._clock_ms()))
            return str(err) or type(err).__name__
        return None
