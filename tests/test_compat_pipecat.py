"""pipecat-ai's OpenAI Realtime service, unchanged, against Vocalis: a compatibility test.

Each test builds the pipeline a pipecat voice bot has (its own `examples/realtime/realtime-openai.py`): a source
standing in for the user's microphone (`InputAudioRawFrame`s), the `LLMContextAggregatorPair`, the
`OpenAIRealtimeLLMService` pointed at Vocalis with its `base_url` option (it dials `base_url + "?model=..."`), an
output transport that plays the assistant's audio in real time (pipecat's `BaseOutputTransport` with a simulated
clock, as its websocket transports have), run by a `PipelineWorker` on a `WorkerRunner` (pipecat 1.14's names for
`PipelineTask` and `PipelineRunner`). The session is configured as the example configures it: input transcription
on (`InputAudioTranscription()`, pipecat's default model name), `SemanticTurnDetection()`, near-field noise
reduction; the conversation is kicked off with an `LLMRunFrame`, as the example does.

pipecat parses every server event into strict pydantic models in its receive loop, and the loop ends, logging
only, on a parse failure or an `error` event. So every test also proves the loop is still alive after its flow
(`retrieve_conversation_item`, a public method the loop alone answers), that pipecat logged no error, and that
Vocalis's own record of the session (its log on NATS) holds no `error` event.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from msgspec import UNSET

from app.analytics import session_of
from app.log_reader import RecordedSession, read_entries, read_session
from domain import events as ev
from domain.records import ClientEventReceived
from tests.realtime_client import pcm24k, silence, words

try:
    from loguru import logger
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        ErrorFrame,
        Frame,
        InputAudioRawFrame,
        InterimTranscriptionFrame,
        InterruptionFrame,
        LLMFullResponseEndFrame,
        LLMRunFrame,
        StartFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        TTSTextFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        UserTurnMessageAddedMessage,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.llm_service import FunctionCallParams
    from pipecat.services.openai.realtime.events import (
        AudioConfiguration,
        AudioInput,
        ConversationItem,
        InputAudioNoiseReduction,
        InputAudioTranscription,
        SemanticTurnDetection,
        SessionProperties,
    )
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
    from pipecat.transports.base_output import BaseOutputTransport
    from pipecat.transports.base_transport import TransportParams
    from pipecat.workers.runner import WorkerRunner
except ImportError as missing:  # pragma: no cover - the framework is an optional test dependency
    pytest.skip(f"pipecat-ai cannot be imported: {missing}", allow_module_level=True)

RATE = 24000
CHUNK = RATE * 2 // 50  # 20 ms of pcm16, a microphone frame
INSTRUCTIONS = "You are a friendly voice assistant. Keep your answers short."
GREETING = "Hi there, how can I help?"
ANSWER = "Sure. The weather in Paris is sunny today, with a light breeze."
STORY = "Let me tell you a long story about a lighthouse keeper. " * 12


def ms_of(pcm: bytes) -> int:
    return len(pcm) * 1000 // (RATE * 2)


# --- the pipeline's ends -------------------------------------------------------------------------------------


class Microphone(FrameProcessor):
    """The pipeline's source: pushes the user's speech as 20 ms `InputAudioRawFrame`s at 24 kHz."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)

    async def say(self, pcm: bytes, real_time: bool = False) -> None:
        for start in range(0, len(pcm), CHUNK):
            await self.push_frame(
                InputAudioRawFrame(audio=pcm[start : start + CHUNK], sample_rate=RATE, num_channels=1)
            )
            if real_time:
                await asyncio.sleep(0.02)


class Recorder(FrameProcessor):
    """Passes every frame on and keeps it (but the microphone's), with its direction, for the test to await."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frames: list[tuple[Frame, FrameDirection]] = []
        self._arrived = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            self.frames.append((frame, direction))
            self._arrived.set()
        await self.push_frame(frame, direction)

    def index(self, frame: Frame) -> int:
        return next(i for i, (f, _) in enumerate(self.frames) if f is frame)

    def of(self, kind: type, since: int = 0) -> list[Any]:
        return [f for f, _ in self.frames[since:] if isinstance(f, kind)]

    async def wait_for(self, done: Callable[[], bool], what: str, timeout: float = 45) -> None:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._arrived.clear()
                    if done():
                        return
                    await self._arrived.wait()
        except TimeoutError:
            names = [type(f).__name__ for f, _ in self.frames[-30:]]
            raise AssertionError(f"no {what} within {timeout} s; last frames: {names}") from None

    async def next(self, kind: type, since: int, timeout: float = 45) -> Any:
        await self.wait_for(lambda: bool(self.of(kind, since)), kind.__name__, timeout)
        return self.of(kind, since)[0]


class Speaker(BaseOutputTransport):
    """The output transport: plays the assistant's audio in real time on a simulated clock (as pipecat's websocket
    transports do), so pipecat's playback bookkeeping (bot started/stopped speaking) runs as with a real one."""

    def __init__(self) -> None:
        super().__init__(
            TransportParams(audio_out_enabled=True, audio_out_sample_rate=RATE, audio_out_end_silence_secs=0)
        )
        self.played = bytearray()
        self._clock = 0.0
        self._progress = asyncio.Event()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: Any) -> bool:
        now = time.monotonic()
        self._clock = max(self._clock, now) + len(frame.audio) / (2 * frame.sample_rate * frame.num_channels)
        await asyncio.sleep(self._clock - now)
        self.played += frame.audio
        self._progress.set()
        return True

    async def until_played(self, ms: int, timeout: float = 45) -> None:
        async with asyncio.timeout(timeout):
            while True:
                self._progress.clear()
                if ms_of(bytes(self.played)) >= ms:
                    return
                await self._progress.wait()


# --- one pipecat bot on Vocalis ------------------------------------------------------------------------------


@dataclass
class Bot:
    llm: OpenAIRealtimeLLMService
    context: LLMContext
    mic: Microphone
    heard: Recorder  # between the user aggregator and the service: what the service pushes upstream
    said: Recorder  # between the service and the output: what it pushes downstream, and the output's replies
    speaker: Speaker
    worker: PipelineWorker
    problems: list[str] = field(default_factory=list)  # pipecat's ERROR logs and ErrorFrames
    items: dict[str, ConversationItem] = field(default_factory=dict)  # on_conversation_item_created
    user_messages: list[str] = field(default_factory=list)  # on_user_turn_message_added

    def audio(self, since: int = 0) -> bytes:
        return b"".join(f.audio for f in self.said.of(TTSAudioRawFrame, since))

    def transcript(self, since: int = 0) -> str:
        return "".join(f.text for f in self.said.of(TTSTextFrame, since))

    def last_text(self, since: int = 0) -> int:
        """The index of the last text frame said from `since` on: its response's end comes after it (the end may
        already have arrived by the time a test sees the text complete)."""
        return self.said.index(self.said.of(TTSTextFrame, since)[-1])

    async def answer_played(self, since: int, timeout: float = 45) -> None:
        """Waits for a response's end and then for the output to have played it all."""
        end = await self.said.next(LLMFullResponseEndFrame, since, timeout)
        await self.said.next(BotStoppedSpeakingFrame, self.said.index(end), timeout)

    def assistant_items(self) -> list[ConversationItem]:
        return [i for i in self.items.values() if i.type == "message" and i.role == "assistant"]

    async def alive(self, item_id: str) -> ConversationItem:
        """Proves the receive loop still runs: only it resolves `retrieve_conversation_item`."""
        try:
            async with asyncio.timeout(15):
                return await self.llm.retrieve_conversation_item(item_id)
        except TimeoutError:
            raise AssertionError(f"pipecat's receive loop is dead; it logged: {self.problems}") from None


def realtime_service(conversation: Any) -> OpenAIRealtimeLLMService:
    """The service as pipecat's realtime example configures it, dialled at Vocalis through `base_url`."""
    return OpenAIRealtimeLLMService(
        api_key="test-key",
        base_url=f"{conversation.ws_url}/realtime",
        settings=OpenAIRealtimeLLMService.Settings(
            system_instruction=INSTRUCTIONS,
            session_properties=SessionProperties(
                audio=AudioConfiguration(
                    input=AudioInput(
                        transcription=InputAudioTranscription(),
                        turn_detection=SemanticTurnDetection(),
                        noise_reduction=InputAudioNoiseReduction(type="near_field"),
                    )
                )
            ),
        ),
    )


@contextlib.asynccontextmanager
async def pipecat_bot(
    conversation: Any, context: LLMContext | None = None, functions: dict[str, Any] | None = None
) -> AsyncIterator[Bot]:
    """Runs the bot's pipeline, kicked off with an `LLMRunFrame`, for the length of the block; `functions` are
    registered with `llm.register_function` before it starts, as pipecat's examples do."""
    llm = realtime_service(conversation)
    for name, handler in (functions or {}).items():
        llm.register_function(name, handler)
    context = context if context is not None else LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)
    mic, heard, said, speaker = Microphone(), Recorder(), Recorder(), Speaker()
    pipeline = Pipeline([mic, user_aggregator, heard, llm, said, speaker, assistant_aggregator])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE))
    bot = Bot(llm, context, mic, heard, said, speaker, worker)

    @llm.event_handler("on_conversation_item_created")
    async def on_item(_llm: Any, item_id: str, item: ConversationItem) -> None:
        bot.items[item_id] = item

    @user_aggregator.event_handler("on_user_turn_message_added")
    async def on_user_message(_aggregator: Any, message: UserTurnMessageAddedMessage) -> None:
        bot.user_messages.append(message.content)

    @worker.event_handler("on_pipeline_error")
    async def on_error(_worker: Any, frame: ErrorFrame) -> None:
        bot.problems.append(f"ErrorFrame: {frame.error}")

    sink = logger.add(lambda message: bot.problems.append(str(message)), level="ERROR")
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    await worker.queue_frames([LLMRunFrame()])
    try:
        yield bot
    finally:
        await worker.cancel()
        try:
            await asyncio.wait_for(running, 20)
        finally:
            logger.remove(sink)


async def session_log(conversation: Any, until: Callable[[RecordedSession], bool]) -> RecordedSession:
    """The one session's record on the bus, once `until` holds (the log is written asynchronously)."""
    bus = conversation.stack.bus
    for _ in range(100):
        sessions = {session_of(e.subject) for e in await read_entries(bus, f"{bus.subjects.prefix}.session.>")}
        assert len(sessions) <= 1, sessions
        if sessions:
            recorded = await read_session(bus, sessions.pop())
            if until(recorded):
                return recorded
        await asyncio.sleep(0.1)
    raise AssertionError("the session's log never showed what the test waited for")


def client_events(log: RecordedSession, kind: type) -> list[Any]:
    return [r.event for _, r in log.inputs if isinstance(r, ClientEventReceived) and isinstance(r.event, kind)]


def responses_done(log: RecordedSession) -> list[ev.Response]:
    return [e.response for e in log.outputs if isinstance(e, ev.ResponseDone)]


def assert_no_errors(bot: Bot, log: RecordedSession) -> None:
    errors = [e for e in log.outputs if isinstance(e, ev.ErrorEvent)]
    assert not errors, f"Vocalis sent error events: {errors}"
    assert not bot.problems, f"pipecat reported problems: {bot.problems}"


async def greeted(bot: Bot) -> None:
    """The kick-off reply has been played to the end (the user speaks only after it)."""
    await bot.answer_played(0, timeout=45)


# --- the tests -----------------------------------------------------------------------------------------------


async def test_kickoff_reply_without_instructions(conversation):
    """pipecat's way to ask for a reply, an `LLMRunFrame` over an empty context, sends `response.create` with no
    instructions of its own: Vocalis answers with the session's instructions (set by pipecat's `session.update`),
    in audio, and pipecat plays it and records it in its context."""
    conversation.llm.reply(GREETING)
    async with pipecat_bot(conversation) as bot:
        await greeted(bot)
        audio = bot.audio()
        assert audio and len(audio) % 2 == 0, "assistant audio, pcm16"
        assert len(bot.speaker.played) >= len(audio), "the output transport played all of it"
        assert bot.transcript() == GREETING
        [item] = bot.assistant_items()
        retrieved = await bot.alive(item.id)
        assert retrieved.content and retrieved.content[0].transcript == GREETING
        log = await session_log(conversation, lambda log: len(responses_done(log)) == 1)
    [create] = client_events(log, ev.ResponseCreateRequested)
    assert create.response.instructions is UNSET, "no instructions of its own"
    assert create.response.output_modalities == ("audio",)
    [request] = conversation.llm.requests
    assert request["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    [done] = responses_done(log)
    assert done.status == "completed"
    assert [m for m in bot.context.get_messages() if m.get("role") == "assistant"] == [
        {"role": "assistant", "content": GREETING}
    ]
    assert_no_errors(bot, log)


async def test_input_transcription_reaches_pipecat(conversation):
    """With transcription configured as pipecat's example does (`InputAudioTranscription()`, which names
    `gpt-realtime-whisper`), the user's spoken turn comes back as pipecat `TranscriptionFrame`s and lands in the
    pipecat context as the user's message."""
    conversation.llm.reply(GREETING)
    conversation.llm.reply(ANSWER)
    async with pipecat_bot(conversation) as bot:
        await greeted(bot)
        mark, said_mark = len(bot.heard.frames), len(bot.said.frames)
        await bot.mic.say(pcm24k("hello_world.wav") + silence(1000))
        final = await bot.heard.next(TranscriptionFrame, mark)
        assert words(final.text) == "hello world"
        interim = bot.heard.of(InterimTranscriptionFrame, mark)
        assert all(words(f.text) for f in interim)
        await bot.answer_played(said_mark, timeout=60)
        await bot.said.wait_for(lambda: bool(bot.user_messages), "the user's message in the context")
        assert [words(m) for m in bot.user_messages] == ["hello world"]
        user_items = [i for i in bot.items.values() if i.role == "user"]
        assert len(user_items) == 1
        retrieved = await bot.alive(user_items[0].id)
        assert retrieved.content and words(retrieved.content[0].transcript or "") == "hello world"
        log = await session_log(conversation, lambda log: len(responses_done(log)) == 2)
    updated = [e.session for e in log.outputs if isinstance(e, ev.SessionUpdated)]
    assert updated and updated[-1].transcription is not None, "transcription stays on"
    assert updated[-1].turn_detection is not None and updated[-1].turn_detection.type == "semantic_vad"
    assert_no_errors(bot, log)


async def test_audio_turn_answered_in_audio(conversation):
    """A spoken turn (speech, then silence: server turn detection ends it) is answered in audio: pipecat pushes
    the assistant's audio as `TTSAudioRawFrame`s, the output plays it, and the transcript is the scripted reply."""
    conversation.llm.reply(GREETING)
    conversation.llm.reply(ANSWER)
    async with pipecat_bot(conversation) as bot:
        await greeted(bot)
        mark = len(bot.said.frames)
        await bot.mic.say(pcm24k("hello_world.wav") + silence(1000))
        await bot.answer_played(mark, timeout=60)
        audio = bot.audio(mark)
        assert len(audio) > RATE * 2 // 2 and len(audio) % 2 == 0, "at least half a second of pcm16"
        assert bot.transcript(mark) == ANSWER
        answer_item = bot.assistant_items()[-1]
        retrieved = await bot.alive(answer_item.id)
        assert retrieved.content and retrieved.content[0].transcript == ANSWER
        log = await session_log(conversation, lambda log: len(responses_done(log)) == 2)
    assert [r.status for r in responses_done(log)] == ["completed", "completed"]
    question = conversation.llm.requests[1]["messages"][-1]
    assert question["role"] == "user" and words(question["content"]) == "hello world"
    assert_no_errors(bot, log)


async def test_tool_round_trip(conversation):
    """Tools given in the pipecat context (`ToolsSchema`) reach Vocalis; the fake LLM's tool call runs the function
    registered with `register_function`, its result goes back as a `function_call_output`, and the LLM's next
    reply, which sees the result, is spoken."""
    calls: list[dict[str, Any]] = []
    result = {"city": "Paris", "conditions": "sunny", "temperature_c": 21}

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        await params.result_callback(result)

    weather = FunctionSchema(
        name="get_weather",
        description="The current weather in a city",
        properties={"city": {"type": "string", "description": "The city"}},
        required=["city"],
    )
    context = LLMContext(
        [{"role": "user", "content": "What is the weather in Paris?"}], ToolsSchema(standard_tools=[weather])
    )
    conversation.llm.reply(tool_calls=[("get_weather", {"city": "Paris"})])
    conversation.llm.reply(ANSWER)
    async with pipecat_bot(conversation, context, {"get_weather": get_weather}) as bot:
        await bot.said.wait_for(lambda: bot.transcript() == ANSWER, "the reply after the tool call", timeout=60)
        await bot.answer_played(bot.last_text())
        assert bot.audio(), "the reply is spoken"
        retrieved = await bot.alive(bot.assistant_items()[-1].id)
        assert retrieved.content and retrieved.content[0].transcript == ANSWER
        log = await session_log(conversation, lambda log: len(responses_done(log)) == 2)
    assert calls == [{"city": "Paris"}]
    [first, second] = conversation.llm.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    outputs = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(outputs) == 1 and json.loads(outputs[0]["content"]) == result
    call = next(m for m in second["messages"] if m.get("tool_calls"))
    assert call["tool_calls"][0]["id"] == outputs[0]["tool_call_id"]
    assert_no_errors(bot, log)


async def test_barge_in_truncates_at_what_was_played(conversation):
    """While a long answer streams, the user speaks: Vocalis's speech_started makes pipecat truncate the
    assistant item at what it had played (its wall clock since the first audio, capped by the audio it got), the
    truncate is accepted (`conversation.item.truncated`, no error), and the user's turn is answered."""
    conversation.llm.reply(STORY, delay_s=0.05)
    conversation.llm.reply("Okay.")
    async with pipecat_bot(conversation) as bot:
        await bot.said.next(BotStartedSpeakingFrame, 0, timeout=60)
        await bot.speaker.until_played(700)
        played_ms, mark = ms_of(bytes(bot.speaker.played)), len(bot.said.frames)
        # As a person speaks: pipecat truncates at `speech_started`, long before the turn ends (all at once, the
        # turn could end and its answer start before the truncate arrives).
        await bot.mic.say(pcm24k("hello_world.wav") + silence(1000), real_time=True)
        interruption = await bot.said.next(InterruptionFrame, mark)
        story_audio_ms = ms_of(bot.audio(0))
        # The story's next sentence may still have come after `mark`, before the interruption.
        after = bot.said.index(interruption)
        await bot.said.wait_for(lambda: bot.transcript(after) == "Okay.", "the answer to the interruption", 60)
        await bot.answer_played(bot.last_text(after))
        story_item = bot.assistant_items()[0]
        retrieved = await bot.alive(story_item.id)
        log = await session_log(conversation, lambda log: len(responses_done(log)) == 2)
    [truncate] = client_events(log, ev.ItemTruncateRequested)
    assert truncate.item_id == story_item.id and truncate.content_index == 0
    assert played_ms <= truncate.audio_end_ms <= story_audio_ms, (played_ms, truncate.audio_end_ms, story_audio_ms)
    [truncated] = [e for e in log.outputs if isinstance(e, ev.ItemTruncated)]
    assert (truncated.item_id, truncated.audio_end_ms) == (story_item.id, truncate.audio_end_ms)
    story, answer = responses_done(log)
    assert (story.status, (story.status_details or {}).get("reason")) == ("cancelled", "turn_detected")
    assert answer.status == "completed"
    heard = retrieved.content[0].transcript if retrieved.content else None
    assert heard and STORY.startswith(heard) and len(heard) < len(STORY), heard
    assistant = [m for m in conversation.llm.requests[1]["messages"] if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": heard}], "the next request holds only what was heard"
    assert_no_errors(bot, log)


async def test_retrieving_an_unknown_item_fails_only_that_call(conversation):
    """`retrieve_conversation_item` of an id the server does not hold raises in its caller and nothing more:
    pipecat recognises OpenAI's `item_retrieve_invalid_item_id` error (by the `rci_<id>` event_id it sent) as the
    answer to that call; any other error it takes as fatal, ending its receive loop."""
    conversation.llm.reply(GREETING)
    async with pipecat_bot(conversation) as bot:
        await greeted(bot)
        refusal: Exception | None = None
        try:
            async with asyncio.timeout(15):
                await bot.llm.retrieve_conversation_item("item_not_there")
        except Exception as raised:
            refusal = raised
        assert not isinstance(refusal, TimeoutError), f"never answered: the receive loop ended on {bot.problems}"
        assert refusal is not None and "item_not_there" in str(refusal), refusal
        retrieved = await bot.alive(bot.assistant_items()[0].id)
        assert retrieved.content and retrieved.content[0].transcript == GREETING
        log = await session_log(conversation, lambda log: any(isinstance(e, ev.ErrorEvent) for e in log.outputs))
    [error] = [e for e in log.outputs if isinstance(e, ev.ErrorEvent)]
    assert (error.error.code, error.error.event_id) == ("item_retrieve_invalid_item_id", "rci_item_not_there")
    assert not bot.problems, f"pipecat reported problems: {bot.problems}"
