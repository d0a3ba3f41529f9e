"""Per-node sequence tracking: reboots, gaps and duplicates from ``seq`` and hello.

Pure code. ``seq`` is a per-boot counter (docs/protocol.md). The bridge
numbers each node's boots itself (``boot``); ``(node, boot, seq)`` names a
reading uniquely, for as long as the spool keeps the node's state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Step(StrEnum):
    FIRST = "first"  # the first frame the bridge has seen from this node
    NEXT = "next"  # seq followed on by one
    GAP = "gap"  # seq jumped: readings were lost on the line
    REBOOT = "reboot"  # a hello, or seq went back without one
    DUPLICATE = "duplicate"  # the same seq again: dropped
    REPLAYED = "replayed"  # a replay of a reading already stored: dropped


@dataclass(frozen=True, slots=True)
class NodeSeq:
    """What the bridge remembers of a node's counter between frames."""

    boot: int = 0
    last_seq: int = -1
    lost: int = 0
    reboots: int = 0
    duplicates: int = 0


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
        return Sequenced(state, Step.REPLAYED)
    if state is None:
        return Sequenced(NodeSeq(boot=1, last_seq=seq), Step.FIRST)
    if hello:
        return Sequenced(
            replace(state, boot=state.boot + 1, last_seq=seq, reboots=state.reboots + 1),
            Step.REBOOT,
        )
    expected = state.last_seq + 1
    if seq == expected:
        return Sequenced(replace(state, last_seq=seq), Step.NEXT)
    if seq > expected:
        missed = seq - expected
        return Sequenced(replace(state, last_seq=seq, lost=state.lost + missed), Step.GAP, missed)
    if seq == state.last_seq:
        return Sequenced(replace(state, duplicates=state.duplicates + 1), Step.DUPLICATE)
    # seq went back with no hello: the node rebooted and its hello was lost.
    return Sequenced(
        replace(state, boot=state.boot + 1, last_seq=seq, reboots=state.reboots + 1),
        Step.REBOOT,
    )
