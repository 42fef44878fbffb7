"""Client-side helpers for end-to-end tests: the shared speech, the official SDK, raw WebSockets."""

import asyncio
import base64
import contextlib
import json
import re
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jiwer
import websockets
from openai import AsyncOpenAI

AUDIO = Path(__file__).resolve().parent / "data"  # real speech (see data/README.md)

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
LECTURE = (
    "and says, how do I get to Dublin? And the answer that comes back is, well, I wouldn't start from here, sonny. "
    "That is to say, much of political philosophy develops theories that take no account of where we actually are "
    "and how the theories that people argue about in the journals and in the literature actually could be "
    "implemented in the world, if at all. And this spills over into normative arguments made by other scholars, "
    "Thomas Piketty, in his book, Capital in the 21st Century, argues for a 4% global wealth tax. Well, good luck "
    "with that. Who's going to implement a 4% global wealth tax? So when I think about normative questions,"
)
REFERENCES = {"jfk.wav": JFK, "lecture_60s.wav": LECTURE, "hello_world.wav": "Hello world."}  # tests/data's files


def pcm24k(name: str) -> bytes:
    with wave.open(str(AUDIO / name)) as wav:
        assert wav.getframerate() == 24000 and wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return wav.readframes(wav.getnframes())


def chunks(pcm: bytes, chunk_ms: int = 100) -> list[str]:
    size = 48 * chunk_ms
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


def silence(ms: int) -> bytes:
    return bytes(48 * ms)


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(words(reference), words(hypothesis)))


def sdk(url: str, api_key: str = "test-key") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=api_key, base_url=url.replace("ws://", "http://"), websocket_base_url=url)


async def stream(connection: Any, pcm: bytes, chunk_ms: int = 100, pace: float = 0.0) -> None:
    """Append `pcm` in chunk_ms pieces; `pace` 1.0 is real time, 0 as fast as possible."""
    for chunk in chunks(pcm, chunk_ms):
        await connection.input_audio_buffer.append(audio=chunk)
        if pace:
            await asyncio.sleep(chunk_ms / 1000 / pace)


async def events_until(connection: Any, done: Callable[[Any], bool], timeout: float = 60) -> list[Any]:
    """Server events up to and including the first for which `done` is true."""
    received: list[Any] = []

    async def collect() -> None:
        async for event in connection:
            received.append(event)
            if done(event):
                return

    await asyncio.wait_for(collect(), timeout)
    return received


class Turns:
    """The committed items of a session and their transcripts, followed from its events; calling it makes it a
    predicate for `events_until`: true once at least `at_least` turns are committed and each has its transcript.

    Transcripts of different turns may complete out of order (the worker decodes two at a time), so a turn can be
    transcribed before the next one is committed. `after` names the reply to a client event sent after the audio:
    once it has come, the server has heard all of the audio, and every turn in it is committed."""

    def __init__(self, at_least: int = 1, after: str | None = None) -> None:
        self.at_least = at_least
        self.after = after
        self.heard_all = after is None
        self.committed: set[str] = set()
        self.completed: list[str] = []  # a list, so that a second transcript for a turn shows

    def see(self, event: Any) -> None:
        if event.type == "input_audio_buffer.committed":
            self.committed.add(event.item_id)
        if event.type == "conversation.item.input_audio_transcription.completed":
            self.completed.append(event.item_id)
        if event.type == self.after:
            self.heard_all = True

    @property
    def all_transcribed(self) -> bool:
        return self.heard_all and len(self.committed) >= self.at_least and set(self.completed) == self.committed

    def __call__(self, event: Any) -> bool:
        self.see(event)
        return self.all_transcribed


async def events_until_transcribed(connection: Any, at_least: int = 1, timeout: float = 120) -> list[Any]:
    """Once the audio is sent: server events until every turn in it has its transcript. A clear sent after the
    audio marks its end: its reply comes once the server has heard all of it."""
    await connection.input_audio_buffer.clear()
    return await events_until(connection, Turns(at_least, after="input_audio_buffer.cleared"), timeout)


class RawClient:
    """A bare WebSocket client, for frames the SDK would never send."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket

    async def send(self, frame: str | bytes | dict[str, Any]) -> None:
        await self.socket.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.socket.recv(), timeout)
        assert isinstance(frame, str), "server frames are text"
        event: dict[str, Any] = json.loads(frame)
        return event

    async def next_of(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        while True:
            event = await self.next(timeout)
            if event["type"] == kind:
                return event


@contextlib.asynccontextmanager
async def raw_connect(url: str, query: str = "intent=transcription", **headers: str) -> AsyncIterator[RawClient]:
    async with websockets.connect(
        f"{url}/realtime?{query}", additional_headers=headers, max_size=None, compression=None
    ) as socket:
        yield RawClient(socket)
