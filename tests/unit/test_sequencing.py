"""Sequence tracking: gaps, duplicates and reboots from seq and hello."""

from __future__ import annotations

from dataclasses import asdict

from firmware_bridge.sequencing import MAX_MISSING, NodeSeq, Step, advance


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


def test_a_replay_fills_a_gap_it_was_lost_in() -> None:
    """A bridge killed after reading seq 5 but before storing it sees 6 first, then the
    node's replay of 5: the replay is taken, once, and the loss is taken back."""
    state = advance(None, 4, hello=False).state
    gap = advance(state, 6, hello=False)
    assert gap.step is Step.GAP and gap.state.missing == (5,) and gap.state.lost == 1
    filled = advance(gap.state, 5, hello=False, replay=True)
    assert filled.step is Step.FILLED and filled.state.missing == () and filled.state.lost == 0
    assert advance(filled.state, 5, hello=False, replay=True).step is Step.REPLAYED
    assert advance(filled.state, 3, hello=False, replay=True).step is Step.REPLAYED


def test_missing_seqs_are_bounded_and_forgotten_on_reboot() -> None:
    state = advance(None, 1, hello=False).state
    state = advance(state, 1001, hello=False).state
    assert len(state.missing) == MAX_MISSING and state.missing[-1] == 1000 and state.lost == 999
    assert advance(state, 0, hello=True).state.missing == ()
    # As the spool keeps it: JSON gives a list back.
    assert NodeSeq(**{**asdict(state), "missing": list(state.missing)}) == state
