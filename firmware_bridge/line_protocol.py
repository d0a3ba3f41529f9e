"""The node line protocol: framing, CRC, parsing and encoding (docs/protocol.md).

Pure code: no I/O, no clock. ``FrameDecoder`` turns a byte stream, in chunks
of any size, into :class:`Frame` values and :class:`Reject` records; the
``encode_*`` functions build the exact bytes a node or the host sends.

A line looks like ``$GD,1,bed3-a,42,sm0=412,st0=14.5*1656\\r\\n``. The CRC is
CRC-16/CCITT-FALSE over the bytes between ``$`` and ``*``, written as four
upper-case hex digits. A line is at most :data:`MAX_LINE` bytes, ``$`` to
``\\n`` included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

PROTO_VERSION = 1
MAX_LINE = 256
SEQ_MAX = 2**32 - 1

NODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,15}")
# Numbers as a C printf("%d") or dtostrf() prints them: no exponent, no hex.
NUMBER_RE = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,6})?")
ERROR_CODE_RE = re.compile(r"[a-z][a-z0-9_]{0,11}")
REASON_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Free-text values (a firmware version, a command argument): printable, no
# space, and none of the framing characters "$", "*" and ",".
TEXT_RE = re.compile(r"[\x21-\x23\x25-\x29\x2b\x2d-\x7e]{1,64}")


class RejectReason(StrEnum):
    """Why a line was not turned into a frame. Each is counted by the bridge."""

    NOISE = "noise"  # bytes outside any frame (boot garbage, wrong baud)
    TOO_LONG = "too_long"  # no line end within MAX_LINE bytes
    TRUNCATED = "truncated"  # a new '$' began before the line ended
    NOT_ASCII = "not_ascii"  # a byte outside printable ASCII inside a frame
    NO_CHECKSUM = "no_checksum"  # no '*XXXX' trailer
    CRC_MISMATCH = "crc_mismatch"
    UNKNOWN_TYPE = "unknown_type"
    BAD_PROTO = "bad_proto"
    BAD_NODE_ID = "bad_node_id"
    BAD_SEQ = "bad_seq"
    BAD_FIELD = "bad_field"  # a key=value pair that does not parse
    BAD_VALUE = "bad_value"  # a value that is neither a number nor na[:code]
    DUPLICATE_KEY = "duplicate_key"


class FrameKind(StrEnum):
    DATA = "GD"
    REPLAY = "GR"  # data sent again from the node's buffer of unstored readings
    HELLO = "GH"
    COMMAND = "GC"
    ACK = "GA"
    STORED = "GK"  # host -> node: readings up to seq are safely stored


@dataclass(frozen=True, slots=True)
class SensorError:
    """A sensor the node could not read, sent as ``key=na`` or ``key=na:<code>``."""

    code: str = "unknown"


Value = int | float | SensorError


@dataclass(frozen=True, slots=True)
class DataFrame:
    node_id: str
    seq: int
    values: Mapping[str, Value]
    proto: int = PROTO_VERSION
    replay: bool = False  # sent as GR: a reading the host may already have

    @property
    def kind(self) -> FrameKind:
        return FrameKind.REPLAY if self.replay else FrameKind.DATA


@dataclass(frozen=True, slots=True)
class HelloFrame:
    node_id: str
    seq: int
    fw: str
    sensors: tuple[str, ...]
    interval_s: int
    extra: Mapping[str, str] = field(default_factory=dict)
    proto: int = PROTO_VERSION
    kind: FrameKind = field(default=FrameKind.HELLO, init=False)


@dataclass(frozen=True, slots=True)
class CommandFrame:
    node_id: str
    seq: int
    verb: str
    args: Mapping[str, str]
    kind: FrameKind = field(default=FrameKind.COMMAND, init=False)


@dataclass(frozen=True, slots=True)
class AckFrame:
    node_id: str
    seq: int
    ok: bool
    reason: str = ""
    kind: FrameKind = field(default=FrameKind.ACK, init=False)


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """Host to node: every reading of this boot up to ``seq`` is stored; forget them."""

    node_id: str
    seq: int
    kind: FrameKind = field(default=FrameKind.STORED, init=False)


Frame = DataFrame | HelloFrame | CommandFrame | AckFrame | StoredFrame


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    line: bytes  # at most MAX_LINE bytes of what was rejected, for debug logs


class ProtocolError(ValueError):
    """A line that is not a valid frame. ``reason`` says which rule it broke."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no xorout.

    Check value: ``crc16_ccitt_false(b"123456789") == 0x29B1``.
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[(crc >> 8) ^ byte]
    return crc


# ---------------------------------------------------------------- encoding


def format_number(value: float) -> str:
    """Print a number the way the firmware does: integers bare, else up to 3 decimals."""
    if not math.isfinite(value):
        raise ValueError(f"cannot send a non-finite number: {value!r}")
    if abs(value) >= 1e10:
        raise ValueError(f"{value!r} has more than 10 integer digits")
    if float(value).is_integer():
        return str(int(value))
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _format_value(value: Value) -> str:
    if isinstance(value, SensorError):
        if value.code == "unknown":
            return "na"
        if not ERROR_CODE_RE.fullmatch(value.code):
            raise ValueError(f"sensor error code {value.code!r} must match {ERROR_CODE_RE.pattern}")
        return f"na:{value.code}"
    return format_number(value)


def _frame(body: str) -> bytes:
    raw = body.encode("ascii")
    line = b"$" + raw + b"*" + f"{crc16_ccitt_false(raw):04X}".encode() + b"\r\n"
    if len(line) > MAX_LINE:
        raise ValueError(f"frame is {len(line)} bytes, over the {MAX_LINE}-byte limit")
    return line


def _check_node_seq(node_id: str, seq: int) -> None:
    if not NODE_ID_RE.fullmatch(node_id):
        raise ValueError(f"node id {node_id!r} must match {NODE_ID_RE.pattern}")
    if not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"seq {seq} outside 0..{SEQ_MAX}")


def encode_data(node_id: str, seq: int, values: Mapping[str, Value], *, replay: bool = False) -> bytes:
    _check_node_seq(node_id, seq)
    for key in values:
        if not KEY_RE.fullmatch(key):
            raise ValueError(f"sensor key {key!r} must match {KEY_RE.pattern}")
    pairs = ",".join(f"{k}={_format_value(v)}" for k, v in values.items())
    kind = "GR" if replay else "GD"
    return _frame(f"{kind},{PROTO_VERSION},{node_id},{seq}" + (f",{pairs}" if pairs else ""))


def encode_hello(
    node_id: str,
    seq: int,
    fw: str,
    sensors: tuple[str, ...],
    interval_s: int,
    extra: Mapping[str, str] | None = None,
) -> bytes:
    _check_node_seq(node_id, seq)
    if not sensors or not all(KEY_RE.fullmatch(k) for k in sensors):
        raise ValueError(f"hello needs sensor keys matching {KEY_RE.pattern}, got {sensors!r}")
    for key, value in {"fw": fw, **(extra or {})}.items():
        if not KEY_RE.fullmatch(key) or not TEXT_RE.fullmatch(value):
            raise ValueError(f"hello field {key}={value!r}: key or value not allowed")
    if extra and {"fw", "sensors", "interval_s"} & set(extra):
        raise ValueError("hello extra fields cannot repeat fw, sensors or interval_s")
    parts = [f"fw={fw}", f"sensors={';'.join(sensors)}", f"interval_s={interval_s}"]
    parts += [f"{k}={v}" for k, v in (extra or {}).items()]
    return _frame(f"GH,{PROTO_VERSION},{node_id},{seq}," + ",".join(parts))


def encode_command(node_id: str, seq: int, verb: str, args: Mapping[str, str]) -> bytes:
    _check_node_seq(node_id, seq)
    if not re.fullmatch(r"[A-Z]{2,8}", verb):
        raise ValueError(f"command verb {verb!r} must be 2-8 upper-case letters")
    for key, value in args.items():
        if not KEY_RE.fullmatch(key) or not TEXT_RE.fullmatch(value):
            raise ValueError(f"command argument {key}={value!r}: key or value not allowed")
    pairs = "".join(f",{k}={v}" for k, v in args.items())
    return _frame(f"GC,{node_id},{seq},{verb}{pairs}")


def encode_ack(node_id: str, seq: int, ok: bool, reason: str = "") -> bytes:
    _check_node_seq(node_id, seq)
    if ok:
        return _frame(f"GA,{node_id},{seq},OK")
    if not REASON_RE.fullmatch(reason):
        raise ValueError(f"ack reason {reason!r} must match {REASON_RE.pattern}")
    return _frame(f"GA,{node_id},{seq},ERR,{reason}")


def encode_stored(node_id: str, seq: int) -> bytes:
    _check_node_seq(node_id, seq)
    return _frame(f"GK,{node_id},{seq}")


def encode(frame: Frame) -> bytes:
    """Encode any frame value; ``parse_line(encode(f)) == f`` for valid frames."""
    if isinstance(frame, DataFrame):
        return encode_data(frame.node_id, frame.seq, frame.values, replay=frame.replay)
    if isinstance(frame, StoredFrame):
        return encode_stored(frame.node_id, frame.seq)
    if isinstance(frame, HelloFrame):
        return encode_hello(frame.node_id, frame.seq, frame.fw, frame.sensors, frame.interval_s, frame.extra)
    if isinstance(frame, CommandFrame):
        return encode_command(frame.node_id, frame.seq, frame.verb, frame.args)
    return encode_ack(frame.node_id, frame.seq, frame.ok, frame.reason)


# ----------------------------------------------------------------- parsing


def _parse_seq(text: str) -> int:
    if not text.isdigit() or len(text) > 10 or int(text) > SEQ_MAX:
        raise ProtocolError(RejectReason.BAD_SEQ, text[:16])
    return int(text)


def _parse_node(text: str) -> str:
    if not NODE_ID_RE.fullmatch(text):
        raise ProtocolError(RejectReason.BAD_NODE_ID, text[:40])
    return text


def _split_pairs(fields: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        if not sep or not KEY_RE.fullmatch(key) or not value:
            raise ProtocolError(RejectReason.BAD_FIELD, item[:40])
        if key in pairs:
            raise ProtocolError(RejectReason.DUPLICATE_KEY, key)
        pairs[key] = value
    return pairs


def _parse_value(text: str) -> Value:
    if NUMBER_RE.fullmatch(text):
        return float(text) if "." in text else int(text)
    if text == "na":
        return SensorError()
    if text.startswith("na:") and ERROR_CODE_RE.fullmatch(text[3:]):
        return SensorError(text[3:])
    raise ProtocolError(RejectReason.BAD_VALUE, text[:40])


def parse_body(body: str) -> Frame:
    """Parse the text between ``$`` and ``*`` of a line whose CRC has been checked."""
    fields = body.split(",")
    kind = fields[0]
    if kind in ("GD", "GR", "GH"):
        if len(fields) < 4:
            raise ProtocolError(RejectReason.BAD_FIELD, "too few fields")
        if fields[1] != str(PROTO_VERSION):
            raise ProtocolError(RejectReason.BAD_PROTO, fields[1][:8])
        node, seq = _parse_node(fields[2]), _parse_seq(fields[3])
        pairs = _split_pairs(fields[4:])
        if kind != "GH":
            values = {k: _parse_value(v) for k, v in pairs.items()}
            return DataFrame(node, seq, values, replay=kind == "GR")
        try:
            fw = pairs.pop("fw")
            sensors = tuple(pairs.pop("sensors").split(";"))
            interval_text = pairs.pop("interval_s")
        except KeyError as missing:
            raise ProtocolError(RejectReason.BAD_FIELD, f"hello lacks {missing}") from None
        if not interval_text.isdigit() or not all(KEY_RE.fullmatch(s) for s in sensors):
            raise ProtocolError(RejectReason.BAD_FIELD, "hello interval_s or sensors")
        return HelloFrame(node, seq, fw, sensors, int(interval_text), pairs)
    if kind == "GK":
        if len(fields) != 3:
            raise ProtocolError(RejectReason.BAD_FIELD, "GK takes a node and a seq")
        return StoredFrame(_parse_node(fields[1]), _parse_seq(fields[2]))
    if kind in ("GC", "GA"):
        if len(fields) < 4:
            raise ProtocolError(RejectReason.BAD_FIELD, "too few fields")
        node, seq = _parse_node(fields[1]), _parse_seq(fields[2])
        if kind == "GC":
            verb = fields[3]
            if not re.fullmatch(r"[A-Z]{2,8}", verb):
                raise ProtocolError(RejectReason.BAD_FIELD, verb[:16])
            return CommandFrame(node, seq, verb, _split_pairs(fields[4:]))
        if fields[3] == "OK" and len(fields) == 4:
            return AckFrame(node, seq, True)
        if fields[3] == "ERR" and len(fields) == 5 and REASON_RE.fullmatch(fields[4]):
            return AckFrame(node, seq, False, fields[4])
        raise ProtocolError(RejectReason.BAD_FIELD, ",".join(fields[3:])[:40])
    raise ProtocolError(RejectReason.UNKNOWN_TYPE, kind[:8])


_HEX = frozenset(b"0123456789ABCDEFabcdef")


def parse_line(line: bytes) -> Frame:
    """Parse one complete line (``$`` to ``\\n``, the ``\\r`` optional).

    Raises :class:`ProtocolError` naming the first rule the line breaks.
    """
    if len(line) > MAX_LINE:
        raise ProtocolError(RejectReason.TOO_LONG)
    text = line.rstrip(b"\r\n")
    if not text.startswith(b"$"):
        raise ProtocolError(RejectReason.NOISE)
    star = text.rfind(b"*")
    if star < 0 or len(text) - star != 5 or not all(c in _HEX for c in text[star + 1 :]):
        raise ProtocolError(RejectReason.NO_CHECKSUM)
    body = text[1:star]
    if any(c < 0x20 or c > 0x7E for c in body):
        raise ProtocolError(RejectReason.NOT_ASCII)
    if crc16_ccitt_false(body) != int(text[star + 1 :], 16):
        raise ProtocolError(RejectReason.CRC_MISMATCH)
    return parse_body(body.decode("ascii"))


# ----------------------------------------------------------------- framing


class FrameDecoder:
    """Turn a byte stream into frames and rejects, however the bytes are chunked.

    Feed it whatever the port returned; it yields each complete line's result
    in order. Bytes before a ``$`` are noise (one :class:`Reject` per line of
    noise that holds anything but white space). A ``$`` inside a line starts
    a new frame and rejects the unfinished one as truncated, so a node that
    reboots mid-line costs one reading, not two.
    """

    __slots__ = ("_buf", "_in_frame", "_noise", "_noise_buf", "_overflow")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self._noise = False  # the current run outside a frame held visible bytes
        self._noise_buf = bytearray()  # its first MAX_LINE bytes, for the debug log
        self._overflow = False  # the current frame passed MAX_LINE: drop to line end

    def _take_noise(self, piece: bytes) -> None:
        if not self._noise and piece.strip():
            self._noise = True
        room = MAX_LINE - len(self._noise_buf)
        if room > 0:
            self._noise_buf += piece[:room]

    def _noise_reject(self) -> Reject:
        reject = Reject(RejectReason.NOISE, bytes(self._noise_buf))
        self._noise = False
        self._noise_buf.clear()
        return reject

    def feed(self, data: bytes) -> Iterator[Frame | Reject]:
        buf = self._buf
        start = 0
        n = len(data)
        while start < n:
            if not self._in_frame:
                dollar = data.find(b"$", start)
                end = n if dollar < 0 else dollar
                pieces = data[start:end].split(b"\n")
                for piece in pieces[:-1]:
                    self._take_noise(piece)
                    if self._noise:
                        yield self._noise_reject()
                    self._noise_buf.clear()
                self._take_noise(pieces[-1])
                if dollar < 0:
                    return
                if self._noise:
                    yield self._noise_reject()
                self._noise_buf.clear()
                self._in_frame = True
                self._overflow = False
                buf.clear()
                buf.append(0x24)
                start = dollar + 1
                continue
            newline = data.find(b"\n", start)
            dollar = data.find(b"$", start)
            if dollar >= 0 and (newline < 0 or dollar < newline):
                if not self._overflow:
                    buf += data[start:dollar]
                    self._overflow = len(buf) > MAX_LINE
                reason = RejectReason.TOO_LONG if self._overflow else RejectReason.TRUNCATED
                yield Reject(reason, bytes(buf[:MAX_LINE]))
                buf.clear()
                self._overflow = False
                buf.append(0x24)
                start = dollar + 1
                continue
            end = n if newline < 0 else newline + 1
            if not self._overflow:
                buf += data[start:end]
                if len(buf) > MAX_LINE:
                    self._overflow = True
                    del buf[MAX_LINE:]
            start = end
            if newline >= 0:
                self._in_frame = False
                if self._overflow:
                    self._overflow = False
                    yield Reject(RejectReason.TOO_LONG, bytes(buf))
                else:
                    yield self._finish(bytes(buf))
                buf.clear()

    def flush(self) -> Iterator[Reject]:
        """End of stream (the port closed): what is left is a partial line."""
        if self._in_frame and self._buf:
            yield Reject(RejectReason.TRUNCATED, bytes(self._buf[:MAX_LINE]))
        elif self._noise:
            yield self._noise_reject()
        self._buf.clear()
        self._noise_buf.clear()
        self._in_frame = self._noise = self._overflow = False

    @staticmethod
    def _finish(line: bytes) -> Frame | Reject:
        try:
            return parse_line(line)
        except ProtocolError as err:
            return Reject(err.reason, line)
