"""Reading sessions back from the log."""

import asyncio
import time
from dataclasses import dataclass, field

import msgspec
import nats.errors
import nats.js.errors
from nats.js import api

from app.analytics import LogEntry, entry_of, session_of
from app.bus import ELECTION_S, Bus, decode_record
from domain.events import AnyServerEvent
from domain.records import Record

_events = msgspec.json.Decoder(AnyServerEvent)


async def subject_counts(bus: Bus, subject: str) -> dict[str, int]:
    """How many records each subject matching `subject` holds; none while the log's stream does not exist yet (a
    `serve` that is still starting)."""
    try:
        info = await bus.js.stream_info(bus.subjects.sessions_stream, subjects_filter=subject)
    except nats.js.errors.NotFoundError:
        return {}
    return dict(info.state.subjects or {})


async def read_entries(bus: Bus, subject: str) -> list[LogEntry]:
    """Every stored record on `subject` (wildcards allowed), in stream order."""
    if not await subject_counts(bus, subject):
        return []
    sub = await bus.js.pull_subscribe(
        subject,
        stream=bus.subjects.sessions_stream,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE),
    )
    entries: list[LogEntry] = []
    deadline = time.monotonic() + ELECTION_S
    try:
        while True:
            try:
                messages = await sub.fetch(1000, timeout=2)
            except nats.errors.TimeoutError:
                return entries
            except nats.js.errors.ServiceUnavailableError:
                # No one serves the new consumer yet: a cluster that lost a node may still be electing its leader.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            entries += [entry_of(m) for m in messages]
            if messages[-1].metadata.num_pending == 0:
                return entries
    finally:
        await sub.unsubscribe()


@dataclass
class RecordedSession:
    session_id: str
    entries: list[LogEntry] = field(default_factory=list)

    @property
    def inputs(self) -> list[tuple[int, Record]]:
        return [(e.seq, decode_record(e.data)) for e in self.entries if ".in." in e.subject]

    @property
    def outputs(self) -> list[AnyServerEvent]:
        return [_events.decode(e.data) for e in self.entries if ".out." in e.subject]


async def read_session(bus: Bus, session_id: str) -> RecordedSession:
    """Every record of the session stored so far, in stream order."""
    return RecordedSession(session_id, await read_entries(bus, f"{bus.subjects.prefix}.session.{session_id}.>"))


__all__ = ["LogEntry", "RecordedSession", "read_entries", "read_session", "session_of", "subject_counts"]
