"""When each fault is injected: a seeded random plan, one fault at a time. Pure.

Faults, each at least once (Mosquitto twice, once per signal, per round):

=================  ============================================================
``influx_kill``    InfluxDB SIGKILLed, restarted after ``influx_down_s``
``broker_term``    Mosquitto stopped with SIGTERM and started again at once
``broker_kill``    the same with SIGKILL (loses what it acknowledged since its last save)
``link_cut``       the bridge's link to the broker cut for ``link_cut_s``
``unplug``         some nodes' ports vanish for ``unplug_s`` and come back as new ptys
=================  ============================================================

The plan puts the faults in a random order (Mosquitto's signals alternate,
SIGTERM first) and spreads them at random over the time between the end of
warm-up and ``tail_s`` before the end, keeping ``gap_s`` after each fault's
planned end. At run time a fault never starts before the one before it has
recovered; the plan is the earliest start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KINDS = ("influx_kill", "broker_term", "broker_kill", "link_cut", "unplug")


@dataclass(frozen=True, slots=True)
class Durations:
    """How long each fault lasts, and the spacing, at a scale (1.0: the 30-minute soak)."""

    warmup_s: float
    influx_down_s: float
    link_cut_s: float
    unplug_s: float
    gap_s: float
    tail_s: float

    @classmethod
    def scaled(cls, scale: float) -> Durations:
        return cls(
            warmup_s=300 * scale,
            influx_down_s=60 * scale,
            link_cut_s=90 * scale,
            unplug_s=max(2.0, 30 * scale),
            gap_s=60 * scale,
            tail_s=180 * scale,
        )

    def of(self, kind: str) -> float:
        return {"influx_kill": self.influx_down_s, "link_cut": self.link_cut_s, "unplug": self.unplug_s}.get(kind, 0.0)


@dataclass(frozen=True, slots=True)
class Planned:
    kind: str
    at_s: float  # earliest start, seconds from the soak's start
    duration_s: float


def plan(seed: int, run_s: float, durations: Durations, rounds: int) -> list[Planned]:
    """``rounds`` of every kind, shuffled, at random times in [warm-up, run_s - tail_s]."""
    rng = random.Random(f"{seed}:faults")
    kinds = [k for _ in range(rounds) for k in KINDS]
    rng.shuffle(kinds)
    # Mosquitto's signals alternate in the order the restarts come, SIGTERM first.
    restarts = iter(["broker_term", "broker_kill"] * rounds)
    kinds = [next(restarts) if k.startswith("broker_") else k for k in kinds]
    start, end = durations.warmup_s, run_s - durations.tail_s
    reserved = [durations.of(k) + durations.gap_s for k in kinds]
    slack = end - start - sum(reserved)
    if slack < 0:
        raise ValueError(f"{len(kinds)} faults do not fit in {end - start:.0f} s; run longer or use fewer rounds")
    cuts = sorted(rng.uniform(0, slack) for _ in kinds)
    out, t, used = [], start, 0.0
    for kind, room, cut in zip(kinds, reserved, cuts, strict=True):
        t += cut - used
        used = cut
        out.append(Planned(kind, round(t, 1), durations.of(kind)))
        t += room
    return out
