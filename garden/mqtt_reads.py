"""Batched socket reads for the hub's MQTT client: the stream arrives in one recv, not four.

paho-mqtt reads one packet per turn of its network loop, and each packet with
several ``recv`` calls (the fixed header's first byte, the length bytes one at a
time, then the rest), with a ``select`` before every packet. At a backlog's
thousands of messages a second, those system calls and the loop around them were
the biggest single cost in the hub's paho thread (a py-spy profile of
``benchmarks/bench_ingest.py``: ``select`` and ``recv`` about 30 % of it).

:class:`BufferedSocket` answers paho's small ``recv`` calls from one 64 KiB read,
and tells paho what it holds through ``pending()``, the method paho already asks
of TLS sockets, so paho never waits in ``select`` for bytes that are already here.
:class:`BatchReadClient` then reads every packet that is already buffered in one
turn of the loop. Nothing else changes: the same bytes reach the same parser, and
writes go straight to the socket. paho remains the MQTT implementation.

The hooks are paho's ``_create_socket`` (private) and ``loop_read`` (public). If a
paho release lacks the first, the client simply reads as paho does.
"""

from __future__ import annotations

import socket
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

READ_SIZE = 65536
MAX_PACKETS_PER_TURN = 1000  # then paho's loop runs again (writes, keepalive)


class BufferedSocket:
    """A socket (plain or TLS) whose ``recv`` is served from a buffer filled by one large read."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        if self._at >= len(self._buffer):
            data = self._sock.recv(READ_SIZE)  # BlockingIOError, SSLWantReadError: as paho expects
            if len(data) <= size:
                return bytes(data)  # b"" is the peer closing: passed on, never kept
            self._buffer, self._at = data, 0
        start = self._at
        self._at = min(start + size, len(self._buffer))
        return self._buffer[start : self._at]

    def pending(self) -> int:
        """Bytes already read and not yet handed out (and what TLS holds decrypted)."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._at + inner

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, setsockopt, ...
        return getattr(self._sock, name)


class BatchReadClient(mqtt.Client):
    """A paho client that reads through :class:`BufferedSocket`, every buffered packet per loop turn."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if isinstance(sock, socket.socket):  # plain TCP, or TLS (ssl.SSLSocket is one); not websockets
            return BufferedSocket(sock)
        return sock

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(MAX_PACKETS_PER_TURN):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not isinstance(sock, BufferedSocket) or not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc
