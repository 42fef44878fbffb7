"""The OpenAI Agents SDK's realtime agents (openai-agents 0.24.0) against Vocalis, unchanged.

The SDK is used the way its docs and examples use it: a `RealtimeAgent` with `@function_tool` tools, a
`RealtimeRunner` whose `model_settings` turn on input transcription, server VAD and a voice, a session opened
with `model_config={"url": ..., "api_key": ...}` (the SDK's own option for another endpoint), `async with
session`, `send_audio` / `send_message`, raw client events through `session.model.send_event`, and the session's
events read with `async for`. Nothing of the framework is patched.

Each flow runs on the real stack (whisper, the scripted fake LLM, Kokoro) and proves one thing a voice agent
needs: the user's transcript reaches the agent; a spoken turn is answered in audio with the scripted words; a tool
call runs the local function and its output reaches the LLM; a barge-in truncates the answer where the app's
playback stopped (as reported to a `RealtimePlaybackTracker`, or as the SDK estimates it without one), and the
server accepts the truncate, also when it comes while the answer is still running (`interrupt_response: false`,
where the SDK cancels the response itself); a reply asked for without instructions uses the agent's own.

In every flow the framework must see no `error` (the SDK turns a server `error`, and any server frame it cannot
parse, into a `RealtimeError` event), and the session's recorded server events must hold no `error` either.
"""

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip("agents.realtime", reason="openai-agents (the OpenAI Agents SDK) is not installed")

from agents import function_tool
from agents.realtime import (
    RealtimeAgent,
    RealtimeModelConfig,
    RealtimeModelSendRawMessage,
    RealtimePlaybackTracker,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionEvent,
    RealtimeSessionModelSettings,
)

from app.log_reader import read_session
from domain import events as ev
from domain import records as rec
from tests.realtime_client import pcm24k, silence, words

INSTRUCTIONS = "You are a helpful voice assistant. Keep your answers short."
ANSWER = "Sure. The weather in Paris is sunny today, with a light breeze."
TRANSCRIBE = {"model": "gpt-4o-mini-transcribe"}  # OpenAI's name, as the SDK's examples write it
SERVER_VAD = {
    "type": "server_vad",
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "interrupt_response": True,
    "create_response": True,
}
# The quickstart's flat settings, with server VAD as the SDK's app example configures it.
FLAT_SETTINGS: RealtimeSessionModelSettings = {
    "model_name": "gpt-realtime",
    "voice": "ash",
    "modalities": ["audio"],
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_transcription": TRANSCRIBE,  # type: ignore[typeddict-item]
    "turn_detection": SERVER_VAD,  # type: ignore[typeddict-item]
}
# The nested shape the SDK's docs now recommend for new code.
NESTED_SETTINGS: RealtimeSessionModelSettings = {
    "model_name": "gpt-realtime",
    "audio": {
        "input": {"format": "pcm16", "transcription": TRANSCRIBE, "turn_detection": SERVER_VAD},
        "output": {"format": "pcm16", "voice": "ash"},
    },
}  # type: ignore[typeddict-item]

STORY = "Let me tell you a long story. " * 30
CHUNK = 4800  # 100 ms of pcm16 at 24 kHz, as a microphone callback would hand it over


class Events:
    """A session's events, read in order with bounded waits; everything read is kept in `seen`."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.seen: list[RealtimeSessionEvent] = []
        self._stream = aiter(session)

    async def until(self, done: Callable[[RealtimeSessionEvent], bool], timeout: float = 60) -> RealtimeSessionEvent:
        """The first event (from here on) for which `done` is true; an `error` before it fails at once."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await anext(self._stream)
                    self.seen.append(event)
                    if done(event):
                        return event
                    if event.type == "error":
                        raise AssertionError(f"the framework got an error: {event.error}; it saw: {self.summary()}")
        except (TimeoutError, StopAsyncIteration) as stopped:
            raise AssertionError(f"{type(stopped).__name__}; the framework saw: {self.summary()}") from stopped

    async def drain(self) -> None:
        """The events still queued when the session closed."""
        async with asyncio.timeout(10):
            async for event in self._stream:
                self.seen.append(event)

    def frames(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The server frames the framework received, as parsed JSON."""
        return [
            e.data.data
            for e in self.seen
            if e.type == "raw_model_event"
            and e.data.type == "raw_server_event"
            and (kind is None or e.data.data.get("type") == kind)
        ]

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.seen if e.type == kind]

    @property
    def errors(self) -> list[Any]:
        return self.of("error")

    @property
    def session_id(self) -> str:
        return str(self.frames("session.created")[0]["session"]["id"])

    def summary(self) -> str:
        kinds = [
            e.data.data.get("type") if e.type == "raw_model_event" and e.data.type == "raw_server_event" else None
            for e in self.seen
        ]
        framework = [e.type for e in self.seen if e.type != "raw_model_event"]
        return f"frames {[k for k in kinds if k]}, events {framework}, errors {[e.error for e in self.errors]}"


@contextlib.asynccontextmanager
async def agent_session(
    conversation: Any,
    agent: RealtimeAgent[Any],
    settings: RealtimeSessionModelSettings,
    playback_tracker: RealtimePlaybackTracker | None = None,
) -> AsyncIterator[Events]:
    """A session of `agent` on Vocalis, opened as the SDK's docs open one, pointed at Vocalis by its URL."""
    runner = RealtimeRunner(starting_agent=agent, config={"model_settings": settings})
    model_config: RealtimeModelConfig = {"url": f"{conversation.ws_url}/realtime?model=gpt-realtime", "api_key": "test"}
    if playback_tracker is not None:
        model_config["playback_tracker"] = playback_tracker
    session = await runner.run(model_config=model_config)
    async with session:
        events = Events(session)
        await events.until(lambda e: raw_type(e) == "session.updated", timeout=30)
        yield events
    await events.drain()
    assert not events.errors, f"the framework got errors: {[e.error for e in events.errors]}"
    assert await recorded_errors(conversation, events.session_id) == []


def raw_type(event: RealtimeSessionEvent) -> str | None:
    """The type of the server frame behind a raw model event; None for any other event."""
    if event.type == "raw_model_event" and event.data.type == "raw_server_event":
        return str(event.data.data.get("type"))
    return None


async def recorded_errors(conversation: Any, session_id: str) -> list[ev.ErrorEvent]:
    """The `error` events of the session's log, read once the close is recorded (so the log is complete)."""
    async with asyncio.timeout(30):
        while True:
            recorded = await read_session(conversation.stack.bus, session_id)
            if any(isinstance(r, rec.SessionClosed) for _, r in recorded.inputs):
                return [e for e in recorded.outputs if isinstance(e, ev.ErrorEvent)]
            await asyncio.sleep(0.1)


async def speak(session: RealtimeSession, pcm: bytes) -> None:
    """Hand the SDK microphone audio in 100 ms chunks, as fast as it takes them."""
    for start in range(0, len(pcm), CHUNK):
        await session.send_audio(pcm[start : start + CHUNK])


def history(events: Events) -> list[Any]:
    """The agent's conversation history, as the latest `history_updated` event gave it to the app."""
    updates = events.of("history_updated")
    return list(updates[-1].history) if updates else []


def assistant_transcripts(events: Events) -> list[str]:
    """The transcripts of the assistant's audio answers in the agent's history."""
    return [
        part.transcript or ""
        for item in history(events)
        if item.type == "message" and item.role == "assistant"
        for part in item.content
        if part.type == "audio"
    ]


def user_transcript(event: RealtimeSessionEvent) -> str | None:
    """The transcript of a spoken user item in a history event, once it has one."""
    items = event.history if event.type == "history_updated" else [event.item] if event.type == "history_added" else []
    for item in items:
        if item.type == "message" and item.role == "user":
            for part in item.content:
                if part.type == "input_audio" and part.transcript:
                    return str(part.transcript)
    return None


async def test_user_transcript_reaches_the_agent(conversation):
    """Input transcription configured as the SDK's docs do (OpenAI's model name, nested `audio.input`): the
    user's spoken words come back as the transcript of the user item in the agent's history."""
    conversation.llm.reply("Hello to you.")
    agent = RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS)
    async with agent_session(conversation, agent, NESTED_SETTINGS) as events:
        updated = events.frames("session.updated")[-1]["session"]
        assert updated["audio"]["input"]["transcription"] is not None, "transcription is on"
        assert updated["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        await speak(events.session, pcm24k("hello_world.wav") + silence(800))
        heard = await events.until(lambda e: user_transcript(e) is not None)
        await events.until(lambda e: e.type == "agent_end")
    assert words(user_transcript(heard) or "") == "hello world"
    completed = events.frames("conversation.item.input_audio_transcription.completed")
    assert [f["transcript"] for f in completed] == [user_transcript(heard)]
    assert words(conversation.llm.requests[0]["messages"][-1]["content"]) == "hello world"


async def test_spoken_turn_answered_in_audio(conversation):
    """Speech and silence in through `send_audio`; server VAD ends the turn and the agent gets the answer as
    audio (pcm16 bytes) whose transcript is the scripted reply, word for word."""
    conversation.llm.reply(ANSWER)
    agent = RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS)
    async with agent_session(conversation, agent, FLAT_SETTINGS) as events:
        await speak(events.session, pcm24k("hello_world.wav") + silence(800))
        await events.until(lambda e: e.type == "agent_end", timeout=90)
        audio = b"".join(e.audio.data for e in events.of("audio"))
        transcripts = assistant_transcripts(events)
    assert len(audio) > 24000 * 2, "at least a second of pcm16 audio"
    assert len(audio) % 2 == 0
    assert events.of("audio_interrupted") == []
    assert transcripts == [ANSWER]
    deltas = "".join(f["delta"] for f in events.frames("response.output_audio_transcript.delta"))
    assert deltas == ANSWER
    request = conversation.llm.requests[0]
    assert request["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert words(request["messages"][-1]["content"]) == "hello world"


async def test_tool_round_trip(conversation):
    """The LLM calls a `@function_tool`: the SDK runs the local function, sends its output back and asks for the
    next response; the LLM's second request holds the output, and its reply is spoken."""
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return f"Sunny and 21 degrees in {city}."

    conversation.llm.reply(tool_calls=[("get_weather", {"city": "Paris"})])
    conversation.llm.reply("It is sunny in Paris.")
    agent = RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS, tools=[get_weather])
    async with agent_session(conversation, agent, FLAT_SETTINGS) as events:
        await events.session.send_message("What is the weather in Paris?")
        start = await events.until(lambda e: e.type == "tool_start")
        end = await events.until(lambda e: e.type == "tool_end")
        await events.until(lambda e: e.type == "audio_end", timeout=90)  # the spoken reply's audio is complete
        await events.until(lambda e: e.type == "agent_end")
        transcripts = assistant_transcripts(events)
    assert start.tool.name == "get_weather" and json.loads(start.arguments) == {"city": "Paris"}
    assert calls == ["Paris"] and end.output == "Sunny and 21 degrees in Paris."
    assert transcripts[-1] == "It is sunny in Paris."
    first, second = conversation.llm.requests
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert first["tools"][0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["Sunny and 21 degrees in Paris."]
    call = next(m for m in second["messages"] if m.get("tool_calls"))
    assert call["tool_calls"][0]["id"] == tool_messages[0]["tool_call_id"]


async def barge_in(
    conversation: Any, tracker: RealtimePlaybackTracker | None, settings: RealtimeSessionModelSettings = FLAT_SETTINGS
) -> tuple[Events, dict[str, Any]]:
    """A long answer streams; the app plays its first second (reporting it to `tracker`, when it has one), then
    the user speaks over it and is answered. The session's events, and what the app played (item id, ms)."""
    conversation.llm.reply(STORY, delay_s=0.05)
    conversation.llm.reply("Okay.")
    agent = RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS)
    async with agent_session(conversation, agent, settings, playback_tracker=tracker) as events:
        await events.session.send_message("Tell me a story.")
        played = 0
        while played < 48 * 1000:
            chunk = await events.until(lambda e: e.type == "audio", timeout=90)
            if tracker is not None:
                tracker.on_play_bytes(chunk.item_id, chunk.content_index, chunk.audio.data)
            played += len(chunk.audio.data)
        await speak(events.session, pcm24k("hello_world.wav"))
        await events.until(lambda e: e.type == "audio_interrupted")
        await events.until(lambda e: raw_type(e) == "response.done")  # the answer, interrupted
        await speak(events.session, silence(800))  # the user's turn ends after the interruption, as in real time
        await events.until(lambda e: raw_type(e) == "conversation.item.input_audio_transcription.completed")
        await events.until(
            lambda e: raw_type(e) == "response.done" and e.data.data["response"]["status"] == "completed", timeout=90
        )
    return events, {"item_id": chunk.item_id, "played_ms": played / 48}


async def check_barge_in(
    conversation: Any, events: Events, item_id: str, reason: str = "turn_detected"
) -> tuple[int, str]:
    """What every barge-in must show; the truncate's `audio_end_ms` and the words kept as heard."""
    assert [e.item_id for e in events.of("audio_interrupted")] == [item_id]
    cancelled = events.frames("response.done")[0]["response"]
    assert cancelled["status"] == "cancelled" and cancelled["status_details"]["reason"] == reason
    recorded = await read_session(conversation.stack.bus, events.session_id)
    truncates = [
        r.event
        for _, r in recorded.inputs
        if isinstance(r, rec.ClientEventReceived) and isinstance(r.event, ev.ItemTruncateRequested)
    ]
    assert [(t.item_id, t.content_index) for t in truncates] == [(item_id, 0)], "one truncate, of the answer"
    audio_end_ms = truncates[0].audio_end_ms
    truncated = events.frames("conversation.item.truncated")
    assert [(t["item_id"], t["audio_end_ms"]) for t in truncated] == [(item_id, audio_end_ms)], "accepted as sent"
    assert [(e.item_id, e.audio_end_ms) for e in recorded.outputs if isinstance(e, ev.ItemTruncated)] == [
        (item_id, audio_end_ms)
    ]
    # The framework retrieves the item after the truncation: the conversation now holds only the words said by
    # then (none, if the cut came before the first word ended), and that is what the LLM gets for the next turn.
    retrieved = [f["item"] for f in events.frames("conversation.item.retrieved") if f["item"]["id"] == item_id]
    heard = retrieved[0]["content"][0]["transcript"]
    assert words(STORY).startswith(words(heard)) and len(heard) < len(STORY)
    assistant = [m for m in conversation.llm.requests[1]["messages"] if m["role"] == "assistant"]
    assert assistant == ([{"role": "assistant", "content": heard}] if heard else [])
    assert words(conversation.llm.requests[1]["messages"][-1]["content"]) == "hello world"
    return audio_end_ms, heard


async def test_barge_in_truncates_at_what_was_played(conversation):
    """The app reports what it played to a `RealtimePlaybackTracker` (the first second of the answer), then the
    user speaks over the answer: on speech_started the SDK sends `conversation.item.truncate` at exactly the end
    of what was played, the server accepts it (`conversation.item.truncated`, no error), and the conversation keeps
    the words of that second."""
    events, played = await barge_in(conversation, RealtimePlaybackTracker())
    audio_end_ms, heard = await check_barge_in(conversation, events, played["item_id"])
    assert audio_end_ms == round(played["played_ms"])
    assert heard.startswith("Let me tell")


async def test_barge_in_with_the_default_playback_estimate(conversation):
    """No tracker: the SDK estimates what was played from the wall clock since the answer's first audio, capped at
    the audio it received (rounded up to whole ms). Whatever that estimate is, the truncate it sends is accepted."""
    events, played = await barge_in(conversation, None)
    audio_end_ms, _ = await check_barge_in(conversation, events, played["item_id"])
    before = events.seen[: events.seen.index(events.of("audio_interrupted")[0])]
    received_ms = sum(len(e.audio.data) for e in before if e.type == "audio") / 48
    assert 0 <= audio_end_ms <= math.ceil(received_ms)


async def test_barge_in_that_the_framework_cancels(conversation):
    """With `interrupt_response: false` the server keeps answering when the user speaks, so the SDK interrupts on
    speech_started itself: it truncates the answer at what was played while the response is still running, then
    sends `response.cancel`. Both are accepted: the answer ends `cancelled` (client_cancelled), keeps the words
    that were played, and the user's turn is answered."""
    settings: RealtimeSessionModelSettings = {
        **FLAT_SETTINGS,
        "turn_detection": {**SERVER_VAD, "interrupt_response": False},
    }  # type: ignore[typeddict-item]
    events, played = await barge_in(conversation, RealtimePlaybackTracker(), settings)
    audio_end_ms, heard = await check_barge_in(conversation, events, played["item_id"], reason="client_cancelled")
    assert audio_end_ms == round(played["played_ms"])
    assert heard.startswith("Let me tell")


async def test_reply_without_instructions(conversation):
    """The SDK's way to ask for a reply with nothing added: a bare `response.create` sent as a raw client event
    (as its app example forwards client events). The reply uses the agent's instructions and is spoken."""
    conversation.llm.reply("Good morning to you too.")
    agent = RealtimeAgent(name="Assistant", instructions=INSTRUCTIONS)
    async with agent_session(conversation, agent, FLAT_SETTINGS) as events:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Good morning!"}]}
        await events.session.model.send_event(
            RealtimeModelSendRawMessage(message={"type": "conversation.item.create", "other_data": {"item": item}})
        )
        await events.session.model.send_event(RealtimeModelSendRawMessage(message={"type": "response.create"}))
        await events.until(lambda e: e.type == "agent_end", timeout=90)
        transcripts = assistant_transcripts(events)
    assert transcripts == ["Good morning to you too."]
    assert events.of("audio")
    request = conversation.llm.requests[0]
    assert request["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "Good morning!"},
    ]
    recorded = await read_session(conversation.stack.bus, events.session_id)
    creates = [
        r.event
        for _, r in recorded.inputs
        if isinstance(r, rec.ClientEventReceived) and isinstance(r.event, ev.ResponseCreateRequested)
    ]
    assert [c.response for c in creates] == [ev.ResponseParams()], "a bare response.create: nothing overridden"
