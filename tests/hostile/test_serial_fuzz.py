"""The serial line decoder under hostile input (docs/protocol.md, "Under fuzzing").

Hypothesis at volume, a seeded fuzz run, an atheris run (tests/hostile/atheris_serial.py)
and a real pty, over random bytes, boot noise, NULs, oversized lines, wrong-baud
garbage, half lines and valid lines cut at any chunk boundary and mixed with junk.
The promises checked:

- the decoder never raises;
- it never emits a frame whose CRC is wrong: every frame is checked against the
  lines of the input whose CRC *this file* computes (serial_noise.crc16, written
  from the protocol doc, not the parser's table);
- after any garbage, the next valid line is decoded, exactly once;
- every reject carries one of the listed reasons, and the counts by reason are
  exactly what the input deserves.
"""

from __future__ import annotations

import os
import pty
import random
import subprocess
import sys
import threading
import time
import tty
from collections import Counter
from importlib.util import find_spec
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.line_protocol import (
    MAX_LINE,
    DataFrame,
    Frame,
    Reject,
    RejectReason,
    encode_data,
)
from firmware_bridge.serial_port import PortChunk, PortEvent, PortReader, PortState

from .serial_noise import (
    BOOT_BANNERS,
    WRONG_BAUD_RATIOS,
    check_recovery,
    check_stream,
    chunked,
    crc16,
    decode,
    fuzz_streams,
    is_subsequence,
    junk,
    sign,
    signed_bodies,
    valid_line,
    wrong_baud,
)

# Several thousand examples per property; the whole file takes about 40 s of one core.
VOLUME = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_STREAMS = 10_000
ATHERIS_RUNS = 6_000

seeds = st.integers(0, 2**32 - 1)


def _cuts(seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100_000) for _ in range(rng.randint(0, 16))]


# Where the port's reads cut the stream: up to 16 places, drawn from one seed.
cuts = seeds.map(_cuts)
# Random bytes (shrinkable), the boot banners, and every kind of junk serial_noise
# makes (NUL runs, 0x00/0xFF/0x80 runs, wrong-baud garbage, oversized, mutated, half
# and signed-but-invalid lines), drawn from a seed so each example costs one draw.
noise = st.one_of(
    st.binary(max_size=600),
    st.sampled_from(BOOT_BANNERS),
    seeds.map(lambda s: junk(random.Random(s))),
)
lines = seeds.map(lambda s: valid_line(random.Random(s)))


def test_the_oracle_crc_is_the_documented_one() -> None:
    # The doc's own examples, signed by this file's CRC.
    assert crc16(b"123456789") == 0x29B1
    assert sign(b"GD,1,bed3-a,42,sm0=412,st0=14.5,rh0=na:nc") == b"$GD,1,bed3-a,42,sm0=412,st0=14.5,rh0=na:nc*26FF\r\n"
    assert sign(b"GA,bed3-a,7,OK") == b"$GA,bed3-a,7,OK*CF41\r\n"
    assert signed_bodies(b"junk$GA,bed3-a,7,OK*CF41\r\n$GA,bed3-a,7,OK*CF42\r\n") == decode([b"$GA,bed3-a,7,OK*CF41\n"])


@VOLUME
@given(noise, cuts)
def test_noise_never_raises_and_never_forges_a_frame(data: bytes, where: list[int]) -> None:
    results = check_stream(chunked(data, where))
    # Noise with no correctly signed line in it gives rejects only.
    if not signed_bodies(data):
        assert all(isinstance(r, Reject) for r in results)


@VOLUME
@given(noise, lines, cuts, cuts)
def test_the_next_valid_line_after_any_garbage_is_decoded_once(
    garbage: bytes, valid: tuple[bytes, Frame], garbage_cuts: list[int], line_cuts: list[int]
) -> None:
    line, frame = valid
    check_recovery(chunked(garbage, garbage_cuts), chunked(line, line_cuts), frame)


@VOLUME
@given(st.lists(st.one_of(lines, noise), min_size=1, max_size=8), cuts)
def test_valid_lines_mixed_with_junk_all_come_out_and_nothing_else(
    parts: list[tuple[bytes, Frame] | bytes], where: list[int]
) -> None:
    stream = b"".join(p if isinstance(p, bytes) else p[0] for p in parts)
    wanted = [p[1] for p in parts if not isinstance(p, bytes)]
    results = check_stream(chunked(stream, where))
    frames = [r for r in results if not isinstance(r, Reject)]
    assert is_subsequence(wanted, frames), (wanted, frames)
    assert results == decode([stream])  # the same however the bytes were chunked


@settings(VOLUME, max_examples=1000)  # a narrow property: 81 lengths, any content, any cut
@given(st.integers(40, 120), seeds, cuts)
def test_a_correctly_signed_line_over_the_limit_is_never_a_frame(keys: int, seed: int, where: list[int]) -> None:
    rng = random.Random(seed)
    body = b"GD,1,n1,7," + b",".join(b"k%d=%d" % (i, rng.randint(0, 999)) for i in range(keys))
    line = sign(body)
    good, frame = valid_line(rng)
    assert len(line) > MAX_LINE and signed_bodies(line)  # parseable, signed, and too long
    assert decode(chunked(line + good, where)) == [Reject(RejectReason.TOO_LONG, line[:MAX_LINE]), frame]


# Each defect, as whole lines, and the reasons it must be counted under.
DEFECTS: list[tuple[bytes, RejectReason | tuple[RejectReason, ...]]] = [
    (b"$GD,1,n1,1,sm0=400*0000\r\n", RejectReason.CRC_MISMATCH),
    (b"$GD,1,n1,1,sm0=400\r\n", RejectReason.NO_CHECKSUM),
    (b"$GD,1,n1,1,sm0=400*12\r\n", RejectReason.NO_CHECKSUM),
    (sign(b"GD,1,n1,1,sm0=4\xb000"), RejectReason.NOT_ASCII),
    (sign(b"GD,1,n1,1,sm0=4\x0000"), RejectReason.NOT_ASCII),
    (b"$" + b"A" * 400 + b"\r\n", RejectReason.TOO_LONG),
    (b"hello from the bootloader\r\n", RejectReason.NOISE),
    (b"\x00\xff\x00\x80\r\n", RejectReason.NOISE),
    (sign(b"GX,1,n1,1"), RejectReason.UNKNOWN_TYPE),
    (sign(b"GD,2,n1,1,sm0=1"), RejectReason.BAD_PROTO),
    (sign(b"GD,1,n 1,1,sm0=1"), RejectReason.BAD_NODE_ID),
    (sign(b"GD,1,n1,4294967296,sm0=1"), RejectReason.BAD_SEQ),
    (sign(b"GD,1,n1,1,sm0"), RejectReason.BAD_FIELD),
    (sign(b"GD,1,n1,1,sm0=1e3"), RejectReason.BAD_VALUE),
    (sign(b"GD,1,n1,1,sm0=nan"), RejectReason.BAD_VALUE),
    (sign(b"GD,1,n1,1,sm0=1,sm0=2"), RejectReason.DUPLICATE_KEY),
    # No line end: the next '$' cuts it, and starts a line of its own.
    (b"$GD,1,n1,1,sm0=4" + b"$GD,1,n1,1,sm0=400\n", (RejectReason.TRUNCATED, RejectReason.NO_CHECKSUM)),
]


@VOLUME
@given(st.lists(st.integers(0, len(DEFECTS)), max_size=12), seeds, cuts)
def test_rejects_are_counted_by_reason(parts: list[int], seed: int, where: list[int]) -> None:
    rng = random.Random(seed)
    stream = bytearray()
    expected: Counter[RejectReason] = Counter()
    wanted: list[Frame] = []
    for part in parts:
        if part < len(DEFECTS):
            line, reasons = DEFECTS[part]
            stream += line
            expected.update(reasons if isinstance(reasons, tuple) else (reasons,))
        else:  # a valid line
            line, frame = valid_line(rng)
            stream += line
            wanted.append(frame)
    stream += encode_data("last", 0, {"sm0": 1})
    wanted.append(DataFrame("last", 0, {"sm0": 1}))
    results = decode(chunked(bytes(stream), where))
    assert Counter(r.reason for r in results if isinstance(r, Reject)) == expected
    assert [r for r in results if not isinstance(r, Reject)] == wanted


def test_wrong_baud_noise_looks_like_the_real_thing() -> None:
    """The simulator's garbage is what a wrong baud rate gives: mostly 0x00, 0xFF,
    0x80-ish bytes and framing debris, and never a frame."""
    rng = random.Random(7)
    line = encode_data("bed3-a", 42, {"sm0": 412, "st0": 14.5})
    heavy = 0
    total = 0
    for ratio in WRONG_BAUD_RATIOS:
        garbage = wrong_baud(line * 5, ratio, rng)
        assert garbage != line * 5 and not signed_bodies(garbage)
        assert all(isinstance(r, Reject) for r in decode([garbage]))
        heavy += sum(b in (0x00, 0xFF, 0x80, 0xFE, 0xF8, 0xE0, 0xC0, 0xF0) for b in garbage)
        total += len(garbage)
    assert heavy / total > 0.3, (heavy, total)
    assert wrong_baud(line, 1.0, rng) == line  # the right baud reads it back


def test_seeded_fuzz_run() -> None:
    """A bounded fuzz run: FUZZ_STREAMS streams of every kind of junk mixed with valid
    lines, in random chunks. Prints the counts (docs/protocol.md quotes them)."""
    rng = random.Random(20_260_601)
    started = time.monotonic()
    reasons: Counter[str] = Counter()
    frames = valid = total_bytes = 0
    for chunks, wanted in fuzz_streams(rng, FUZZ_STREAMS):
        results = check_stream(chunks)
        got = [r for r in results if not isinstance(r, Reject)]
        assert is_subsequence(wanted, got), (chunks, wanted, got)
        line, frame = valid_line(rng)
        check_recovery(chunks, chunked(line, [rng.randrange(len(line))]), frame)
        reasons.update(r.reason.value for r in results if isinstance(r, Reject))
        frames += len(got)
        valid += len(wanted)
        total_bytes += sum(map(len, chunks))
    elapsed = time.monotonic() - started
    assert valid > FUZZ_STREAMS // 2 and frames >= valid
    assert {"noise", "too_long", "truncated", "not_ascii", "no_checksum", "crc_mismatch"} <= set(reasons)
    print(
        f"\n[serial fuzz] {FUZZ_STREAMS} streams, {total_bytes / 1e6:.1f} MB, {valid} valid lines all decoded, "
        f"{frames - valid} more frames all correctly signed, {sum(reasons.values())} rejects "
        f"{dict(reasons.most_common())}, {elapsed:.1f} s"
    )


def test_atheris_run_finds_nothing(tmp_path: Path) -> None:
    """libFuzzer, through atheris, drives the same checks (check_stream, check_recovery)
    for ATHERIS_RUNS inputs, guided by the decoder's coverage, from a seed corpus of the
    junk above. atheris ships x86-64 wheels only (pyproject's test extra installs it
    there); elsewhere the harness runs on the seeded generator instead."""
    from .atheris_serial import one_input

    rng = random.Random(5)
    seeds = [junk(rng)[:200] + valid_line(rng)[0] for _ in range(64)]
    if find_spec("atheris") is None:
        assert os.uname().machine != "x86_64", "atheris is missing: pip install -e '.[test]'"
        for _ in range(ATHERIS_RUNS // 10):
            one_input(junk(rng) + junk(rng))
        return
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    harness = Path(__file__).with_name("atheris_serial.py")
    result = subprocess.run(
        [sys.executable, str(harness), f"-runs={ATHERIS_RUNS}", "-max_len=384", "-seed=1", "-max_total_time=60",
         str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    tail = result.stderr[-3000:]
    assert result.returncode == 0, tail
    assert f"Done {ATHERIS_RUNS} runs" in result.stderr, tail
    done = [line for line in result.stderr.splitlines() if line.startswith("#") and "DONE" in line]
    assert done, tail
    coverage = int(done[-1].split("cov: ")[1].split()[0])
    assert coverage > 50, done[-1]  # instrumented: libFuzzer saw the decoder's branches
    print(f"\n[atheris] {ATHERIS_RUNS} runs: {done[-1]}")


def test_a_real_pty_counts_what_the_decoder_counts() -> None:
    """Through a real tty and the bridge's PortReader (chunked reads of whatever the
    port holds): the same frames and the same rejects, by reason, as one decode."""
    rng = random.Random(11)
    stream = bytearray()
    for _ in range(300):
        stream += valid_line(rng)[0] if rng.random() < 0.5 else junk(rng)
    stream += b"\n" + encode_data("end", 1, {"sm0": 1})
    expected = decode([bytes(stream)], flush=False)

    master, slave = pty.openpty()
    tty.setraw(slave)
    got: list[Frame | Reject] = []
    lock = threading.Lock()

    def sink(event: PortEvent) -> None:
        if isinstance(event, PortChunk):
            with lock:
                got.extend(event.items)
        else:
            assert isinstance(event, PortState)

    reader = PortReader(os.ttyname(slave), sink)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not reader.is_open and time.monotonic() < deadline:
            time.sleep(0.01)
        view = memoryview(bytes(stream))
        while view:
            n = os.write(master, view[: rng.randint(1, 512)])
            view = view[n:]
            if rng.random() < 0.1:
                time.sleep(0.002)
        while time.monotonic() < deadline:
            with lock:
                if got and got[-1] == expected[-1] and len(got) >= len(expected):
                    break
            time.sleep(0.02)
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)
    assert got == expected
    counts = Counter(r.reason.value for r in got if isinstance(r, Reject))
    assert sum(counts.values()) > 100 and len(counts) >= 5, counts
