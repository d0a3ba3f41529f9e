"""Fault injectors shared by tests/faults and benchmarks/soak.

- :class:`LinkProxy`: a TCP proxy between a client and the broker that a test can
  cut and restore, as a garden's Wi-Fi link dies: open connections stay open and
  every byte is silently dropped, new connections hang. Only keepalives notice.
- :func:`proc_stats`: RSS, open file descriptors and threads of a process, from /proc.
- :data:`PRODUCTION_QUEUES`: the offline-queue settings of our Mosquitto configs,
  read from deploy/mosquitto/mosquitto.conf, so the tests hold the configs to them.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def production_queue_settings() -> str:
    """The broker's queue and inflight lines from the compose config, verbatim."""
    text = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    keep = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "queue_qos0_messages",
            "persistent_client_expiration", "max_packet_size")  # fmt: skip
    lines = [line for line in text.splitlines() if line.split(" ")[0] in keep]
    assert len(lines) == len(keep), f"deploy/mosquitto/mosquitto.conf lacks one of {keep}"
    return "\n".join(lines) + "\n"


PRODUCTION_QUEUES = production_queue_settings()


class LinkProxy:
    """127.0.0.1:<port> forwards to 127.0.0.1:<upstream>, until :meth:`cut`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.connections = 0  # accepted while the link was up
        self.held = 0  # accepted while cut: they hang until restore
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """From now on every byte is dropped, both ways; nothing is closed."""
        self._cut.set()

    def restore(self) -> None:
        """The link is back, and the old connections are gone (as a NAT forgets them)."""
        with self._lock:
            old, self._sockets = self._sockets, set()
        for s in old:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.restore()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.add(client)
            if self._cut.is_set():
                self.held += 1  # a SYN answered by nobody upstream: it hangs
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()  # the broker itself is down: refused, as a real link would be
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.add(upstream)
            self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._cut.is_set():
                    continue  # into the void
                dst.sendall(data)
        except OSError:
            pass
        if self._cut.is_set():
            # A close on the far side of a dead link never arrives: the client must
            # find out by its own keepalive. Its socket stays open until restore().
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RDWR)
            return
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(s)
            s.close()


@dataclass(frozen=True, slots=True)
class ProcStats:
    rss_kb: int
    fds: int
    threads: int


def proc_stats(pid: int) -> ProcStats:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert rss is not None
    return ProcStats(int(rss.group(1)), len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task")))
