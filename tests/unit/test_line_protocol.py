"""The line protocol: CRC, encoding round trips and the chunk-proof decoder."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    crc16_ccitt_false,
    encode,
    encode_data,
    parse_line,
)

node_ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
seqs = st.integers(0, 2**32 - 1)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
numbers = st.one_of(
    st.integers(-100_000, 100_000),
    st.integers(-10_000_000, 10_000_000).map(lambda n: n / 1000),
)
values = st.one_of(numbers, st.builds(SensorError, st.sampled_from(["unknown", "nc", "crc", "timeout"])))
data_frames = st.builds(DataFrame, node_ids, seqs, st.dictionaries(keys, values, max_size=8))
hello_frames = st.builds(
    HelloFrame,
    node_ids,
    seqs,
    st.from_regex(r"[0-9]\.[0-9]{1,2}\.[0-9]", fullmatch=True),
    st.lists(keys, min_size=1, max_size=6).map(tuple),
    st.integers(1, 86_400),
)
command_frames = st.builds(
    CommandFrame,
    node_ids,
    seqs,
    st.just("SET"),
    st.fixed_dictionaries({"interval_s": st.integers(1, 86_400).map(str)}),
)
ack_frames = st.one_of(
    st.builds(AckFrame, node_ids, seqs, st.just(True)),
    st.builds(AckFrame, node_ids, seqs, st.just(False), st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)),
)
replay_frames = st.builds(DataFrame, node_ids, seqs, st.dictionaries(keys, values, max_size=4), replay=st.just(True))
stored_frames = st.builds(StoredFrame, node_ids, seqs)
frames = st.one_of(data_frames, replay_frames, hello_frames, command_frames, ack_frames, stored_frames)


def decode_all(chunks: list[bytes]) -> list[Frame | Reject]:
    decoder = FrameDecoder()
    out: list[Frame | Reject] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.flush())
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


def test_crc_check_value() -> None:
    # The catalogue check value of CRC-16/CCITT-FALSE.
    assert crc16_ccitt_false(b"123456789") == 0x29B1
    assert crc16_ccitt_false(b"") == 0xFFFF


def test_known_line() -> None:
    line = encode_data("bed3-a", 42, {"sm0": 412, "st0": 14.5, "rh0": SensorError("nc")})
    assert line == b"$GD,1,bed3-a,42,sm0=412,st0=14.5,rh0=na:nc*26FF\r\n"
    frame = parse_line(line)
    assert frame == DataFrame("bed3-a", 42, {"sm0": 412, "st0": 14.5, "rh0": SensorError("nc")})


@given(frames)
def test_encode_parse_round_trip(frame: Frame) -> None:
    try:
        line = encode(frame)
    except ValueError:
        return  # over the line limit: refused at the source, never sent
    assert len(line) <= MAX_LINE
    assert parse_line(line) == frame


@given(st.lists(frames, max_size=6), st.binary(max_size=60), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_gives_the_same_results(frame_list: list[Frame], noise: bytes, cuts: list[int]) -> None:
    stream = noise + b"\n" + b"".join(_encodable(frame_list)) + noise
    whole = decode_all([stream])
    assert decode_all(split(stream, cuts)) == whole
    assert decode_all([bytes([b]) for b in stream]) == whole


def _encodable(frame_list: list[Frame]) -> list[bytes]:
    out = []
    for frame in frame_list:
        with contextlib.suppress(ValueError):
            out.append(encode(frame))
    return out


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_garbage_never_yields_a_frame(garbage: bytes) -> None:
    assert not [item for item in decode_all([garbage]) if not isinstance(item, Reject)]


@given(st.binary(max_size=600), frames)
def test_a_valid_frame_after_garbage_is_recovered(garbage: bytes, frame: Frame) -> None:
    try:
        line = encode(frame)
    except ValueError:
        return
    results = decode_all([garbage + line])
    assert results[-1] == frame


@given(data_frames, st.integers(1, 200), st.integers(0, 7))
def test_a_flipped_bit_is_always_rejected(frame: DataFrame, pos: int, bit: int) -> None:
    try:
        line = bytearray(encode(frame))
    except ValueError:
        return
    # Flip a bit in the body: a flipped case bit in the CRC digits is still the
    # same CRC, since receivers accept either case.
    index = 1 + pos % (line.rindex(b"*") - 1)
    line[index] ^= 1 << bit
    results = decode_all([bytes(line)])
    # CRC-16 catches every single-bit error, so nothing but rejects comes out.
    assert all(isinstance(item, Reject) for item in results)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$GD,1,n1,1,sm0=1*0000\r\n", RejectReason.CRC_MISMATCH),
        (b"$GD,1,n1,1,sm0=1\r\n", RejectReason.NO_CHECKSUM),
        (b"$GD,1,n1,1,sm0=1*12\r\n", RejectReason.NO_CHECKSUM),
        (b"$GD,1,n1,1,sm0=\xff*0000\r\n", RejectReason.NOT_ASCII),
        (b"hello\r\n", RejectReason.NOISE),
        (b"$" + b"A" * 300 + b"\r\n", RejectReason.TOO_LONG),
    ],
)
def test_rejects_name_the_rule(line: bytes, reason: RejectReason) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_line(line)
    assert caught.value.reason is reason


def _signed(body: str) -> bytes:
    raw = body.encode()
    return b"$" + raw + f"*{crc16_ccitt_false(raw):04X}\r\n".encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GX,1,n1,1", RejectReason.UNKNOWN_TYPE),
        ("GD,2,n1,1,sm0=1", RejectReason.BAD_PROTO),
        ("GD,1,n+1,1,sm0=1", RejectReason.BAD_NODE_ID),
        ("GD,1,n1,-1,sm0=1", RejectReason.BAD_SEQ),
        ("GD,1,n1,99999999999,sm0=1", RejectReason.BAD_SEQ),
        ("GD,1,n1,1,sm0", RejectReason.BAD_FIELD),
        ("GD,1,n1,1,SM0=1", RejectReason.BAD_FIELD),
        ("GD,1,n1,1,sm0=1e5", RejectReason.BAD_VALUE),
        ("GD,1,n1,1,sm0=nan", RejectReason.BAD_VALUE),
        ("GD,1,n1,1,sm0=1,sm0=2", RejectReason.DUPLICATE_KEY),
        ("GH,1,n1,0,fw=1.0,sensors=sm0", RejectReason.BAD_FIELD),
        ("GA,n1,1,MAYBE", RejectReason.BAD_FIELD),
    ],
)
def test_signed_but_invalid_bodies(body: str, reason: RejectReason) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_line(_signed(body))
    assert caught.value.reason is reason


def test_reboot_mid_line_costs_one_line() -> None:
    a = encode_data("n1", 5, {"sm0": 400})
    b = encode_data("n1", 0, {"sm0": 401})
    results = decode_all([a[:12] + b"\x00\xfe" + b])
    assert results == [Reject(RejectReason.TRUNCATED, a[:12] + b"\x00\xfe"), parse_line(b)]


def test_overlong_line_then_recovery() -> None:
    good = encode_data("n1", 1, {"sm0": 400})
    results = decode_all([b"$" + b"x" * 1000 + b"\n" + good])
    assert [type(r) for r in results] == [Reject, DataFrame]
    assert isinstance(results[0], Reject) and results[0].reason is RejectReason.TOO_LONG
    assert len(results[0].line) == MAX_LINE
