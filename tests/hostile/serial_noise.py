"""Hostile serial input, and an oracle for what the decoder may make of it.

Shared by the hypothesis properties, the seeded fuzz run and the atheris harness
(tests/hostile/atheris_serial.py). Nothing here uses the parser's own CRC or
framing code: :func:`crc16` is written from docs/protocol.md, and
:func:`signed_bodies` finds the lines a correct decoder is allowed to turn into
frames by its own scan of the bytes.
"""

from __future__ import annotations

import binascii
import contextlib
import random
import re
from collections.abc import Iterator

from firmware_bridge.line_protocol import (
    MAX_LINE,
    AckFrame,
    CommandFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    HelloFrame,
    ProtocolError,
    Reject,
    RejectReason,
    SensorError,
    StoredFrame,
    encode,
    parse_body,
)

# ------------------------------------------------------------------ the CRC


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE bit by bit, as docs/protocol.md defines it: poly 0x1021,
    init 0xFFFF, no reflection, no final XOR. Deliberately not the parser's table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def crc16(data: bytes) -> int:
    """The same CRC from the standard library's C code (binascii's CRC-CCITT, poly
    0x1021, unreflected, started at 0xFFFF): fast enough for the volumes here."""
    return binascii.crc_hqx(data, 0xFFFF)


# The catalogue check value, and the two agree.
assert crc16_bitwise(b"123456789") == crc16(b"123456789") == 0x29B1
assert all(crc16_bitwise(bytes(range(n, 256))) == crc16(bytes(range(n, 256))) for n in range(0, 256, 17))


def sign(body: bytes, *, lower: bool = False, cr: bool = True) -> bytes:
    """A line with a correct CRC over ``body``, whatever ``body`` holds."""
    digits = f"{crc16(body):04x}" if lower else f"{crc16(body):04X}"
    return b"$" + body + b"*" + digits.encode() + (b"\r\n" if cr else b"\n")


# ---------------------------------------------------------------- the oracle

_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")


def signed_bodies(stream: bytes) -> list[Frame]:
    """Every frame some ``$<body>*<crc>`` in ``stream`` could stand for, in order.

    A body starts after a ``$`` and stops before the next ``$`` or line feed; it is
    a candidate at every ``*`` followed by four hex digits that are its CRC by
    :func:`crc16`. A correct decoder emits only frames from this list, in this
    order (it may emit fewer: too long, not ASCII, not at a line end).
    """
    out: list[Frame] = []
    start = stream.find(b"$")
    while start >= 0:
        end = len(stream)
        for stop in (stream.find(b"$", start + 1), stream.find(b"\n", start + 1)):
            if stop >= 0:
                end = min(end, stop)
        segment = stream[start + 1 : end]
        star = segment.find(b"*")
        while star >= 0:
            digits = segment[star + 1 : star + 5]
            if _HEX4.fullmatch(digits) and crc16(segment[:star]) == int(digits, 16):
                with contextlib.suppress(UnicodeDecodeError, ProtocolError):
                    out.append(parse_body(segment[:star].decode("ascii")))
            star = segment.find(b"*", star + 1)
        start = stream.find(b"$", start + 1)
    return out


def is_subsequence(items: list[Frame], of: list[Frame]) -> bool:
    it = iter(of)
    return all(any(item == candidate for candidate in it) for item in items)


def decode(chunks: list[bytes], *, flush: bool = True) -> list[Frame | Reject]:
    decoder = FrameDecoder()
    out: list[Frame | Reject] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    if flush:
        out.extend(decoder.flush())
    return out


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


def check_stream(chunks: list[bytes]) -> list[Frame | Reject]:
    """The decoder's promises on any input: it never raises, every result is a frame
    or a reject with a listed reason and at most MAX_LINE bytes of the line, and every
    frame stands for a correctly signed line of the input, in order."""
    results = decode(chunks)
    frames: list[Frame] = []
    for item in results:
        if isinstance(item, Reject):
            assert isinstance(item.reason, RejectReason), item
            assert len(item.line) <= MAX_LINE, item
        else:
            assert isinstance(item, DataFrame | HelloFrame | CommandFrame | AckFrame | StoredFrame), item
            frames.append(item)
    if frames:
        assert is_subsequence(frames, signed_bodies(b"".join(chunks))), frames
    return results


def check_recovery(garbage_chunks: list[bytes], line_chunks: list[bytes], frame: Frame) -> None:
    """After any garbage, the next valid line gives its frame exactly once, preceded by
    at most one reject (for whatever the garbage left open)."""
    decoder = FrameDecoder()
    for chunk in garbage_chunks:
        list(decoder.feed(chunk))
    after: list[Frame | Reject] = []
    for chunk in line_chunks:
        after.extend(decoder.feed(chunk))
    assert after and after[-1] == frame, after
    assert len(after) <= 2, after
    if len(after) == 2:
        assert isinstance(after[0], Reject), after


# --------------------------------------------------------------- the noise

# What boards print at power-on, often at another baud: the ESP8266 ROM (74880
# baud), the ESP32 ROM, an AVR bootloader's junk, a debug print with '$' and '*'.
BOOT_BANNERS = (
    b"\x00\xff\x00 ets Jan  8 2013,rst cause:2, boot mode:(3,6)\r\n\r\nload 0x4010f000, len 3584, room 16 \r\n"
    b"tail 0\r\nchksum 0xb0\r\ncsum 0xb0\r\nv2843a5ac\r\n~ld\r\n",
    b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
    b"configsip: 0, SPIWP:0xee\r\nclk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n"
    b"mode:DIO, clock div:1\r\nload:0x3fff0030,len:1344\r\nentry 0x400805f0\r\n",
    b"\xf0\xf0\xf0\x00\x00\x80\x80\xfe\xff\xff\x00\x80",
    b"debug: $GD totals *1234 not a frame\r\n$$$***\r\n",
    b"\r\n\r\n   \t\r\n",
    b"$GD,1,bed3-a,42,sm0=412*",  # a reboot mid-line: no end
)


def wrong_baud(data: bytes, ratio: float, rng: random.Random) -> bytes:
    """``data`` sent 8N1 and read by a UART whose bit time is ``ratio`` times the
    sender's (ratio = sender baud / receiver baud).

    The receiver waits for a falling edge, samples the middle of each of its own
    bit times and delivers the byte even on a framing error, as Linux does by
    default: the familiar 0x00/0xFF/0x80-heavy garbage of a wrong baud rate.
    """
    bits = bytearray([1] * rng.randint(0, 20))
    for byte in data:
        bits.append(0)
        bits.extend((byte >> i) & 1 for i in range(8))
        bits.append(1)
        bits.extend([1] * rng.choice((0, 0, 0, 1, 3)))
    bits.extend([1] * 24)
    n = len(bits)

    def level(t: float) -> int:
        i = int(t)
        return bits[i] if i < n else 1

    out = bytearray()
    t = 0.0
    while True:
        # Idle: the next falling edge, seen a sixteenth of a receiver bit late.
        edge = bits.find(0, int(t))
        if edge < 0:
            return bytes(out)
        t = max(t, edge + ratio / 16)
        byte = 0
        for i in range(8):
            byte |= level(t + ratio * (1.5 + i)) << i
        out.append(byte)
        t += ratio * 9.5
        if level(t) == 0:  # a framing error: wait for the line to go idle
            idle = bits.find(1, int(t))
            t = float(idle if idle >= 0 else n)


WRONG_BAUD_RATIOS = (74880 / 115200, 9600 / 115200, 57600 / 115200, 115200 / 9600, 115200 / 57600, 230400 / 115200)


def valid_line(rng: random.Random) -> tuple[bytes, Frame]:
    """A random valid line (any frame type, CRC in either case, ``\\r`` optional)."""
    node = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
                   for _ in range(rng.randint(1, 32)))  # fmt: skip
    seq = rng.choice((0, 1, rng.randint(0, 2**32 - 1)))
    kind = rng.randrange(6)
    frame: Frame
    if kind == 0:
        values: dict[str, int | float | SensorError] = {}
        for _ in range(rng.randint(0, 7)):
            key = rng.choice("smtalrhbk") + rng.choice("tmxhk") + str(rng.randint(0, 9))
            values[key] = rng.choice(
                (rng.randint(-100_000, 100_000), rng.randint(-(10**7), 10**7) / 1000, SensorError(), SensorError("nc"))
            )
        frame = DataFrame(node, seq, values, replay=rng.random() < 0.2)
    elif kind == 1:
        frame = HelloFrame(node, seq, "1.4.2", ("sm0", "st0"), rng.randint(1, 86_400))
    elif kind == 2:
        frame = CommandFrame(node, seq, "SET", {"interval_s": str(rng.randint(1, 86_400))})
    elif kind == 3:
        frame = AckFrame(node, seq, True)
    elif kind == 4:
        frame = AckFrame(node, seq, False, "bad_value")
    else:
        frame = StoredFrame(node, seq)
    try:
        line = encode(frame)
    except ValueError:  # over MAX_LINE: the encoder refuses it; take a short one
        frame = StoredFrame(node, seq)
        line = encode(frame)
    if rng.random() < 0.3:
        star = line.rindex(b"*")
        line = line[: star + 1] + line[star + 1 : star + 5].lower() + line[star + 5 :]
    if rng.random() < 0.3:
        line = line.replace(b"\r\n", b"\n")
    return line, frame


def junk(rng: random.Random) -> bytes:
    """One piece of hostile input, of one of the kinds a serial line meets."""
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 600))
    if kind == 1:
        return rng.choice(BOOT_BANNERS)
    if kind == 2:
        return b"\x00" * rng.randint(1, 600)
    if kind == 3:  # an oversized line, sometimes with a correct CRC
        body = bytes(rng.choice(b"ABCDEFGH,=0123456789.") for _ in range(rng.randint(MAX_LINE - 8, 900)))
        return sign(b"GD,1,n1,1," + body) if rng.random() < 0.5 else b"$" + body + b"\r\n"
    if kind == 4:
        line, _ = valid_line(rng)
        return wrong_baud(line, rng.choice(WRONG_BAUD_RATIOS), rng)
    if kind == 5:  # a valid line with bytes flipped, dropped or inserted
        data = bytearray(valid_line(rng)[0])
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            action = rng.randrange(3)
            if action == 0:
                data[i] ^= 1 << rng.randrange(8)
            elif action == 1:
                del data[i]
            else:
                data.insert(i, rng.randrange(256))
            if not data:
                break
        return bytes(data)
    if kind == 6:  # half a line: a node that reboots mid-line
        line = valid_line(rng)[0]
        return line[: rng.randint(1, len(line) - 1)]
    if kind == 7:  # signed, but not a frame
        body = bytes(rng.choice(b"GDRHKCA,=01nas*:;-_ \x7f\x80\xff") for _ in range(rng.randint(0, 80)))
        return sign(body, lower=rng.random() < 0.5)
    if kind == 8:
        return bytes(rng.choice(b"\x00\xff\x80\xfe\xf0\x0f") for _ in range(rng.randint(1, 300)))
    return b"\r\n" * rng.randint(1, 3) + rng.choice((b"$", b"*", b"$*", b"$GD,", b"*FFFF")) * rng.randint(1, 20)


def fuzz_streams(rng: random.Random, count: int) -> Iterator[tuple[list[bytes], list[Frame]]]:
    """``count`` streams of junk and valid lines, each in random chunks, with the
    frames of the valid lines in it (which must all come out)."""
    for _ in range(count):
        data = bytearray()
        frames: list[Frame] = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.4:
                line, frame = valid_line(rng)
                data += line
                frames.append(frame)
            else:
                data += junk(rng)
        cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 12))]
        yield chunked(bytes(data), cuts), frames
