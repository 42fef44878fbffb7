"""Reduce a whole recorded session: the server events its input records produce."""

from collections.abc import Iterable

from vocalis.domain.events import AnyServerEvent
from vocalis.domain.records import Record, SessionOpened
from vocalis.domain.session import SessionState, Transition, open_session, step


def advance(state: SessionState | None, record: Record, seq: int) -> Transition:
    """One step of a session from nothing (its `session.opened` record) or from `state`."""
    if state is None:
        if not isinstance(record, SessionOpened):
            raise ValueError(f"a session's first record must be session.opened, not {record.__struct_config__.tag}")
        return open_session(record)
    return step(state, record, seq)


def replay(entries: Iterable[tuple[int, Record]]) -> list[AnyServerEvent]:
    """The events that the records (with their stream sequences), reduced in order, produce."""
    state: SessionState | None = None
    events: list[AnyServerEvent] = []
    for seq, record in entries:
        transition = advance(state, record, seq)
        state = transition.state
        events.extend(transition.events)
    return events
