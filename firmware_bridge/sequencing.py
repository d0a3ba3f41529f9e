"""Per-node sequence tracking: reboots, gaps and duplicates from ``seq`` and hello.

Pure code. ``seq`` is a per-boot counter (docs/protocol.md). The bridge
numbers each node's boots itself (``boot``); ``(node, boot, seq)`` names a
reading uniquely, for as long as the spool keeps the node's state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

# How many of the latest lost seqs a node's state remembers for replays to fill. The
# state is written with every spool transaction, so it stays small; a race loses a
# line or two per node, and a longer gap stays counted as lost.
MAX_MISSING = 64


class Step(StrEnum):
    FIRST = "first"  # the first frame the bridge has seen from this node
    NEXT = "next"  # seq followed on by one
    GAP = "gap"  # seq jumped: readings were lost on the line
    REBOOT = "reboot"  # a hello, or seq went back without one
    DUPLICATE = "duplicate"  # the same seq again: dropped
    REPLAYED = "replayed"  # a replay of a reading already stored: dropped
    FILLED = "filled"  # a replay of a reading a gap had lost: taken after all


@dataclass(frozen=True, slots=True)
class NodeSeq:
    """What the bridge remembers of a node's counter between frames."""

    boot: int = 0
    last_seq: int = -1
    lost: int = 0
    reboots: int = 0
    duplicates: int = 0
    # The latest seqs of this boot lost in gaps, which a replay may still bring: a
    # bridge killed after reading a line but before storing it sees the node's next
    # line before its replay of that one (tests/faults, case 6).
    missing: tuple[int, ...] = ()

    def __post_init__(self) -> None:  # from the spool's JSON, a list
        object.__setattr__(self, "missing", tuple(self.missing))


@dataclass(frozen=True, slots=True)
class Sequenced:
    state: NodeSeq
    step: Step
    missed: int = 0  # readings lost in a gap just before this frame


def advance(state: NodeSeq | None, seq: int, *, hello: bool, replay: bool = False) -> Sequenced:
    """Account for one frame with counter ``seq`` from a node in ``state``.

    A replay (GR) at or below the last seq is a reading already stored; above
    it, a replay is a reading the bridge never had, and counts as new.
    """
    if replay and state is not None and seq <= state.last_seq:
        if seq in state.missing:
            rest = tuple(m for m in state.missing if m != seq)
            return Sequenced(replace(state, missing=rest, lost=max(state.lost - 1, 0)), Step.FILLED)
        return Sequenced(state, Step.REPLAYED)
    if state is None:
        return Sequenced(NodeSeq(boot=1, last_seq=seq), Step.FIRST)
    if hello:
        return Sequenced(
            replace(state, boot=state.boot + 1, last_seq=seq, reboots=state.reboots + 1, missing=()),
            Step.REBOOT,
        )
    expected = state.last_seq + 1
    if seq == expected:
        return Sequenced(replace(state, last_seq=seq), Step.NEXT)
    if seq > expected:
        missed = seq - expected
        missing = (*state.missing, *range(max(expected, seq - MAX_MISSING), seq))[-MAX_MISSING:]
        return Sequenced(replace(state, last_seq=seq, lost=state.lost + missed, missing=missing), Step.GAP, missed)
    if seq == state.last_seq:
        return Sequenced(replace(state, duplicates=state.duplicates + 1), Step.DUPLICATE)
    # seq went back with no hello: the node rebooted and its hello was lost.
    return Sequenced(
        replace(state, boot=state.boot + 1, last_seq=seq, reboots=state.reboots + 1, missing=()),
        Step.REBOOT,
    )
