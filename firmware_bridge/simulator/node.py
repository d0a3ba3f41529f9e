"""A simulated sensor node: protocol lines from a simulated bed, with faults. Pure.

Deterministic under a seed: the same seed, node id and call sequence give
the same bytes. Time is simulated time, passed in by the runner.

Faults (all off unless asked for, except garbage at boot, which every real
board prints):

=================  ==================================================================
``boot_garbage``   random bytes, as a bootloader at the wrong baud prints, before hello
``partial``        probability that a data line is cut short (a brown-out mid-line)
``bad_crc``        probability that a data line has a byte flipped on the wire
``sentinel``       probability of a sentinel value: DS18B20 85 or -127, ADC 0 or full scale, ranger 0
``failed``         probability that a sensor is reported failed, the protocol's way (``na:nc``)
``noise``          probability of a line of electrical noise between frames
``stuck_after``    after this many readings the moisture probe repeats its last raw value
``reboot_every``   reboot after this many readings: garbage, hello, seq back to 0
``unplug_every``   seconds of wall time between the port vanishing (the runner does it)
``unplug_for``     seconds the port stays away
=================  ==================================================================

Only intact data lines count as produced readings (:attr:`Emission.reading`),
so a test can compare what the node produced with what reached the broker.

Store and forward: the node keeps each reading it sent until the host says,
with a ``GK`` frame, that it stored it; when the host comes back after being
away, the node sends what is still unstored again as ``GR`` frames.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, fields

from firmware_bridge.line_protocol import (
    CommandFrame,
    FrameDecoder,
    SensorError,
    StoredFrame,
    Value,
    encode_ack,
    encode_data,
    encode_hello,
)
from firmware_bridge.simulator import physics

FIRMWARE_VERSION = "1.4.2-sim"
SENSORS = ("sm0", "st0", "at0", "rh0", "lx0", "tk0", "bt0")
ADC_MAX = 1023
UNSTORED_LINES = 2000  # an ESP32 holds this many easily; the AVR firmware holds fewer


@dataclass(frozen=True, slots=True)
class Faults:
    boot_garbage: bool = True
    partial: float = 0.0
    bad_crc: float = 0.0
    sentinel: float = 0.0
    failed: float = 0.0
    noise: float = 0.0
    stuck_after: int = 0
    reboot_every: int = 0
    unplug_every: float = 0.0
    unplug_for: float = 2.0

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """``"partial=0.01,bad_crc=0.01,reboot_every=500,boot_garbage=0"``."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, bool | float | int] = {}
        for item in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, text = item.partition("=")
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            try:
                if name == "boot_garbage":
                    values[name] = text.lower() not in ("0", "false", "no", "off") if sep else True
                elif name in ("stuck_after", "reboot_every"):
                    values[name] = int(text)
                else:
                    values[name] = float(text)
            except ValueError:
                raise ValueError(f"fault {name} needs a number, got {text!r}") from None
        for name in ("partial", "bad_crc", "sentinel", "failed", "noise"):
            if not 0.0 <= float(values.get(name, 0.0)) <= 1.0:
                raise ValueError(f"fault {name} is a probability, 0 to 1")
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Emission:
    """Bytes to write, and the reading they carry intact, if any: (boot, seq).

    ``sent`` is what the node keeps once the bytes are out, until the host
    says it stored them: the reading's seq and its line as it was meant to
    go (the node cannot know the wire corrupted it). ``hello`` is the boot
    a hello announces.
    """

    data: bytes
    reading: tuple[int, int] | None = None
    sent: tuple[int, bytes] | None = None
    hello: int | None = None


class SimNode:
    def __init__(
        self,
        node_id: str,
        *,
        seed: int = 1,
        interval_s: int = 300,
        faults: Faults | None = None,
        params: physics.BedParams | None = None,
        start_t_s: float = 1_767_225_600.0,  # 2026-01-01T00:00Z
    ) -> None:
        self.node_id = node_id
        self.interval_s = interval_s
        self.faults = faults or Faults()
        self.params = params or physics.BedParams()
        self.rng = random.Random(f"{seed}:{node_id}")
        self.bed = physics.start_state(self.params, start_t_s)
        # Beds differ a little, as real ones do.
        self.bed = physics.BedState(self.bed.t_s, self.bed.theta + self.rng.uniform(-4.0, 2.0), self.bed.tank_l)
        self.boot_no = 0
        self.seq = 0
        self.readings = 0
        self._stuck_raw: float | None = None
        self._decoder = FrameDecoder()
        # Sent but not yet stored by the host: replayed when the host comes back.
        self.unstored: deque[tuple[int, bytes]] = deque(maxlen=UNSTORED_LINES)

    # ------------------------------------------------------------- output

    def boot(self) -> Emission:
        """Power on: optional garbage, then hello with seq 0."""
        self.boot_no += 1
        self.seq = 0
        self.unstored.clear()  # RAM does not survive a reboot
        garbage = b""
        if self.faults.boot_garbage:
            garbage = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(8, 40)))
            garbage = garbage.replace(b"$", b"?") + b"\r\n"
        hello = encode_hello(self.node_id, 0, FIRMWARE_VERSION, SENSORS, self.interval_s)
        return Emission(garbage + hello, hello=self.boot_no)

    def tick(self) -> list[Emission]:
        """One interval passes: advance the bed and send a reading (maybe faulty)."""
        f = self.faults
        out: list[Emission] = []
        if f.reboot_every and self.readings and self.readings % f.reboot_every == 0 and self.seq:
            out.append(self.boot())
        self.bed = physics.advance(self.params, self.bed, self.interval_s)
        self.seq += 1
        self.readings += 1
        values = self._values()
        line = encode_data(self.node_id, self.seq, values)
        sent = (self.seq, encode_data(self.node_id, self.seq, values, replay=True))
        if f.noise and self.rng.random() < f.noise:
            out.append(Emission(bytes(self.rng.randrange(32, 127) for _ in range(20)).replace(b"$", b"#") + b"\n"))
        if f.partial and self.rng.random() < f.partial:
            cut = self.rng.randrange(2, len(line) - 3)
            out.append(Emission(line[:cut], sent=sent))
            return out
        if f.bad_crc and self.rng.random() < f.bad_crc:
            pos = self.rng.randrange(1, len(line) - 7)
            flipped = bytearray(line)
            flipped[pos] = (flipped[pos] ^ 0x01) or 0x30
            if flipped[pos] in (0x24, 0x0A, 0x0D):  # don't invent framing bytes
                flipped[pos] = 0x30
            out.append(Emission(bytes(flipped), sent=sent))
            return out
        out.append(Emission(line, (self.boot_no, self.seq), sent=sent))
        return out

    # ------------------------------------------------ store and forward

    def sent(self, emission: Emission) -> None:
        """The runner wrote this emission: keep its reading until the host stores it."""
        if emission.sent is not None:
            self.unstored.append(emission.sent)

    def replays(self) -> list[Emission]:
        """The readings sent but not yet stored by the host, as GR frames, oldest first."""
        return [Emission(line, (self.boot_no, seq)) for seq, line in self.unstored]

    def _values(self) -> dict[str, Value]:
        p, s, rng = self.params, self.bed, self.rng
        soil_c = physics.soil_temp_c(p, s.t_s)
        raw = round(physics.probe_counts(p, s.theta, soil_c) + rng.gauss(0.0, 1.5))
        raw = min(max(raw, 1), ADC_MAX - 1)
        if self.faults.stuck_after and self.readings > self.faults.stuck_after:
            if self._stuck_raw is None:
                self._stuck_raw = raw
            raw = int(self._stuck_raw)
        values: dict[str, Value] = {
            "sm0": raw,
            "st0": round(soil_c + rng.gauss(0.0, 0.05), 2),
            "at0": round(physics.air_temp_c(p, s.t_s) + rng.gauss(0.0, 0.1), 2),
            "rh0": round(physics.air_rh_pct(p, s.t_s) + rng.gauss(0.0, 0.5), 1),
            "lx0": round(physics.lux(p, s.t_s)),
            "tk0": round(physics.tank_distance_cm(p, s.tank_l) + rng.gauss(0.0, 0.3), 1),
            "bt0": round(3900 + 200 * physics.daylight(s.t_s) + rng.gauss(0.0, 5.0)),
        }
        if self.faults.sentinel and rng.random() < self.faults.sentinel:
            key, bad = rng.choice([("st0", 85.0), ("st0", -127.0), ("sm0", 0.0), ("sm0", float(ADC_MAX)), ("tk0", 0.0)])
            values[key] = bad
        if self.faults.failed and rng.random() < self.faults.failed:
            values[rng.choice(SENSORS)] = SensorError("nc")
        return values

    # -------------------------------------------------------------- input

    def receive(self, data: bytes) -> list[Emission]:
        """Bytes from the host: apply commands addressed to this node, and ack them."""
        out: list[Emission] = []
        for item in self._decoder.feed(data):
            if isinstance(item, StoredFrame) and item.node_id == self.node_id:
                while self.unstored and self.unstored[0][0] <= item.seq:
                    self.unstored.popleft()
                continue
            if not isinstance(item, CommandFrame) or item.node_id != self.node_id:
                continue
            if item.verb != "SET" or set(item.args) != {"interval_s"}:
                out.append(Emission(encode_ack(self.node_id, item.seq, False, "unknown_command")))
                continue
            text = item.args["interval_s"]
            if not text.isdigit() or not 1 <= int(text) <= 86_400:
                out.append(Emission(encode_ack(self.node_id, item.seq, False, "bad_value")))
                continue
            self.interval_s = int(text)
            out.append(Emission(encode_ack(self.node_id, item.seq, True)))
        return out
