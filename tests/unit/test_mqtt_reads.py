"""The hub's buffered MQTT reads (garden/mqtt_reads.py) over a real socket pair."""

from __future__ import annotations

import socket

import pytest

from garden.mqtt_reads import BufferedSocket


def test_small_reads_come_from_one_large_read_in_order() -> None:
    a, b = socket.socketpair()
    try:
        data = bytes(range(256)) * 40  # 10,240 bytes: many MQTT packets' worth
        a.sendall(data)
        sock = BufferedSocket(b)
        got = b""
        sizes = [1, 1, 2, 300, 1, 5000, 7]
        for size in sizes:
            part = sock.recv(size)
            assert 0 < len(part) <= size
            got += part
        assert sock.pending() == len(data) - len(got)  # what it holds, said to paho's select check
        while sock.pending():
            got += sock.recv(4096)
        assert got == data
    finally:
        a.close()
        b.close()


def test_no_data_and_a_closed_peer_are_passed_on() -> None:
    a, b = socket.socketpair()
    b.setblocking(False)
    sock = BufferedSocket(b)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # paho's "nothing yet"
        assert sock.pending() == 0
        a.sendall(b"xy")
        assert sock.recv(1) == b"x"
        a.close()
        assert sock.recv(5) == b"y"
        assert sock.recv(5) == b""  # the peer closed: never buffered
        assert sock.fileno() == b.fileno()  # everything else is the socket's
    finally:
        b.close()
