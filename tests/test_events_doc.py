"""docs/events.md keeps up with the code, and its example subscriber works against a live server."""

import asyncio
import re
import sys
import time
import typing
from pathlib import Path

from nats.js import api

from app.bus import MSG_ID, SENT_NS
from domain.events import AnyServerEvent, ClientEvent
from domain.records import Record
from tests.realtime_client import events_until, pcm24k, raw_connect, sdk, stream, words

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "events.md"
EXAMPLE = ROOT / "examples" / "transcripts_subscriber.py"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def _tags(union: object) -> list[str]:
    return [member.__struct_config__.tag for member in typing.get_args(union)]


def test_the_doc_shows_the_example_byte_for_byte():
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert EXAMPLE.read_text() in blocks


def test_the_doc_names_every_record_kind_and_event_type():
    doc = DOC.read_text()
    names = _tags(Record) + _tags(AnyServerEvent) + _tags(ClientEvent)
    assert len(names) == len(set(names)) > 20
    missing = [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"docs/events.md does not describe {missing}"


async def test_the_example_prints_a_live_sessions_transcript(stack):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        stack.nats_url,
        "--limit",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        assert ready.decode().startswith("listening on vocalis.session.*.out."), ready

        async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
            created = await conn.recv()
            await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
            await stream(conn, pcm24k("hello_world.wav"))
            await conn.input_audio_buffer.commit()
            *_, completed = await events_until(conn, lambda event: event.type == COMPLETED)

        output, errors = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, errors.decode()
    session_id, item_id, transcript = output.decode().strip().split(" ", 2)
    assert session_id == created.session.id
    assert item_id == completed.item_id
    assert words(transcript) == "hello world"


async def test_every_record_carries_its_id_and_when_it_was_sent(stack):
    before_ns = time.time_ns()
    async with raw_connect(stack.ws_url) as client:
        session_id = (await client.next_of("session.created"))["session"]["id"]
        await client.send({"type": "input_audio_buffer.clear"})
        await client.next_of("input_audio_buffer.cleared")
    sub = await stack.bus.js.pull_subscribe(
        f"vocalis.session.{session_id}.>", config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE)
    )
    messages = await sub.fetch(100, timeout=2)
    after_ns = time.time_ns()
    await sub.unsubscribe()
    subjects = {m.subject.split(".", 3)[3] for m in messages}
    assert {"in.edge", "in.client", "out.input_audio_buffer.cleared"} <= subjects
    for message in messages:
        assert message.headers and message.headers[MSG_ID]
        assert before_ns <= int(message.headers[SENT_NS]) <= after_ns, message.subject
