"""The log is the truth: a session's input records, re-run through the state machine, give exactly the
server events the client received."""

import asyncio
import sys
from pathlib import Path

import msgspec

from app.log_reader import RecordedSession, read_session
from domain import records as rec
from domain.replay import replay
from tests.realtime_client import events_until_transcribed, pcm24k, sdk, silence, stream

COMPLETED = "conversation.item.input_audio_transcription.completed"


async def _recorded(bus, session_id: str, expected_outputs: int) -> RecordedSession:
    """The session's records once the edge has recorded its close and every output it sent, and the decodes
    still in flight at the close have been recorded too (nothing new for half a second)."""
    previous = -1
    for _ in range(100):
        recorded = await read_session(bus, session_id)
        closed = any(isinstance(r, rec.SessionClosed) for _, r in recorded.inputs)
        if closed and len(recorded.outputs) >= expected_outputs and len(recorded.entries) == previous:
            return recorded
        previous = len(recorded.entries)
        await asyncio.sleep(0.5)
    raise AssertionError("the session's records did not all arrive")


async def test_replaying_the_lecture_reproduces_every_event(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        await conn.input_audio_buffer.commit(event_id="early")  # an error is an event too
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}},
            }
        )
        await stream(conn, pcm24k("lecture_60s.wav") + silence(1000))
        received = [created, *await events_until_transcribed(conn, at_least=3)]

    recorded = await _recorded(stack.bus, created.session.id, len(received))
    assert [e.event_id for e in recorded.outputs] == [e.event_id for e in received]
    kinds = {type(r) for _, r in recorded.inputs}
    assert {rec.SessionOpened, rec.ClientEventReceived, rec.AudioReceived, rec.WordsDecoded} <= kinds
    assert all(r.v == rec.SCHEMA_VERSION for _, r in recorded.inputs)

    replayed = replay(recorded.inputs)
    assert msgspec.json.encode(replayed) == msgspec.json.encode(recorded.outputs)
    assert len(replayed) == len(received)

    # The README's script shows the same records.
    script = Path(__file__).parents[1] / "examples" / "show_session.py"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), created.session.id, stack.nats_url, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    assert process.returncode == 0
    shown = output.decode().splitlines()
    assert len(shown) == len(recorded.inputs) + len(recorded.outputs)
    assert any(f"session.{created.session.id}.in.audio" in line for line in shown)
    assert any(line.split()[1].endswith(f"out.{COMPLETED}") for line in shown)
