"""The node's C framing code (gc_frame.c) against the Python protocol, byte for byte.

``harness.c`` wraps gc_frame.c in a line-oriented program (its header lists the
modes); the module fixture builds it once with gcc, twice in fact: with the
store of unstored readings an ESP32 gets (64) and with an AVR's (8). Each test
sends thousands of generated cases through the harness in one run and compares
them with ``firmware_bridge.line_protocol``, the source of truth for the wire
format: same CRCs, the same encoded bytes, and the same verdict (frame or
reject reason) on every stream of bytes, corrupted or not. The node mode is
held to ``SimNode``: the same acks, and the same store and forward (GK drops,
GR replays) on the same sequence of readings and host lines.
"""

from __future__ import annotations

import math
import random
import re
import shutil
import string
import struct
import subprocess
from collections import Counter, deque
from fractions import Fraction
from pathlib import Path

import pytest

from firmware_bridge.line_protocol import (
    MAX_LINE,
    NUMBER_RE,
    AckFrame,
    CommandFrame,
    DataFrame,
    FrameDecoder,
    HelloFrame,
    ProtocolError,
    Reject,
    RejectReason,
    SensorError,
    StoredFrame,
    Value,
    crc16_ccitt_false,
    encode_ack,
    encode_command,
    encode_data,
    encode_hello,
    encode_stored,
    format_number,
    parse_line,
)
from firmware_bridge.simulator.node import SENSORS, Faults, SimNode

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware_bridge" / "firmware" / "garden_node"
HARNESS_C = Path(__file__).with_name("harness.c")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
INT32_MAX = 2**31 - 1

NODE_CHARS = string.ascii_letters + string.digits + "_-"
KEY_FIRST = string.ascii_lowercase
KEY_REST = string.ascii_lowercase + string.digits + "_"
# Hello fw / extra values: printable, no framing bytes, no space (the harness splits on it).
TEXT_CHARS = "".join(c for c in string.printable[:94] if c not in ",$*")
SENSOR_KINDS = ("sm", "st", "at", "rh", "lx", "tk", "bt")
# Reasons whose line the C side passes as "other" when the type is GD, GR, GH or GA:
# a node does not parse data, replay, hello or ack bodies.
NODE_TO_HOST = (b"GD", b"GR", b"GH", b"GA")
BODY_REASONS = {
    RejectReason.BAD_PROTO,
    RejectReason.BAD_NODE_ID,
    RejectReason.BAD_SEQ,
    RejectReason.BAD_FIELD,
    RejectReason.BAD_VALUE,
    RejectReason.DUPLICATE_KEY,
}


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The harness built twice, in parallel: keyed by how many unstored readings it keeps."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build firmware_bridge/firmware/garden_node/gc_frame.c")
    out = tmp_path_factory.mktemp("gc_frame")
    builds = {}
    # 64 is the default off AVR; 8 is what an AVR keeps. -O1 for the second: it builds in
    # half the time, and a second optimisation level is a cheap check for undefined behaviour.
    for capacity, opt in ((64, []), (8, ["-O1"])):
        exe = out / f"harness{capacity}"
        cmd = [gcc, *CFLAGS, *opt, f"-DGC_UNSTORED_MAX={capacity}", "-I", str(FIRMWARE)]
        cmd += [str(HARNESS_C), str(FIRMWARE / "gc_frame.c"), "-o", str(exe), "-lm"]
        builds[capacity] = (exe, cmd, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    for _, cmd, proc in builds.values():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{err}"
    return {capacity: exe for capacity, (exe, _, _) in builds.items()}


@pytest.fixture(scope="module")
def harness(harnesses: dict[int, Path]) -> Path:
    return harnesses[64]


def run(harness: Path, *args: str, data: bytes) -> bytes:
    proc = subprocess.run([str(harness), *args], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def outputs(raw: bytes) -> list[bytes]:
    """The harness's answers, one per input line: a framed line or ``!status``."""
    assert raw.endswith(b"\n")
    return [piece + b"\n" for piece in raw[:-1].split(b"\n")]


# ------------------------------------------------------------- generators


def rand_node(rng: random.Random) -> str:
    return "".join(rng.choice(NODE_CHARS) for _ in range(rng.choice([1, 2, 6, rng.randint(1, 32), 32])))


def rand_ident(rng: random.Random, max_len: int) -> str:
    n = rng.randint(1, max_len)
    return rng.choice(KEY_FIRST) + "".join(rng.choice(KEY_REST) for _ in range(n - 1))


def rand_key(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return f"{rng.choice(SENSOR_KINDS)}{rng.randint(0, 12)}"
    return rand_ident(rng, 16)


def rand_seq(rng: random.Random) -> int:
    return rng.choice([0, 1, rng.randint(0, 1000), rng.randint(0, 2**32 - 1), 2**32 - 1])


def rand_text(rng: random.Random, max_len: int = 20) -> str:
    return "".join(rng.choice(TEXT_CHARS) for _ in range(rng.randint(1, max_len)))


def rand_double(rng: random.Random) -> float:
    """Sensor-like doubles, with plenty of exact and near ties at the third decimal."""
    pick = rng.randrange(8)
    if pick == 0:  # DS18B20 steps (1/16 degC) and the library's 1/128: exact binary ties
        return rng.randint(-55 * 128, 125 * 128) / rng.choice([16, 128])
    if pick == 1:  # half a thousandth, as close as a double gets: not a tie in binary
        return (rng.randint(-(10**7), 10**7) + 0.5) / 1000
    if pick == 2:  # what a float32 sensor library hands over
        return struct.unpack("<f", struct.pack("<f", rng.uniform(-100.0, 70000.0)))[0]
    if pick == 3:  # 2^-n steps
        return rng.randint(-(2**20), 2**20) / 2 ** rng.randint(0, 12)
    if pick == 4:
        return rng.uniform(-1e-3, 1e-3)
    if pick == 5:
        return float(rng.randint(-100000, 100000))
    if pick == 6:
        return -rng.uniform(0, 2e6)
    return rng.uniform(0, 2e6)


def rhe_milli(value: float | Fraction) -> int:
    """Exact value in thousandths, rounded half to even (Fraction's round())."""
    return round(Fraction(value) * 1000)


# ------------------------------------------------------------------ (a) CRC


def test_crc_check_value_and_random_bytes(harness: Path) -> None:
    rng = random.Random(1)
    cases = [b"123456789", b"", b"$", bytes(range(256))]
    cases += [rng.randbytes(rng.choice([1, 2, 9, rng.randint(0, 300)])) for _ in range(3000)]
    raw = run(harness, "crc", data=b"".join(c.hex().encode() + b"\n" for c in cases))
    got = [int(line, 16) for line in raw.decode().split()]
    assert got[0] == 0x29B1 == crc16_ccitt_false(b"123456789")
    assert got[1] == 0xFFFF
    assert got == [crc16_ccitt_false(c) for c in cases]


# -------------------------------------------------------------- (b) numbers


def test_milli_formatter_prints_what_format_number_prints(harness: Path) -> None:
    rng = random.Random(2)
    edges = [0, 1, -1, 5, 10, 100, 999, 1000, 1001, 1010, 1100, -1000, -999, 14062, 14500, 412000]
    edges += [INT32_MAX, -INT32_MAX - 1, 2147483000, -2147483000, 1_000_000, -500]
    cases = edges + [rng.randint(-(2**31), INT32_MAX) for _ in range(3000)]
    cases += [rng.randint(-100000, 100000) for _ in range(2000)]
    raw = run(harness, "format", data="".join(f"m {m}\n" for m in cases).encode())
    got = raw.decode().splitlines()
    for m, text in zip(cases, got, strict=True):
        assert text == format_number(m / 1000), m
        assert NUMBER_RE.fullmatch(text), text
        assert float(text) == m / 1000
    assert got[:4] == ["0", "0.001", "-0.001", "0.005"]


def test_double_rounds_half_to_even_like_format_number(harness: Path) -> None:
    rng = random.Random(3)
    cases = [0.0625, 0.1875, 14.0625, -14.0625, 2.5625, 0.0005, 1.0005, 2.675, -0.0004, 9.9996, 0.0]
    cases += [-0.0, 5e-324, 1e-300, 2147483.647, 2147483.6474, 2147483.6475, 2147483.648, -2147483.6475]
    cases += [2.0**22, 4194303.9, 1e300, -1e300, math.inf, -math.inf, math.nan, 85.0, -127.0]
    cases += [rand_double(rng) for _ in range(6000)]
    raw = run(harness, "format", data="".join(f"f {v.hex()}\n" for v in cases).encode())
    got = raw.decode().splitlines()
    refused = 0
    for v, text in zip(cases, got, strict=True):
        if not math.isfinite(v) or abs(rhe_milli(v)) > INT32_MAX:
            assert text == "!range", v
            refused += 1
        else:
            assert text == format_number(v), (v, v.hex())
    assert got[:4] == ["0.062", "0.188", "14.062", "-14.062"]  # ties go to even, as in Python
    assert refused >= 8


def test_ratio_rounds_the_exact_quotient(harness: Path) -> None:
    rng = random.Random(4)
    cases = [(1, 2000, "0"), (3, 2000, "0.002"), (1800, 128, "14.062"), (-1800, 128, "-14.062")]
    cases += [(1, 0, "!range"), (INT32_MAX, 1, "!range"), (-7040, 128, "-55")]
    pairs = [(n, d) for n, d, _ in cases]
    for _ in range(4000):
        den = rng.choice([1, 2, 16, 128, 1024, 65535, 1000, 3, 7, rng.randint(1, 70000)])
        den *= rng.choice([1, -1])
        pairs.append((rng.randint(-(2**31), INT32_MAX) if rng.random() < 0.3 else rng.randint(-(10**6), 10**6), den))
    raw = run(harness, "format", data="".join(f"r {n} {d}\n" for n, d in pairs).encode())
    got = raw.decode().splitlines()
    for (n, d, want), text in zip(cases, got[: len(cases)], strict=True):
        assert text == want, (n, d)
    dyadic_checked = 0
    for (n, d), text in zip(pairs, got, strict=True):
        if d == 0 or abs(rhe_milli(Fraction(n, d))) > INT32_MAX:
            assert text == "!range", (n, d)
            continue
        assert text == format_number(rhe_milli(Fraction(n, d)) / 1000), (n, d)
        exact = Fraction(n, d) * 1000
        is_tie = exact.denominator == 2
        if abs(d) & (abs(d) - 1) == 0 or (not is_tie and abs(d) <= 70000 and abs(n / d) < 1e6):
            assert text == format_number(n / d), (n, d)  # what Python would send for n / d
            dyadic_checked += 1
    assert dyadic_checked > 2000


# ------------------------------------------------------------ (b) encoding


def data_case(rng: random.Random) -> tuple[str, str, int, dict[str, Value], dict[str, Value]]:
    """A data frame spec for the harness, its arguments, and the values parse_line should give."""
    node, seq = rand_node(rng), rand_seq(rng)
    values: dict[str, Value] = {}
    parsed: dict[str, Value] = {}
    tokens = []
    for _ in range(rng.choice([0, 1, 3, 7, rng.randint(0, 24)])):
        key = rand_key(rng)
        if key in values:
            continue
        pick = rng.random()
        value: Value
        if pick < 0.25:
            i = rng.choice([rng.randint(-(2**31), INT32_MAX), rng.randint(0, 1023), rng.randint(3000, 4300)])
            token, value, parsed[key] = f"i:{i}", i, float(i)
        elif pick < 0.5:
            m = rng.choice([rng.randint(-(2**31), INT32_MAX), rng.randint(-55000, 125000)])
            token, value, parsed[key] = f"m:{m}", m / 1000, m / 1000
        elif pick < 0.75:
            v = rand_double(rng)
            if abs(v) >= 2e6:
                v /= 8
            token, value, parsed[key] = f"f:{v.hex()}", v, float(format_number(v))
        elif pick < 0.85:
            token, value = rng.choice([("na", SensorError()), ("na:unknown", SensorError("unknown"))])
            parsed[key] = SensorError()
        else:
            code = rand_ident(rng, 12)
            token, value, parsed[key] = f"na:{code}", SensorError(code), SensorError(code)
        values[key] = value
        tokens.append(f"{key}={token}")
    spec = " ".join(["D", node, str(seq), *tokens])
    return spec, node, seq, values, parsed


def test_data_and_replay_frames_are_byte_identical_to_encode_data(harness: Path) -> None:
    rng = random.Random(5)
    cases = [data_case(rng) for _ in range(2500)]
    specs = [c[0] for c in cases] + ["R" + c[0][1:] for c in cases]  # each as GD, then as GR
    raw = run(harness, "encode", data="".join(spec + "\n" for spec in specs).encode())
    tally = Counter()
    for i, got in enumerate(outputs(raw)):
        spec, node, seq, values, parsed = cases[i % len(cases)]
        replay = i >= len(cases)
        try:
            want = encode_data(node, seq, values, replay=replay)
        except ValueError:  # over MAX_LINE: the C builder refuses the whole line too
            assert got == b"!full\n", spec
            tally["full"] += 1
            continue
        assert got == want, (replay, spec)
        assert parse_line(got) == DataFrame(node, seq, parsed, replay=replay), spec
        tally["GR" if replay else "GD"] += 1
        tally["max"] = max(tally["max"], len(got))
    assert tally["GD"] == tally["GR"] > 1500 and tally["full"] > 100
    assert tally["max"] >= MAX_LINE - 20  # lines near the limit were built, not only short ones


def test_hello_frames_are_byte_identical_to_encode_hello(harness: Path) -> None:
    rng = random.Random(6)
    lines, cases = [], []
    for _ in range(1500):
        node, seq, fw = rand_node(rng), rand_seq(rng), rand_text(rng)
        sensors = tuple(dict.fromkeys(rand_key(rng) for _ in range(rng.choice([1, 7, rng.randint(1, 40)]))))
        interval = rng.choice([300, 1, 86400, rng.randint(0, 2**32 - 1)])
        extra = {}
        for _ in range(rng.choice([0, 0, 1, 3])):
            key = rand_ident(rng, 16)
            if key not in ("fw", "sensors", "interval_s"):
                extra[key] = rand_text(rng, 12)
        pairs = " ".join(f"{k}={v}" for k, v in extra.items())
        lines.append(f"H {node} {seq} {fw} {';'.join(sensors)} {interval} {pairs}".rstrip())
        cases.append((node, seq, fw, sensors, interval, extra))
    raw = run(harness, "encode", data="".join(line + "\n" for line in lines).encode())
    tally = Counter()
    for case, got in zip(cases, outputs(raw), strict=True):
        try:
            want = encode_hello(*case)
        except ValueError:  # over MAX_LINE
            assert got == b"!full\n", case
            tally["full"] += 1
            continue
        assert got == want, case
        assert parse_line(got) == HelloFrame(*case), case
        tally["ok"] += 1
    assert tally["ok"] > 1000 and tally["full"] > 20


def test_ack_frames_are_byte_identical_to_encode_ack(harness: Path) -> None:
    rng = random.Random(7)
    lines, cases = [], []
    for _ in range(2000):
        node, seq = rand_node(rng), rand_seq(rng)
        if rng.random() < 0.4:
            lines.append(f"A {node} {seq} OK")
            cases.append((node, seq, True, ""))
        else:
            reason = rng.choice(["unknown_command", "bad_value", rand_ident(rng, 32)])
            lines.append(f"A {node} {seq} ERR {reason}")
            cases.append((node, seq, False, reason))
    raw = run(harness, "encode", data="".join(line + "\n" for line in lines).encode())
    for case, got in zip(cases, outputs(raw), strict=True):
        assert got == encode_ack(*case), case
        assert parse_line(got) == AckFrame(*case), case


def test_builder_refuses_what_the_parser_would_reject(harness: Path) -> None:
    """Bad node ids, keys, codes and reasons: C refuses to build them; Python either
    refuses too or (codes) builds a line its own parser rejects."""
    bad_nodes = ["~", "x" * 33, "bed.3", "bed,3", "b$d", "bed*", "bed=3", "b\u00e9d"]
    bad_keys = ["Sm0", "0sm", "s-m", "x" * 17, "_a", "a.b", "a:b"]
    bad_codes = ["NC", "1x", "x" * 13, "~", "n-c", "a.b"]
    bad_reasons = ["Bad", "~", "x" * 33, "bad-value", "9"]
    specs: list[tuple[str, str]] = []
    for node in bad_nodes:
        specs.append((f"D {node} 1 sm0=i:1", "arg"))
        specs.append((f"R {node} 1 sm0=i:1", "arg"))
        specs.append((f"H {node} 0 1.0 sm0 300", "arg"))
        specs.append((f"A {node} 1 OK", "arg"))
        with pytest.raises(ValueError):
            encode_data(node.replace("~", ""), 1, {"sm0": 1})
    for key in bad_keys:
        specs.append((f"D n 1 sm0=i:1 {key}=i:2", "arg"))
        specs.append((f"H n 0 1.0 sm0;{key} 300", "arg"))
        with pytest.raises(ValueError):
            encode_data("n", 1, {key: 2})
    for code in bad_codes:
        specs.append((f"D n 1 sm0=na:{code}", "arg"))
        # Python's encoder refuses the same codes the C builder refuses.
        with pytest.raises(ValueError):
            encode_data("n", 1, {"sm0": SensorError(code.replace("~", ""))})
    for reason in bad_reasons:
        specs.append((f"A n 1 ERR {reason}", "arg"))
        with pytest.raises(ValueError):
            encode_ack("n", 1, False, reason.replace("~", ""))
    specs += [
        ("D n 1 sm0=i:1 sm0=i:2", "duplicate"),  # a dict cannot hold it; parse_line calls it duplicate_key
        ("H n 0 1.0 ~ 300", "arg"),  # no sensors: "sensors=" would be an empty value
        ("H n 0 ~ sm0 300", "arg"),
        ("H n 0 1.0 sm0 300 fw=2", "duplicate"),
        (f"D n 1 sm0=f:{math.inf.hex()}", "range"),
        (f"D n 1 sm0=f:{math.nan.hex()}", "range"),
        (f"D n 1 sm0=f:{(3e6).hex()}", "range"),
    ]
    raw = run(harness, "encode", data="".join(s + "\n" for s, _ in specs).encode())
    for (spec, status), got in zip(specs, outputs(raw), strict=True):
        assert got == f"!{status}\n".encode(), spec
    for line in (b"$GD,1,n,1,sm0=1,sm0=2*", b"$GH,1,n,0,fw=1.0,sensors=,interval_s=300*"):
        body = line[1:-1]
        with pytest.raises(ProtocolError):
            parse_line(line + f"{crc16_ccitt_false(body):04X}\r\n".encode())


# -------------------------------------------------------------- (c) decoding


def node_answer(cmd: CommandFrame) -> str:
    """What SimNode.receive answers: the rules gc_command_interval implements."""
    if cmd.verb != "SET" or set(cmd.args) != {"interval_s"}:
        return "err:unknown_command"
    text = cmd.args["interval_s"]
    if not text.isdigit() or not 1 <= int(text) <= 86_400:
        return "err:bad_value"
    return f"ok:{int(text)}"


def describe(item: object) -> str:
    """A Python decoder result in the harness's event syntax."""
    if isinstance(item, CommandFrame):
        interval = item.args.get("interval_s")
        shown = "-" if interval is None else "=" + interval
        fields = [item.node_id, str(item.seq), item.verb, str(len(item.args)), shown]
        return "\t".join(["cmd", *fields, node_answer(item)])
    if isinstance(item, StoredFrame):
        return f"stored\t{item.node_id}\t{item.seq}"
    if isinstance(item, Reject):
        if item.reason in BODY_REASONS:
            text = item.line.rstrip(b"\r\n")
            kind = text[1 : text.rfind(b"*")].split(b",")[0]
            if kind in NODE_TO_HOST:
                return "other\t" + kind.decode()
        return item.reason.value
    assert isinstance(item, DataFrame | HelloFrame | AckFrame)
    return "other\t" + item.kind.value


def py_events(stream: bytes, rng: random.Random) -> list[str]:
    """FrameDecoder's verdicts, the stream fed in random chunks."""
    decoder = FrameDecoder()
    items: list[object] = []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 7, 64, len(stream)])
        items += decoder.feed(stream[pos : pos + step])
        pos += step
    items += decoder.flush()
    return [describe(item) for item in items]


def c_events(harness: Path, streams: list[bytes]) -> list[list[str]]:
    raw = run(harness, "streams", data=b"".join(s.hex().encode() + b"\n" for s in streams))
    chunks = raw.decode().split("end\n")
    assert chunks[-1] == ""
    result = [chunk.splitlines() for chunk in chunks[:-1]]
    assert len(result) == len(streams)
    return result


def frame(body: bytes, ending: bytes = b"\r\n") -> bytes:
    return b"$" + body + b"*" + f"{crc16_ccitt_false(body):04X}".encode() + ending


def rand_command(rng: random.Random, node: str | None = None) -> tuple[str, int, str, dict[str, str]]:
    node = node or rand_node(rng)
    verb = "SET" if rng.random() < 0.75 else "".join(rng.choices(string.ascii_uppercase, k=rng.randint(2, 8)))
    args: dict[str, str] = {}
    if rng.random() < 0.9:
        args["interval_s"] = (
            str(rng.randint(1, 86400))
            if rng.random() < 0.4
            else rng.choice(
                [
                    "600",
                    "0",
                    "86400",
                    "86401",
                    "007",
                    "99999999999",
                    "-5",
                    "6=0",
                    "1.5",
                    "abc",
                    "00000000000000000000060",
                    rand_text(rng, 8),
                ]
            )
        )
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        args[rand_ident(rng, 16)] = rand_text(rng, 10)
    if rng.random() < 0.3:
        args = dict(reversed(list(args.items())))
    return node, rand_seq(rng), verb, args


def rand_host_line(rng: random.Random, node: str | None = None) -> bytes:
    """A line the host sends a node: a command, or (a third of the time) a GK."""
    if rng.random() < 1 / 3:
        return encode_stored(node or rand_node(rng), rand_seq(rng))
    while True:
        try:
            return encode_command(*rand_command(rng, node))
        except ValueError:  # over MAX_LINE
            continue


def corruptions(rng: random.Random, line: bytes, other: bytes) -> list[tuple[str, bytes]]:
    """Ways a host->node line goes wrong on the wire, each as one independent stream."""
    flip = bytearray(line)
    pos = rng.randrange(len(line))
    flip[pos] ^= rng.randint(1, 255)
    star = line.rindex(b"*")
    cut = rng.randint(1, len(line) - 1)
    in_body = rng.randint(1, star)
    garbage = rng.randbytes(rng.randint(1, 40))
    if rng.random() < 0.7:
        garbage = garbage.replace(b"$", b"#")
    return [
        ("intact", line),
        ("flip", bytes(flip)),
        ("hex_case", line[: star + 1] + line[star + 1 : star + 5].lower() + line[star + 5 :]),
        ("truncated_eof", line[:cut]),
        ("truncated_next", line[:cut] + other),
        ("garbage_before", garbage + line),
        ("bare_lf", line.replace(b"\r\n", b"\n")),
        ("extra_cr", line.replace(b"\r\n", b"\r\r\r\n")),
        ("inner_cr", line[:in_body] + b"\r" + line[in_body:]),  # before "\r\n" it would be allowed
        ("noise_between", line + rng.randbytes(12).replace(b"$", b"!") + b"\r\n" + other),
    ]


def over_long(rng: random.Random, total: int) -> bytes:
    """A correctly framed command exactly ``total`` bytes long, '$' to '\\n'."""
    ending = rng.choice([b"\r\n", b"\n", b"\r\r\n"])
    head = f"GC,{rand_node(rng)},{rand_seq(rng)},SET,interval_s=600,pad=".encode()
    pad = total - (1 + len(head) + 5 + len(ending))
    line = frame(head + b"x" * pad, ending)
    assert len(line) == total
    return line


def test_c_receiver_agrees_with_frame_decoder_on_every_stream(harness: Path) -> None:
    rng = random.Random(8)
    kinds: list[str] = []
    streams: list[bytes] = []
    originals: list[CommandFrame | StoredFrame | None] = []
    for _ in range(600):
        line = rand_host_line(rng)
        other = rand_host_line(rng)
        original = parse_line(line)
        assert isinstance(original, CommandFrame | StoredFrame)
        for kind, stream in corruptions(rng, line, other):
            kinds.append(kind)
            streams.append(stream)
            originals.append(original)
    for total in [*range(250, 262), *(rng.randint(262, 600) for _ in range(20))]:
        kinds.append("long")
        streams.append(over_long(rng, total))
        originals.append(parse_line(streams[-1]) if total <= MAX_LINE else None)
    for _ in range(300):  # fuzz: framing bytes sprinkled into random bytes
        pieces = [rng.randbytes(rng.randint(0, 30)) for _ in range(6)]
        kinds.append("fuzz")
        streams.append(b"".join(p + rng.choice([b"$", b"*", b"\n", b"\r\n", b"$GC,", b""]) for p in pieces))
        originals.append(None)
    streams.append(
        frame(b"GD,1,n,1,sm0=1")
        + frame(b"GR,1,n,1,sm0=1")
        + frame(b"GH,1,n")
        + frame(b"GA,n,1,OK")
        + frame(b"GX,n,1")
        + frame(b"GK,n,1")
    )
    kinds.append("other_types")
    originals.append(None)

    got = c_events(harness, streams)
    tally: Counter[tuple[str, str]] = Counter()
    for kind, stream, c_side, original in zip(kinds, streams, got, originals, strict=True):
        want = py_events(stream, rng)
        assert c_side == want, (kind, stream)
        accepted = [e for e in want if e.startswith(("cmd\t", "stored\t"))]
        tally[kind, "accepted" if accepted else "rejected"] += 1
        if accepted and isinstance(original, StoredFrame):
            tally[kind, "stored"] += 1
        if kind in ("intact", "hex_case", "bare_lf", "extra_cr", "garbage_before"):
            assert accepted and accepted[0] == describe(original), (kind, stream)
        if kind == "flip" and accepted:
            # The CRC lets through no change to the body: only the hex digits' case,
            # or the '\r' turned into an early '\n', leave the command intact.
            assert accepted == [describe(original)], stream
        if kind == "long":
            assert want == (["too_long"] if len(stream) > MAX_LINE else [describe(original)]), len(stream)
    assert tally["flip", "rejected"] > 500
    assert tally["truncated_eof", "accepted"] == 0
    assert tally["inner_cr", "accepted"] == 0
    assert tally["intact", "stored"] > 150 and tally["garbage_before", "stored"] > 150
    assert got[-1] == ["other\tGD", "other\tGR", "other\tGH", "other\tGA", "unknown_type", "stored\tn\t1"]


# One body per rule of parse_body for a GC line, and what a node makes of it.
RULES: list[tuple[bytes, str]] = [
    (b"GC,n,1,SET,interval_s=600", "cmd\tn\t1\tSET\t1\t=600\tok:600"),
    (b"GC,n,1,SET", "cmd\tn\t1\tSET\t0\t-\terr:unknown_command"),
    (b"GC,n,1,SET,interval_s=600,x=1", "cmd\tn\t1\tSET\t2\t=600\terr:unknown_command"),
    (b"GC,n,1,RESET,interval_s=600", "cmd\tn\t1\tRESET\t1\t=600\terr:unknown_command"),
    (b"GC,n,0000000001,SET,interval_s=0086400", "cmd\tn\t1\tSET\t1\t=0086400\tok:86400"),
    (b"GC,n,4294967295,SET,interval_s=86401", "cmd\tn\t4294967295\tSET\t1\t=86401\terr:bad_value"),
    (b"GC,n,1,SET,interval_s=0", "cmd\tn\t1\tSET\t1\t=0\terr:bad_value"),
    (b"GC,n,1,SET,interval_s=6=0", "cmd\tn\t1\tSET\t1\t=6=0\terr:bad_value"),
    (b"GC,n,1,SET,interval_s=60 ", "cmd\tn\t1\tSET\t1\t=60 \terr:bad_value"),
    (b"GC,n,1,SET,interval_s=*", "cmd\tn\t1\tSET\t1\t=*\terr:bad_value"),  # the last '*' is the trailer's
    (b"GC,n,1,SET,abcdefghijklmnop=1", "cmd\tn\t1\tSET\t1\t-\terr:unknown_command"),
    (b"GC,n,1,SET,abcdefghijklmnopq=1", "bad_field"),  # a 17-character key
    (b"GC,n,1,SET,interval_s=", "bad_field"),
    (b"GC,n,1,SET,=5", "bad_field"),
    (b"GC,n,1,SET,interval_s", "bad_field"),
    (b"GC,n,1,SET,", "bad_field"),
    (b"GC,n,1,SET,,", "bad_field"),
    (b"GC,n,1,SET,a=1,B=2", "bad_field"),
    (b"GC,n,1,SET,a=1,a=2", "duplicate_key"),
    (b"GC,n,1,SET,interval_s=1,interval_s=1", "duplicate_key"),
    (b"GC,n,1,SET,a=1,a=2,b", "duplicate_key"),  # pairs are checked in order
    (b"GC,n,1,SET,a=1,a=,a=2", "bad_field"),
    (b"GC,n,1,S", "bad_field"),
    (b"GC,n,1,SETTINGSX", "bad_field"),
    (b"GC,n,1,set", "bad_field"),
    (b"GC,n,1", "bad_field"),
    (b"GC", "bad_field"),
    (b"GC,,1,SET", "bad_node_id"),
    (b"GC," + b"x" * 33 + b",1,SET", "bad_node_id"),
    (b"GC,n.1,1,SET", "bad_node_id"),
    (b"GC,n,,SET", "bad_seq"),
    (b"GC,n,4294967296,SET", "bad_seq"),
    (b"GC,n,00000000001,SET", "bad_seq"),
    (b"GC,n,-1,SET", "bad_seq"),
    (b"GC,n,+1,SET", "bad_seq"),
    (b"GC,,x,SET", "bad_node_id"),  # node before seq
    (b"", "unknown_type"),
    (b"gc,n,1,SET", "unknown_type"),
    (b"GCX,n,1,SET", "unknown_type"),
    (b"GD", "other\tGD"),
    (b"GA,n,1,OK", "other\tGA"),
    (b"GR", "other\tGR"),
    (b"GR,1,n,1,sm0=1", "other\tGR"),
    (b"GR,2,n,1,sm0=1", "other\tGR"),  # bad_proto in Python: a node does not check a GR
    # GK takes exactly a node and a seq: the field count first, then node, then seq.
    (b"GK,n,1", "stored\tn\t1"),
    (b"GK,bed3-a,0", "stored\tbed3-a\t0"),
    (b"GK,n,0000000001", "stored\tn\t1"),
    (b"GK,n,4294967295", "stored\tn\t4294967295"),
    (b"GK," + b"x" * 32 + b",7", "stored\t" + "x" * 32 + "\t7"),
    (b"GK,n,4294967296", "bad_seq"),
    (b"GK,n,00000000001", "bad_seq"),
    (b"GK,n,", "bad_seq"),
    (b"GK,n,-1", "bad_seq"),
    (b"GK,n,+1", "bad_seq"),
    (b"GK,n,1 ", "bad_seq"),
    (b"GK,n,0x1", "bad_seq"),
    (b"GK,,1", "bad_node_id"),
    (b"GK,n.1,1", "bad_node_id"),
    (b"GK," + b"x" * 33 + b",1", "bad_node_id"),
    (b"GK,,x", "bad_node_id"),  # node before seq
    (b"GK", "bad_field"),
    (b"GK,n", "bad_field"),
    (b"GK,n,1,", "bad_field"),
    (b"GK,n,1,2", "bad_field"),
    (b"GK,,", "bad_node_id"),
    (b"GK,,,", "bad_field"),  # the field count before anything else
    (b"GK,n.1,x,y", "bad_field"),
    (b"GK,n,1,OK", "bad_field"),
    (b"gk,n,1", "unknown_type"),
    (b"GKX,n,1", "unknown_type"),
    (b"GK ,n,1", "unknown_type"),
]


def test_c_parser_follows_each_parse_rule(harness: Path) -> None:
    rng = random.Random(11)
    streams = [frame(body) for body, _ in RULES]
    streams += [
        b"$" + b"x" * 300,  # over-long, then the stream ends: FrameDecoder.flush says truncated
        b"$" + b"x" * 300 + frame(b"GC,n,1,SET"),
        b"$GC,n,1,SET*XXXX\r\n",
        b"$GC,n,1,SET*12345\r\n",
        b"$GC,n,1,SET*123\r\n",
        b"$GC,n,1,SET\r\n",
        b"$GC,n,1,S\xc9T*0000\r\n",
        b"$GC,n,1,S\x7fT*0000\r\n",
        b"\t \r\n\x0b\x0c$",
        b"\xff\r\n \n",
    ]
    wanted = [[want] for _, want in RULES]
    wanted += [
        ["truncated"],
        ["too_long", "cmd\tn\t1\tSET\t0\t-\terr:unknown_command"],
        ["no_checksum"],
        ["no_checksum"],
        ["no_checksum"],
        ["no_checksum"],
        ["not_ascii"],
        ["not_ascii"],
        ["truncated"],  # white space is not noise; a lone '$' at the end is a cut line
        ["noise"],
    ]
    got = c_events(harness, streams)
    for stream, c_side, want in zip(streams, got, wanted, strict=True):
        assert py_events(stream, rng) == want, stream  # the rule is Python's
        assert c_side == want, stream


def test_c_receiver_on_one_long_stream_in_raw_mode(harness: Path) -> None:
    """The same code fed from one unbroken stream: state carries across lines."""
    rng = random.Random(9)
    parts = []
    for _ in range(1500):
        line = rand_host_line(rng)
        pick = rng.random()
        if pick < 0.6:
            parts.append(line)
        elif pick < 0.7:
            parts.append(line[: rng.randint(1, len(line) - 1)])
        elif pick < 0.8:
            flip = bytearray(line)
            flip[rng.randrange(len(line))] ^= rng.randint(1, 255)
            parts.append(bytes(flip))
        elif pick < 0.9:
            parts.append(rng.randbytes(rng.randint(1, 50)))
        else:
            parts.append(over_long(rng, rng.randint(240, 400)))
    stream = b"".join(parts)
    want = py_events(stream, rng)
    got = run(harness, "decode", data=stream).decode().splitlines()
    assert got == want
    counts = Counter(e.split("\t")[0] for e in got)
    assert counts["cmd"] > 500 and counts["stored"] > 250
    assert counts["too_long"] > 50 and counts["truncated"] > 50


def test_c_node_acks_exactly_as_the_simulated_node(harness: Path) -> None:
    rng = random.Random(10)
    me = "bed3-a"
    parts = []
    for _ in range(800):
        node = me if rng.random() < 0.7 else rand_node(rng)
        try:
            line = encode_command(*rand_command(rng, node))
        except ValueError:
            continue
        if rng.random() < 0.1:
            line = line[: rng.randint(1, len(line) - 1)]
        parts.append(line)
    stream = b"".join(parts)
    sim = SimNode(me, interval_s=300, faults=Faults(boot_garbage=False))
    want = b""
    script = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 100)
        want += b"".join(e.data for e in sim.receive(stream[pos : pos + step]))
        script.append(f"R {stream[pos : pos + step].hex()}\n")
        pos += step
    raw = run(harness, "node", me, "300", data="".join(script).encode())
    acks, _, tail = raw.rpartition(b"#interval ")
    assert acks == want
    assert int(tail) == sim.interval_s
    verdicts = Counter(re.findall(rb",(OK|ERR,[a-z_]+)\*", acks))
    assert verdicts[b"OK"] > 100 and verdicts[b"ERR,bad_value"] > 50 and verdicts[b"ERR,unknown_command"] > 50


# ------------------------------------------------------ (d) store and forward


def reading_spec(line: bytes) -> str:
    """The harness's "D" line for the reading a (GD or GR) line carries."""
    frame = parse_line(line)
    assert isinstance(frame, DataFrame) and tuple(frame.values) == SENSORS
    tokens = []
    for value in frame.values.values():
        if isinstance(value, SensorError):
            tokens.append("na" if value.code == "unknown" else f"na:{value.code}")
        elif isinstance(value, int):
            tokens.append(f"i:{value}")
        else:
            tokens.append(f"f:{value.hex()}")
    return "D " + " ".join(tokens)


def kept_line(sim: SimNode) -> bytes:
    return ("#kept" + "".join(f" {seq}" for seq, _ in sim.unstored) + "\n").encode()


def stored_lines(rng: random.Random, sim: SimNode) -> bytes:
    """What a host sends about stored readings: mostly good GKs, some not for this node or not valid."""
    me, kept = sim.node_id, [seq for seq, _ in sim.unstored]
    seq = rng.choice(
        [
            rng.choice(kept) if kept else sim.seq,  # part of what is kept
            sim.seq,  # all of it
            max(0, (kept[0] if kept else sim.seq) - rng.randint(1, 5)),  # nothing (already dropped)
            sim.seq + rng.randint(1, 3),  # past the newest: everything
            0,
        ]
    )
    pick = rng.random()
    if pick < 0.7:
        return encode_stored(me, seq)
    if pick < 0.8:  # another node's: the store is untouched
        return encode_stored(rng.choice(["bed3-b", "bed3", "BED3-A", rand_node(rng)]), seq)
    if pick < 0.9:  # a GK broken on the wire: a flipped byte, or cut short by the next line
        line = bytearray(encode_stored(me, seq))
        if rng.random() < 0.5:
            line[rng.randrange(len(line))] ^= rng.randint(1, 255)
            return bytes(line)
        return bytes(line[: rng.randint(1, len(line) - 1)])
    # Well framed, wrong shape: parse_line rejects them, so the node must ignore them.
    return frame(rng.choice([f"GK,{me},{seq},1", f"GK,{me}", f"GK,{me},-{seq}", f"GK,{me},{seq}x"]).encode())


def store_scenario(rng: random.Random, capacity: int, steps: int) -> tuple[str, bytes, Counter[str]]:
    """A node's life, run on SimNode: readings sent while the host is there and while it is
    away, GKs, commands, the host coming back, reboots. Returns the harness script for the
    same life, what SimNode sent (what the C node must send), and a tally."""
    me = "bed3-a"
    sim = SimNode(me, seed=rng.randrange(1000), faults=Faults(boot_garbage=False, sentinel=0.05, failed=0.1))
    sim.unstored = deque(maxlen=capacity)  # the firmware's store, not the simulator's 2,000
    sim.boot()
    script: list[str] = []
    want: list[bytes] = []
    tally: Counter[str] = Counter()
    away = 0  # readings left to send before the host comes back

    def host_sends(data: bytes) -> None:
        pos = 0
        while pos < len(data):  # in chunks, as a port delivers them
            step = rng.randint(1, 60)
            want.extend(e.data for e in sim.receive(data[pos : pos + step]))
            script.append(f"R {data[pos : pos + step].hex()}")
            pos += step

    for _ in range(steps):
        pick = rng.random()
        if away or pick < 0.4:  # a reading (while away, only readings)
            before = len(sim.unstored)
            (emission,) = sim.tick()
            assert emission.sent is not None and emission.reading == (sim.boot_no, sim.seq)
            sim.sent(emission)
            tally["evicted"] += before == len(sim.unstored) == capacity
            script.append(reading_spec(emission.sent[1]))
            want.append(emission.data)
            if away:
                away -= 1
                if not away:  # the host is back: replay, then it says what it has stored
                    replays = [e.data for e in sim.replays()]
                    tally["replayed"] += len(replays)
                    script.append("P")
                    want.extend(replays)
                    if rng.random() < 0.8:
                        before = len(sim.unstored)
                        host_sends(encode_stored(me, max(0, sim.seq - rng.choice([0, 0, 1, 5]))))
                        tally["dropped"] += before - len(sim.unstored)
        elif pick < 0.65:
            before = len(sim.unstored)
            host_sends(b"".join(stored_lines(rng, sim) for _ in range(rng.choice([1, 1, 2, 3]))))
            tally["dropped"] += before - len(sim.unstored)
            tally["gk_kept_all"] += before == len(sim.unstored)
        elif pick < 0.75:
            host_sends(rand_host_line(rng, me if rng.random() < 0.8 else None))
        elif pick < 0.82:
            away = rng.choice([1, 3, capacity - 1, capacity, capacity + rng.randint(1, 20), rng.randint(1, 100)])
        elif pick < 0.88:  # the host comes back without having been away long
            replays = [e.data for e in sim.replays()]
            tally["replayed"] += len(replays)
            script.append("P")
            want.extend(replays)
        elif pick < 0.9:
            sim.boot()
            script.append("B")
        else:
            script.append("K")
            want.append(kept_line(sim))
    script.append("K")
    want.append(kept_line(sim))
    want.append(f"#interval {sim.interval_s}\n".encode())
    return "".join(line + "\n" for line in script), b"".join(want), tally


@pytest.mark.parametrize("capacity", [64, 8])
def test_c_node_store_and_forward_matches_the_simulated_node(harnesses: dict[int, Path], capacity: int) -> None:
    """The same readings, GKs, commands, returns of the host and reboots, on SimNode and on
    the C node logic: the same GD lines, acks and GR replays, byte for byte, and the same
    readings kept in between."""
    rng = random.Random(20 + capacity)
    script, want, tally = store_scenario(rng, capacity, 2500 if capacity == 64 else 1500)
    got = run(harnesses[capacity], "node", "bed3-a", "300", data=script.encode())
    got_lines, want_lines = got.splitlines(keepends=True), want.splitlines(keepends=True)
    for i, (g, w) in enumerate(zip(got_lines, want_lines, strict=False)):
        assert g == w, f"line {i}: {g!r} != {w!r}"
    assert len(got_lines) == len(want_lines)
    kinds = Counter(line[:3] for line in got_lines)
    assert kinds[b"$GD"] > 500 and kinds[b"$GA"] > 20 and kinds[b"#ke"] > 20
    assert kinds[b"$GR"] == tally["replayed"] > 10 * capacity
    assert tally["dropped"] > 200 and tally["gk_kept_all"] > 50 and tally["evicted"] > 30


def replay_line(seq: int, value: int) -> bytes:
    return encode_data("n", seq, {"sm0": value}, replay=True)


def test_c_replay_skips_what_a_gk_drops_on_the_way_and_stops_at_its_start(harnesses: dict[int, Path]) -> None:
    """One GR per pass of the sketch's loop, so GKs land in the middle of a replay."""
    script = [f"D i:{10 * seq}" for seq in range(1, 7)]
    script += ["S", "N", "R " + encode_stored("n", 3).hex(), "N", "D i:70", "N", "N", "N", "K"]
    script += ["S", "N", "R " + encode_stored("n", 100).hex(), "N", "K", "S", "N"]
    script += ["D i:80", "B", "S", "N", "D i:90", "K"]
    # A GK that drops the replay's last reading ends it, even with a newer one kept.
    script += ["D i:100", "D i:110", "S", "N", "D i:120", "R " + encode_stored("n", 3).hex(), "N", "K"]
    got = run(harnesses[64], "node", "n", "300", "sm0", data="".join(s + "\n" for s in script).encode())
    want = [encode_data("n", seq, {"sm0": 10 * seq}) for seq in range(1, 7)]
    want += [replay_line(1, 10), replay_line(4, 40)]  # 2 and 3 were stored before their turn
    want += [encode_data("n", 7, {"sm0": 70}), replay_line(5, 50), replay_line(6, 60)]
    want += [b"#none\n", b"#kept 4 5 6 7\n"]  # 7 went out as GD during the replay: not replayed
    want += [replay_line(4, 40), b"#none\n", b"#kept\n", b"#none\n"]  # a GK past the newest
    want += [encode_data("n", 8, {"sm0": 80}), b"#none\n", encode_data("n", 1, {"sm0": 90}), b"#kept 1\n"]
    want += [encode_data("n", 2, {"sm0": 100}), encode_data("n", 3, {"sm0": 110}), replay_line(1, 90)]
    want += [encode_data("n", 4, {"sm0": 120}), b"#none\n", b"#kept 4\n"]
    assert got == b"".join(want) + b"#interval 300\n"


def test_c_store_full_drops_the_oldest_even_during_a_replay(harnesses: dict[int, Path]) -> None:
    script = [f"D i:{seq}" for seq in range(1, 11)] + ["K", "S", "N"]
    script += [f"D i:{seq}" for seq in range(11, 14)] + ["K", "N", "N", "K"]
    got = run(harnesses[8], "node", "n", "300", "sm0", data="".join(s + "\n" for s in script).encode())
    want = [encode_data("n", seq, {"sm0": seq}) for seq in range(1, 11)]
    want += [b"#kept 3 4 5 6 7 8 9 10\n", replay_line(3, 3)]
    want += [encode_data("n", seq, {"sm0": seq}) for seq in range(11, 14)]
    want += [
        b"#kept 6 7 8 9 10 11 12 13\n",
        replay_line(6, 6),
        replay_line(7, 7),
        b"#kept 6 7 8 9 10 11 12 13\n",
    ]
    assert got == b"".join(want) + b"#interval 300\n"


def test_gc_frame_fits_an_avr(tmp_path: Path) -> None:
    """Built for the ATmega328P: clean under the 16-bit-int warnings, and the store of
    unstored readings at the RAM the README states (8 readings in 280 bytes)."""
    avr_gcc = shutil.which("avr-gcc")
    if avr_gcc is None:
        pytest.fail("avr-gcc is missing: run scripts/setup.sh (apt-get install gcc-avr avr-libc)")
    probe = tmp_path / "probe.c"
    probe.write_text(
        '#include "gc_frame.h"\n'
        "typedef char capacity_is_8[GC_UNSTORED_MAX == 8 ? 1 : -1];\n"
        "typedef char kept_is_33_bytes[sizeof(gc_kept) == 33 ? 1 : -1];\n"
        "typedef char store_is_280_bytes[sizeof(gc_store) == 280 ? 1 : -1];\n"
        "typedef char rx_and_line_are_525_bytes[sizeof(gc_rx) + sizeof(gc_line) == 525 ? 1 : -1];\n"
    )
    flags = [
        "-mmcu=atmega328p",
        "-std=c99",
        "-Os",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-Wconversion",
    ]
    for source in (FIRMWARE / "gc_frame.c", probe):
        proc = subprocess.run(
            [
                avr_gcc,
                *flags,
                "-I",
                str(FIRMWARE),
                "-c",
                str(source),
                "-o",
                str(tmp_path / f"{source.stem}.o"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr


def test_gc_frame_builds_clean_under_stricter_warnings(tmp_path: Path) -> None:
    """The firmware file alone, with the warnings that catch 16-bit-int and sign slips."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build gc_frame.c")
    extra = [
        "-pedantic",
        "-Wconversion",
        "-Wsign-conversion",
        "-Wshadow",
        "-Wcast-qual",
        "-Wstrict-prototypes",
    ]
    proc = subprocess.run(
        [gcc, *CFLAGS, *extra, "-c", str(FIRMWARE / "gc_frame.c"), "-o", str(tmp_path / "gc_frame.o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gc_frame.o").stat().st_size > 0
