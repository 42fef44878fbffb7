"""Recorded sessions saved with `vocalis replay --save` replay identically, without NATS or models."""

from pathlib import Path

import pytest

from app.log_tools import load_fixture, replay_recorded

FIXTURES = sorted((Path(__file__).parent / "sessions").glob("*.jsonl"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_replays_identically(path: Path):
    inputs, expected = load_fixture(path)
    assert inputs and expected
    divergence = replay_recorded(inputs, expected)
    assert divergence is None, divergence.report()


def test_there_are_fixtures():
    assert FIXTURES
