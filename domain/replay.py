"""Reduce a whole recorded session, and compare what it produces with what was recorded."""

import difflib
import json
from collections.abc import Iterable, Iterator

import msgspec
from msgspec import Struct

from domain.events import AnyServerEvent
from domain.records import EDGE_LOST, SCHEMA_VERSION, Record, ReducerRecord, SessionClosed, SessionOpened
from domain.session import open_session, step
from domain.state import SessionState, Transition


class UnsupportedSchema(ValueError):
    pass


def advance(state: SessionState | None, record: Record | ReducerRecord, seq: int) -> Transition:
    """One step of a session from nothing (its `session.opened` record) or from `state`."""
    if state is None:
        if not isinstance(record, SessionOpened):
            raise ValueError(f"a session's first record must be session.opened, not {record.__struct_config__.tag}")
        return open_session(record)
    return step(state, record, seq)


def transitions(entries: Iterable[tuple[int, Record]]) -> Iterator[Transition]:
    """The transitions that the records (with their stream sequences), reduced in order, make."""
    state: SessionState | None = None
    for seq, record in entries:
        if record.v != SCHEMA_VERSION:
            raise UnsupportedSchema(
                f"record {seq} ({record.__struct_config__.tag}) has schema version {record.v}; this Vocalis "
                f"replays version {SCHEMA_VERSION} only"
            )
        transition = advance(state, record, seq)
        state = transition.state
        yield transition


def replay(entries: Iterable[tuple[int, Record]]) -> list[AnyServerEvent]:
    """The events that the records, reduced in order, produce."""
    return [event for transition in transitions(entries) for event in transition.events]


class Divergence(Struct, frozen=True):
    """The first place where replayed events differ from the recorded ones."""

    index: int
    recorded: str | None  # the event as JSON, None past the end
    replayed: str | None

    def report(self) -> str:
        def lines(text: str | None) -> list[str]:
            return json.dumps(json.loads(text), indent=2).splitlines() if text else ["(no event)"]

        diff = difflib.unified_diff(lines(self.recorded), lines(self.replayed), "recorded", "replayed", lineterm="")
        return f"first divergence at event {self.index}:\n" + "\n".join(diff)


def cut_off(entries: Iterable[tuple[int, Record]]) -> bool:
    """Whether the session was cut off: its edge was lost, and another process recorded its close."""
    return any(isinstance(record, SessionClosed) and record.reason == EDGE_LOST for _, record in entries)


def compare(recorded: list[AnyServerEvent], replayed: list[AnyServerEvent], cut: bool = False) -> Divergence | None:
    """The first difference; of a session that was `cut` off, only as far as its events were recorded (its edge died
    before reducing the records that came after those, and before recording all their events)."""
    encode = msgspec.json.encode
    if cut:
        replayed = replayed[: len(recorded)]
    for index in range(max(len(recorded), len(replayed))):
        left = encode(recorded[index]).decode() if index < len(recorded) else None
        right = encode(replayed[index]).decode() if index < len(replayed) else None
        if left != right:
            return Divergence(index, left, right)
    return None
