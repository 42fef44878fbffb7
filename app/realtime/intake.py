"""A client's frames become records on the log.

Each frame is checked against the size limit, decoded in the client's dialect, and checked against what only the
server knows (installed models, voices); what fails becomes a rejection record, which the state machine answers
with an `error`. Input audio is decoded, resampled to 16 kHz and scored by the VAD off the event loop, and recorded
in pieces of bounded size.
"""

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import msgspec
from msgspec import UNSET

from app.realtime.channel import Frame, TrackAudio
from app.realtime.reducer import Reducer
from app.realtime.session_log import RecordTooLarge, SessionLog
from domain import records as rec
from domain.events import AudioRef, ClientEvent, ResponseCreateRequested, SessionUpdateRequested
from domain.protocol import beta
from domain.protocol.codec import AudioAppend, Dialect, ItemWithAudio, decode, peek_event_id
from domain.protocol.errors import Rejection
from domain.session_config import TranscriptionUpdate, TurnDetection
from handlers.input_audio.decode import InputAudio, InvalidAudio, to_pcm16
from handlers.input_audio.denoise import NoiseFilter
from handlers.input_audio.turn_end import TurnEndStream
from handlers.input_audio.vad import VadStream
from handlers.models import ModelRegistry, UnknownModel, is_realtime_model
from handlers.ports import now_ms
from handlers.tts import BUNDLED_VOICES, UnknownVoice, Voices

# One record holds at most this much audio, so a 15 MiB append never exceeds a NATS payload limit.
MAX_RECORD_INPUT_SECONDS = 5
# How long a format change may take to be reduced before the next frame is decoded anyway.
FORMAT_BARRIER_S = 10
VOICES = Voices(list(BUNDLED_VOICES))


class Intake:
    def __init__(
        self,
        session_log: SessionLog,
        reducer: Reducer,
        *,
        dialect: Dialect,
        registry: ModelRegistry,
        llm_models: frozenset[str],
        vad: VadStream,
        turn_end: TurnEndStream,
        executor: Executor,
        max_frame_bytes: int,
    ) -> None:
        self._log = session_log
        self._reducer = reducer
        self._dialect = dialect
        self._registry = registry
        self._llm_models = llm_models
        self._vad = vad
        self._turn_end = turn_end
        self._executor = executor
        self._max_frame_bytes = max_frame_bytes
        self._input = InputAudio()
        self._track_input = InputAudio("pcm16")  # a track's audio keeps its format whatever the session's
        self._noise = NoiseFilter()

    async def run(self, frames: AsyncIterator[Frame]) -> None:
        async for frame in frames:
            if isinstance(frame, TrackAudio):
                await self._on_audio(AudioAppend(frame.pcm), self._track_input)
            else:
                await self.on_frame(frame)

    async def on_frame(self, frame: str | bytes) -> None:
        if len(frame) > self._max_frame_bytes:
            message = (
                f"The frame is {len(frame)} bytes, over the limit of {self._max_frame_bytes} bytes. "
                "Send audio in smaller appends."
            )
            await self._log.reject(Rejection("invalid_value", message, None, peek_event_id(frame)))
            return
        decoded = decode(frame, self._dialect)
        match decoded:
            case AudioAppend():
                self._follow_input_format()
                await self._on_audio(decoded, self._input)
            case ItemWithAudio():
                await self._on_item_audio(decoded)
            case Rejection():
                await self._log.reject(decoded)
            case _:
                await self.on_client_event(decoded)

    async def on_client_event(self, event: ClientEvent) -> None:
        if (rejection := unserved(event, self._dialect, self._registry, self._llm_models)) is not None:
            await self._log.reject(rejection)
            return
        record = rec.ClientEventReceived(at_ms=now_ms(), event=event)
        try:
            if isinstance(event, SessionUpdateRequested) and (
                event.update.input_format is not UNSET or event.update.noise_reduction is not UNSET
            ):
                # The audio that follows must be decoded in the new format, and denoised as asked: wait until the
                # session took it.
                seq = await self._log.write_and_wait("client", record)
                await self._reducer.wait_reduced(seq, seconds=FORMAT_BARRIER_S)
                return
            await self._log.write("client", record)
        except RecordTooLarge as large:
            message = f"The event is {large}. Send less in one event."
            await self._log.reject(Rejection("invalid_value", message, None, event.event_id))

    async def _on_audio(self, append: AudioAppend, decoder: InputAudio) -> None:
        if not append.audio:
            return
        self._follow_noise_reduction()
        loop = asyncio.get_running_loop()
        try:
            pieces = await loop.run_in_executor(
                self._executor, self._hear, decoder, append.audio, self._turn_detection()
            )
        except InvalidAudio as invalid:
            await self._log.reject(Rejection("invalid_value", str(invalid), "audio", append.event_id))
            return
        for ticks, pcm16k, probabilities, turn_scores in pieces:
            record = rec.AudioReceived(
                at_ms=now_ms(),
                ticks=ticks,
                pcm16k=pcm16k,
                speech_probs=tuple(probabilities),
                event_id=append.event_id,
                turn_scores=turn_scores,
            )
            await self._log.write("audio", record)

    def _hear(
        self, decoder: InputAudio, payload: bytes, detection: TurnDetection | None
    ) -> list[tuple[int, bytes, list[float], tuple[tuple[int, float], ...]]]:
        """Decode, resample, denoise and score one append (in a worker thread), split into records of bounded size."""
        pieces = []
        for ticks, decoded in decoder.decode(payload, MAX_RECORD_INPUT_SECONDS):
            samples = self._noise.apply(decoded)  # what the VAD and the transcriber hear, and what is recorded
            probabilities = self._vad.feed(samples)
            scores = self._turn_end.feed(samples, probabilities, detection)
            pieces.append((ticks, to_pcm16(samples), probabilities, scores))
        return pieces

    def _turn_detection(self) -> TurnDetection | None:
        """The session's turn detection as far as the state machine has got (the default until it opened)."""
        state = self._reducer.state
        return state.config.turn_detection if state is not None else TurnDetection()

    async def _on_item_audio(self, request: ItemWithAudio) -> None:
        """An item's own audio (not the input buffer): recorded at 16 kHz, then the item refers to it."""
        self._follow_input_format()
        loop = asyncio.get_running_loop()
        decoder = InputAudio(self._input.format)
        param = "item.content.audio"
        try:
            pieces = await loop.run_in_executor(self._executor, decoder.decode, request.audio, 3600)
        except InvalidAudio as invalid:
            await self._log.reject(Rejection("invalid_value", str(invalid), param, request.event.event_id))
            return
        pcm16k = b"".join(to_pcm16(samples) for _, samples in pieces)
        record = rec.ItemAudioReceived(at_ms=now_ms(), pcm16k=pcm16k, event_id=request.event.event_id)
        try:
            seq = await self._log.write_and_wait("audio", record)
        except RecordTooLarge as large:
            message = f"The item's audio is {large}. Send long audio with input_audio_buffer.append."
            await self._log.reject(Rejection("invalid_value", message, param, request.event.event_id))
            return
        item = msgspec.structs.replace(request.event.item, audio=AudioRef(seq=seq, samples=len(pcm16k) // 2))
        await self.on_client_event(msgspec.structs.replace(request.event, item=item))

    def _follow_input_format(self) -> None:
        """Decode in the format the session has taken (its resampler state starts afresh when it changes)."""
        state = self._reducer.state
        if state is not None and state.config.input_format != self._input.format:
            self._input = InputAudio(state.config.input_format)

    def _follow_noise_reduction(self) -> None:
        """Denoise as the session asks (a fresh stream when it turns `noise_reduction` on or changes its type), or
        not at all (`null`)."""
        state = self._reducer.state
        if state is not None:
            setting = state.config.noise_reduction
            self._noise.follow(None if setting is None else setting.type)


def unknown_llm(model: str, served: frozenset[str]) -> str | None:
    """Why a conversation's `model` is refused, or None: OpenAI's realtime names all mean the default LLM."""
    if is_realtime_model(model) or model in served:
        return None
    return f"Unknown model '{model}'. Served: {', '.join(sorted(served))}, and OpenAI's realtime model names."


def unserved(
    event: ClientEvent, dialect: Dialect, registry: ModelRegistry, llm_models: frozenset[str]
) -> Rejection | None:
    """What the state machine cannot know: whether a requested voice, LLM or transcription model is served."""
    if isinstance(event, SessionUpdateRequested) and isinstance(event.update.model, str):
        unknown = unknown_llm(event.update.model, llm_models)
        if unknown is not None:
            return Rejection("invalid_value", unknown, "session.model", event.event_id)
    try:
        if isinstance(event, SessionUpdateRequested) and isinstance(event.update.voice, str):
            where = "session.audio.output.voice"
            VOICES.resolve(event.update.voice)
        if isinstance(event, ResponseCreateRequested) and isinstance(event.response.voice, str):
            where = "response.audio.output.voice"
            VOICES.resolve(event.response.voice)
        if isinstance(event, SessionUpdateRequested):
            transcription = event.update.transcription
            if isinstance(transcription, TranscriptionUpdate) and isinstance(transcription.model, str):
                where = "session.audio.input.transcription.model"
                registry.canonical(transcription.model)
    except (UnknownVoice, UnknownModel) as unknown:
        param = where if dialect == "ga" else (beta.param(where) or where)
        return Rejection("invalid_value", str(unknown), param, event.event_id)
    return None
