"""LiveKit Agents' OpenAI realtime plugin (livekit-plugins-openai 1.8.9), unchanged, against Vocalis.

The plugin's `RealtimeModel` is pointed at Vocalis with its `base_url` option and its `RealtimeSession` is driven
directly, as `AgentSession` drives it, without a LiveKit server or room: audio goes in as `rtc.AudioFrame`s through
`push_audio`, answers come out as `generation_created` events whose message streams carry audio frames and the
transcript, tools go through `update_tools` / `update_chat_ctx` / `generate_reply`, and an interruption is handled
as `AgentActivity` handles it (`interrupt()`, then `truncate()` at the playback position).

Every test also checks that nothing went wrong on the way: the session's recorded server events hold no `error`,
the plugin emitted no `error` event, and its receive loop logged no failure to handle a frame (the plugin logs and
skips a frame it cannot handle, so a frame it rejects shows only there).
"""

import asyncio
import base64
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from app.log_reader import RecordedSession, read_session
from domain import events as ev
from domain import records as rec
from tests.realtime_client import pcm24k, silence, words

try:
    import livekit.plugins.openai.realtime  # only whether the framework is there
except ImportError as missing:  # pragma: no cover - the compat extra is part of the dev install
    pytest.skip(
        f"livekit-plugins-openai is not installed ({missing}); install the compat extra: pip install -e '.[compat]'",
        allow_module_level=True,
    )

from livekit import rtc
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel, RealtimeSession
from livekit.plugins.openai.realtime.realtime_model import process_base_url
from openai.types import realtime as oai

RATE = 24000
BYTES_PER_MS = RATE * 2 // 1000
ANSWER = "Sure. The weather in Paris is sunny today, with a light breeze."
STORY = "Let me tell you a long story about a lighthouse keeper and the sea. " * 14

# Configured as the plugin's own docstring and LiveKit's turn-detection guide configure them.
TRANSCRIPTION = oai.AudioTranscription(model="gpt-4o-transcribe")
TURN_DETECTION = oai.realtime_audio_input_turn_detection.ServerVad(
    type="server_vad",
    threshold=0.5,
    prefix_padding_ms=300,
    silence_duration_ms=500,
    create_response=True,
    interrupt_response=True,
)


@llm.function_tool
async def get_weather(city: str) -> str:
    """Get the current weather in a city.

    Args:
        city: The name of the city.
    """
    return f"The weather in {city} is sunny, 21 degrees."


@dataclasses.dataclass
class Spoken:
    """One assistant message as the plugin delivered it."""

    message_id: str
    audio: bytes
    text: str
    modalities: list[str]


@dataclasses.dataclass
class Answer:
    """Everything one `generation_created` delivered."""

    generation: "llm.GenerationCreatedEvent"
    messages: list[Spoken]
    calls: list["llm.FunctionCall"]


class Probe:
    """The plugin's session and everything it reported: raw frames both ways, events, errors, log records."""

    def __init__(self, session: "RealtimeSession") -> None:
        self.session = session
        self.server: list[dict[str, Any]] = []
        self.client: list[dict[str, Any]] = []
        self.errors: list[Any] = []
        self.server_generations: asyncio.Queue[llm.GenerationCreatedEvent] = asyncio.Queue()
        self.transcripts: list[llm.InputTranscriptionCompleted] = []
        self.speech_started = 0
        self._changed = asyncio.Event()
        session.on("openai_server_event_received", self._on_server)
        session.on("openai_client_event_queued", self.client.append)
        session.on("error", self._on_error)
        session.on("generation_created", self._on_generation)
        session.on("input_audio_transcription_completed", self._on_transcript)
        session.on("input_speech_started", self._on_speech_started)

    def _on_server(self, event: dict[str, Any]) -> None:
        self.server.append(event)
        self._changed.set()

    def _on_generation(self, generation: "llm.GenerationCreatedEvent") -> None:
        if not generation.user_initiated:  # generate_reply's own future delivers the others
            self.server_generations.put_nowait(generation)

    def _on_error(self, error: Any) -> None:
        self.errors.append(error)
        self._changed.set()

    def _on_transcript(self, event: "llm.InputTranscriptionCompleted") -> None:
        self.transcripts.append(event)
        self._changed.set()

    def _on_speech_started(self, _: Any) -> None:
        self.speech_started += 1
        self._changed.set()

    async def until(self, done: Callable[[], Any], timeout: float = 45) -> Any:
        """Wait until `done()` is truthy (checked after every frame and event), and return its value."""
        try:
            async with asyncio.timeout(timeout):
                while not (result := done()):
                    self._changed.clear()
                    await self._changed.wait()
                return result
        except TimeoutError:
            errors = [f["error"] for f in self.server if f["type"] == "error"]
            raise AssertionError(f"nothing after {timeout} s; the server's error frames: {errors}") from None

    async def frame(self, kind: str, timeout: float = 45, where: Callable[[dict[str, Any]], bool] = bool) -> dict:
        """The first server frame of type `kind` (for which `where` holds)."""
        return await self.until(lambda: next((f for f in self.server if f["type"] == kind and where(f)), None), timeout)

    @property
    def session_id(self) -> str:
        return next(f["session"]["id"] for f in self.server if f["type"] == "session.created")

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.client if e["type"] == kind]

    async def speak(self, pcm: bytes, frame_ms: int = 10) -> None:
        """Push 24 kHz mono pcm16 as a LiveKit room delivers a microphone: 10 ms `rtc.AudioFrame`s, in real time."""
        size = frame_ms * BYTES_PER_MS
        clock = asyncio.get_running_loop().time
        start = clock()
        for offset in range(0, len(pcm), size):
            chunk = pcm[offset : offset + size]
            self.session.push_audio(
                rtc.AudioFrame(data=chunk, sample_rate=RATE, num_channels=1, samples_per_channel=len(chunk) // 2)
            )
            ahead = start + (offset + len(chunk)) / (RATE * 2) - clock()
            if ahead > 0.05:  # a microphone's pace, without a timer per 10 ms frame
                await asyncio.sleep(ahead)

    async def server_generation(self, timeout: float = 45) -> "llm.GenerationCreatedEvent":
        """The next generation the server started by itself (server VAD's `create_response`)."""
        async with asyncio.timeout(timeout):
            return await self.server_generations.get()


async def collect(generation: "llm.GenerationCreatedEvent", timeout: float = 60) -> Answer:
    """Read a generation to its end as AgentActivity does: every message's audio and text, every function call."""
    messages: list[Spoken] = []
    calls: list[llm.FunctionCall] = []

    async def read_message(message: "llm.MessageGeneration") -> None:
        audio = bytearray()
        text: list[str] = []

        async def read_audio() -> None:
            async for frame in message.audio_stream:
                assert (frame.sample_rate, frame.num_channels) == (RATE, 1)
                audio.extend(frame.data.tobytes())

        async def read_text() -> None:
            async for delta in message.text_stream:
                text.append(str(delta))

        await asyncio.gather(read_audio(), read_text())
        messages.append(Spoken(message.message_id, bytes(audio), "".join(text), list(await message.modalities)))

    async def read_messages() -> None:
        async for message in generation.message_stream:
            await read_message(message)

    async def read_calls() -> None:
        async for call in generation.function_stream:
            calls.append(call)

    async with asyncio.timeout(timeout):
        await asyncio.gather(read_messages(), read_calls())
    return Answer(generation, messages, calls)


class _Failures(logging.Handler):
    """Error records of the plugin: how its receive loop reports a frame it failed to handle."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def redundant_cancel(error: "ev.ErrorEvent") -> bool:
    """OpenAI's answer to a `response.cancel` that arrives after the server VAD already cancelled the response
    (`interrupt_response`): `response_cancel_not_active`, "Cancellation failed: ...". AgentActivity sends that
    cancel on every barge-in, and the plugin drops the answer unseen (`RealtimeSession._handle_error` returns on a
    message starting with "Cancellation failed")."""
    return error.error.code == "response_cancel_not_active" and error.error.message.startswith("Cancellation failed")


@contextlib.asynccontextmanager
async def livekit(
    conversation: Any, tolerate: Callable[["ev.ErrorEvent"], bool] = lambda _: False, **options: Any
) -> AsyncIterator[Probe]:
    """A plugin session on Vocalis, configured as LiveKit's examples configure one, open until the block ends.

    Ends with the checks every flow shares: no `error` frame recorded (but those `tolerate` names), none emitted
    by the plugin, no frame the plugin failed to handle."""
    failures = _Failures()
    plugin_log = logging.getLogger("livekit")
    plugin_log.addHandler(failures)
    options = {"input_audio_transcription": TRANSCRIPTION, "turn_detection": TURN_DETECTION, **options}
    try:
        async with aiohttp.ClientSession() as http:
            model = RealtimeModel(base_url=conversation.stack.http_url, api_key="test", http_session=http, **options)
            session = model.session()
            probe = Probe(session)
            try:
                await probe.frame("session.created", timeout=20)
                await probe.until(lambda: any(f["type"] in ("session.updated", "error") for f in probe.server))
                yield probe
            finally:
                await session.aclose()
                await model.aclose()
    finally:
        plugin_log.removeHandler(failures)
    recorded = await recorded_session(conversation, probe)
    errors = [o for o in recorded.outputs if isinstance(o, ev.ErrorEvent) and not tolerate(o)]
    assert errors == [], "Vocalis sent an error"
    assert probe.errors == [], "the plugin emitted an error"
    assert [r.getMessage() for r in failures.records] == [], "the plugin failed to handle a frame"


async def recorded_session(conversation: Any, probe: Probe) -> RecordedSession:
    """The session's log, once it holds every frame the plugin received."""
    async with asyncio.timeout(10):
        while True:
            recorded = await read_session(conversation.stack.bus, probe.session_id)
            if len(recorded.outputs) >= len(probe.server):
                return recorded
            await asyncio.sleep(0.1)


def client_events(recorded: RecordedSession, kind: type) -> list[Any]:
    return [r.event for _, r in recorded.inputs if isinstance(r, rec.ClientEventReceived) and isinstance(r.event, kind)]


async def say_hello(probe: Probe) -> None:
    """A spoken user turn: "hello world", then enough silence for the server VAD to end it."""
    await probe.speak(pcm24k("hello_world.wav") + silence(800))


def test_base_url_becomes_the_realtime_websocket_url(stack):
    """The plugin turns the HTTP base URL into Vocalis's WebSocket endpoint: http->ws, `/realtime`, `?model=`."""
    assert process_base_url(stack.http_url, "gpt-realtime") == f"{stack.ws_url}/realtime?model=gpt-realtime"


async def test_user_transcript_reaches_the_framework(conversation):
    """Input transcription on (an OpenAI transcription model name, as LiveKit's examples set it): the user's
    spoken turn reaches the plugin as a final `input_audio_transcription_completed` for the committed item, and
    the plugin's mirror of the conversation holds it."""
    conversation.llm.reply("Hi.")
    async with livekit(conversation) as probe:
        updated = next(f for f in probe.server if f["type"] == "session.updated")["session"]
        assert updated["audio"]["input"]["transcription"]["model"] == "gpt-4o-transcribe"
        assert updated["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert updated["audio"]["output"]["voice"] == "marin", "LiveKit's default voice, accepted"
        await say_hello(probe)
        final = await probe.until(lambda: next((t for t in probe.transcripts if t.is_final), None), timeout=60)
        committed = await probe.frame("input_audio_buffer.committed")
        assert probe.speech_started == 1
        assert final.item_id == committed["item_id"]
        assert words(final.transcript) == "hello world"
        interim = [t for t in probe.transcripts if not t.is_final]
        assert interim and all(t.item_id == final.item_id for t in probe.transcripts)
        assert all(final.transcript.startswith(t.transcript) for t in interim), "deltas add up to the transcript"
        assert interim[-1].transcript == final.transcript
        assert final.turn_started_at is not None, "speech_started and the transcript name the same item"
        await collect(await probe.server_generation(timeout=60))
        user = probe.session.chat_ctx.get_by_id(final.item_id)
        assert user is not None and user.role == "user" and words(user.text_content or "") == "hello world"
    recorded = await read_session(conversation.stack.bus, probe.session_id)
    opened = next(r for _, r in recorded.inputs if isinstance(r, rec.SessionOpened))
    assert opened.model == "gpt-realtime", "the model came from the URL's ?model="


async def test_spoken_turn_answered_in_audio(conversation):
    """Speech, then silence, in: the server VAD ends the turn and answers; the plugin hands the framework a
    generation whose message carries assistant audio and a transcript equal to the scripted reply."""
    conversation.llm.reply(ANSWER)
    async with livekit(conversation) as probe:
        await say_hello(probe)
        answer = await collect(await probe.server_generation(timeout=60), timeout=90)
        done = await probe.frame("response.done")
    assert not answer.generation.user_initiated, "the server's own response to the turn"
    assert answer.calls == []
    [spoken] = answer.messages
    assert spoken.modalities == ["audio", "text"]
    assert len(spoken.audio) > 0.5 * RATE * 2 and len(spoken.audio) % 2 == 0, "at least half a second of pcm16"
    assert spoken.text == ANSWER
    assert done["response"]["status"] == "completed"
    assert words(conversation.llm.requests[0]["messages"][-1]["content"]) == "hello world"
    assistant = probe.session.chat_ctx.get_by_id(spoken.message_id)
    assert assistant is not None and assistant.text_content == ANSWER


async def test_tool_round_trip(conversation):
    """A `@function_tool` registered with `update_tools` is offered to the LLM; its call comes back on the
    generation's function stream, the framework runs it, adds the output with `update_chat_ctx` and asks for the
    reply with `generate_reply`, as AgentActivity does; the LLM gets the output and its answer is spoken."""
    llm_fake = conversation.llm
    llm_fake.reply(tool_calls=[("get_weather", {"city": "Paris"})])
    llm_fake.reply(ANSWER)
    async with livekit(conversation) as probe:
        session = probe.session
        await session.update_tools([get_weather])
        chat = session.chat_ctx.copy()
        chat.add_message(role="user", content="What is the weather in Paris?")
        await session.update_chat_ctx(chat)
        first = await collect(await asyncio.wait_for(session.generate_reply(), 20))
        [call] = first.calls
        assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
        result = await llm.execute_function_call(
            llm.FunctionToolCall(name=call.name, arguments=call.arguments, call_id=call.call_id), session.tools
        )
        assert result.raw_exception is None
        assert result.fnc_call_out.output == "The weather in Paris is sunny, 21 degrees."
        chat = session.chat_ctx.copy()
        chat.items.append(result.fnc_call_out)
        await session.update_chat_ctx(chat)
        second = await collect(await asyncio.wait_for(session.generate_reply(tool_choice="auto"), 20), timeout=90)
    assert first.generation.user_initiated and second.generation.user_initiated
    assert first.messages == [], "a reply of tool calls only has no message"
    [spoken] = second.messages
    assert spoken.text == ANSWER and len(spoken.audio) > RATE
    offered = llm_fake.requests[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["get_weather"]
    assert offered[0]["function"]["parameters"]["properties"]["city"]["type"] == "string"
    messages = llm_fake.requests[1]["messages"]
    calls = [m for m in messages if m.get("tool_calls")]
    [asked] = calls[-1]["tool_calls"]
    assert asked["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": asked["id"],
        "content": "The weather in Paris is sunny, 21 degrees.",
    }


class Player:
    """A speaker that plays a message's audio in real time as it arrives, as LiveKit's audio output does, and
    knows its playback position: what was played, not what was received."""

    def __init__(self) -> None:
        self.clock = asyncio.get_running_loop().time
        self.received_s = 0.0
        self.ends_at = 0.0  # when the audio received so far will have been played out

    def add(self, frame: "rtc.AudioFrame") -> None:
        self.ends_at = max(self.ends_at, self.clock()) + frame.duration
        self.received_s += frame.duration

    @property
    def position_s(self) -> float:
        return self.received_s - max(0.0, self.ends_at - self.clock())

    async def played(self, seconds: float) -> None:
        """Return once the first `seconds` of the audio have been played (their audio must have arrived)."""
        await asyncio.sleep(max(0.0, self.ends_at - (self.received_s - seconds) - self.clock()))


def clause_times(frames: list[dict[str, Any]], item_id: str) -> list[tuple[str, float, float]]:
    """The clauses of an assistant item as the server sent them, with where each one's audio starts and ends (ms):
    each transcript delta is followed by its clause's audio."""
    clauses: list[tuple[str, float, float]] = []
    at = 0.0
    for frame in frames:
        if frame.get("item_id") != item_id:
            continue
        if frame["type"] == "response.output_audio_transcript.delta":
            clauses.append((frame["delta"], at, at))
        elif frame["type"] == "response.output_audio.delta" and clauses:
            at += len(base64.b64decode(frame["delta"])) / BYTES_PER_MS
            clauses[-1] = (clauses[-1][0], clauses[-1][1], at)
    return clauses


async def test_barge_in_truncates_at_what_was_played(conversation):
    """While a long answer streams and plays, the user speaks: the server cancels the answer (`turn_detected`),
    the plugin reports `input_speech_started`, and the framework interrupts (`interrupt()`) and truncates the
    assistant item at the player's position (`truncate(audio_end_ms=...)`), as AgentActivity does. The truncate
    is recorded and accepted (`conversation.item.truncated`, no error of its own), and the next LLM request holds
    only the part of the answer that was heard."""
    conversation.llm.reply(STORY, delay_s=0.05)
    conversation.llm.reply("Okay.")
    async with livekit(conversation, tolerate=redundant_cancel) as probe:
        session = probe.session
        chat = session.chat_ctx.copy()
        chat.add_message(role="user", content="Tell me a story.")
        await session.update_chat_ctx(chat)
        generation = await asyncio.wait_for(session.generate_reply(), 20)
        message = await asyncio.wait_for(anext(aiter(generation.message_stream)), 20)
        player = Player()
        stopped_at: list[float] = []  # the playback position when the user barged in
        heard: list[str] = []

        def on_speech_started(_: Any) -> None:
            stopped_at.append(player.position_s)
            session.interrupt()  # AgentActivity.interrupt() does this at once, on input_speech_started

        session.on("input_speech_started", on_speech_started)

        async def play() -> None:
            async for frame in message.audio_stream:
                if not stopped_at:
                    player.add(frame)

        async def forward_text() -> None:
            async for delta in message.text_stream:
                if not stopped_at:
                    heard.append(str(delta))

        playing = asyncio.gather(play(), forward_text())
        await probe.until(lambda: player.received_s >= 1.0, timeout=60)
        await player.played(1.0)  # a second of the answer has been heard
        speaking = asyncio.create_task(say_hello(probe))  # the user's microphone, live
        async with asyncio.timeout(60):
            await playing  # the plugin closes the streams at the cancelled response's end
        assert stopped_at, "the plugin reported the user's speech while the answer played"
        audio_end_ms = int(stopped_at[0] * 1000)
        session.truncate(
            message_id=message.message_id,
            modalities=await message.modalities,
            audio_end_ms=audio_end_ms,
            audio_transcript="".join(heard),
        )
        truncated = await probe.frame("conversation.item.truncated", timeout=20)
        await speaking
        reply = await collect(await probe.server_generation(timeout=60), timeout=90)
    cancelled = next(f for f in probe.server if f["type"] == "response.done")["response"]
    assert (cancelled["status"], cancelled["status_details"]["reason"]) == ("cancelled", "turn_detected")
    assert 1000 <= audio_end_ms <= player.received_s * 1000
    assert (truncated["item_id"], truncated["content_index"], truncated["audio_end_ms"]) == (
        message.message_id,
        0,
        audio_end_ms,
    )
    recorded = await read_session(conversation.stack.bus, probe.session_id)
    [truncate] = client_events(recorded, ev.ItemTruncateRequested)
    assert (truncate.item_id, truncate.content_index, truncate.audio_end_ms) == (message.message_id, 0, audio_end_ms)
    # The plugin's own cancel reached a response the server had already cancelled: OpenAI's answer to that is
    # an error, which the plugin drops unseen. It is the only error, and it comes after the barge-in's end.
    outputs = recorded.outputs
    [(at, refused)] = [(n, o) for n, o in enumerate(outputs) if isinstance(o, ev.ErrorEvent)]
    assert redundant_cancel(refused) and refused.error.event_id is None
    barged = next(n for n, o in enumerate(outputs) if isinstance(o, ev.ResponseDone))
    assert outputs[barged].response.status_details == {"type": "cancelled", "reason": "turn_detected"}
    assert barged < at
    assert [m.text for m in reply.messages] == ["Okay."]
    # The next request keeps what was heard: every clause that had played to its end, nothing of a clause
    # that had not started (a clause is a transcript delta and the audio that follows it).
    clauses = clause_times(probe.server, message.message_id)
    played = " ".join(text for text, _, end in clauses if end <= audio_end_ms)
    started = " ".join(text for text, start, _ in clauses if start < audio_end_ms)
    [kept] = [m["content"] for m in conversation.llm.requests[1]["messages"] if m["role"] == "assistant"]
    assert words(kept).startswith(words(played)) and words(started).startswith(words(kept)), (kept, clauses)
    assert words(kept) != words(" ".join(text for text, _, _ in clauses)), "the unheard part is gone"


async def test_reply_without_instructions(conversation):
    """`generate_reply()` with nothing more sends `response.create` with `"instructions": null`: Vocalis takes
    that as "not given" and answers with the session's instructions (set through `update_instructions`),
    and echoes the plugin's `metadata.client_event_id`, which is how the plugin matches the reply to the call."""
    conversation.llm.reply("Hello there!")
    async with livekit(conversation) as probe:
        session = probe.session
        await session.update_instructions("You are a helpful assistant. Answer briefly.")
        chat = session.chat_ctx.copy()
        chat.add_message(role="user", content="Say hello.")
        await session.update_chat_ctx(chat)
        answer = await collect(await asyncio.wait_for(session.generate_reply(), 20), timeout=90)
        [create] = probe.sent("response.create")
    assert "instructions" in create["response"] and create["response"]["instructions"] is None
    recorded = await read_session(conversation.stack.bus, probe.session_id)
    [asked] = client_events(recorded, ev.ResponseCreateRequested)
    assert asked.response.instructions is msgspec.UNSET, "null instructions: not given"
    assert asked.response.metadata == {"client_event_id": create["event_id"]}
    assert answer.generation.user_initiated, "response.created carried the plugin's client_event_id back"
    [spoken] = answer.messages
    assert spoken.text == "Hello there!" and len(spoken.audio) > 0
    request = conversation.llm.requests[0]["messages"]
    assert request[0] == {"role": "system", "content": "You are a helpful assistant. Answer briefly."}
    assert request[-1] == {"role": "user", "content": "Say hello."}
