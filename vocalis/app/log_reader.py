"""Reading a session back from the log: its input records (with sequences) and the events it produced."""

from dataclasses import dataclass, field

import msgspec
from nats.js import api

from vocalis.app.bus import Bus, decode_record
from vocalis.domain.events import AnyServerEvent
from vocalis.domain.records import Record

_events = msgspec.json.Decoder(AnyServerEvent)


@dataclass
class RecordedSession:
    inputs: list[tuple[int, Record]] = field(default_factory=list)
    outputs: list[AnyServerEvent] = field(default_factory=list)


async def read_session(bus: Bus, session_id: str) -> RecordedSession:
    """Every record of the session stored so far, in stream order."""
    subject = f"{bus.subjects.prefix}.session.{session_id}.>"
    sub = await bus.js.pull_subscribe(
        subject,
        stream=bus.subjects.sessions_stream,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL, ack_policy=api.AckPolicy.NONE),
    )
    recorded = RecordedSession()
    try:
        while True:
            messages = await sub.fetch(500, timeout=2)
            for message in messages:
                if ".in." in message.subject:
                    recorded.inputs.append((message.metadata.sequence.stream, decode_record(message.data)))
                else:
                    recorded.outputs.append(_events.decode(message.data))
            if messages[-1].metadata.num_pending == 0:
                return recorded
    finally:
        await sub.unsubscribe()
