"""Sequence tracking: gaps, duplicates and reboots from seq and hello."""

from __future__ import annotations

from firmware_bridge.sequencing import NodeSeq, Step, advance


def test_sequence_story() -> None:
    s = advance(None, 0, hello=True)
    assert (s.step, s.state.boot) == (Step.FIRST, 1)
    s = advance(s.state, 1, hello=False)
    assert s.step is Step.NEXT
    s = advance(s.state, 4, hello=False)
    assert (s.step, s.missed, s.state.lost) == (Step.GAP, 2, 2)
    s = advance(s.state, 4, hello=False)
    assert (s.step, s.state.duplicates) == (Step.DUPLICATE, 1)
    s = advance(s.state, 0, hello=True)
    assert (s.step, s.state.boot, s.state.reboots) == (Step.REBOOT, 2, 1)
    s = advance(s.state, 1, hello=False)
    assert s.step is Step.NEXT
    # seq went back with no hello: a reboot whose hello was lost
    s = advance(NodeSeq(boot=2, last_seq=50), 3, hello=False)
    assert (s.step, s.state.boot, s.state.last_seq) == (Step.REBOOT, 3, 3)
