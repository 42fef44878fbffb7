"""Faults the client is told about: an edge killed mid-session, whose session another process closes in the log."""

from pathlib import Path

import msgspec

from app.log_tools import load_fixture, replay_recorded
from domain import records as rec

FIXTURE = Path(__file__).parent / "sessions" / "hello_world_vad.jsonl"


def test_a_session_cut_off_at_its_edge_replays_as_far_as_it_was_recorded():
    inputs, expected = load_fixture(FIXTURE)
    *records, (seq, closed) = inputs
    assert isinstance(closed, rec.SessionClosed)
    cut = [*records, (seq, msgspec.structs.replace(closed, reason=rec.EDGE_LOST))]
    # The edge died having recorded some events only; the log holds records it never reduced.
    assert replay_recorded(cut, expected[:3]) is None
    assert replay_recorded(cut, expected) is None
    divergence = replay_recorded(inputs, expected[:3])
    assert divergence is not None and divergence.index == 3, "a session closed by its edge is compared in full"
    changed = [*expected[:2], msgspec.structs.replace(expected[2], event_id="event_other")]
    assert replay_recorded(cut, changed) is not None, "what was recorded must still match"
