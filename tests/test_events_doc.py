"""docs/events.md keeps up with the code, and its example subscriber works against a live server."""

import asyncio
import re
import sys
import typing
from pathlib import Path

from domain.events import AnyServerEvent, ClientEvent
from domain.records import Record
from tests.realtime_client import events_until, pcm24k, sdk, stream, words

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
