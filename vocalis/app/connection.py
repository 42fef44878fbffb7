"""One realtime WebSocket connection: client frames become records on the log, and the session's records,
reduced in stream order by the pure state machine, become the server's frames.
"""

import asyncio
import secrets
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import structlog
from litestar import WebSocket
from msgspec import UNSET

from vocalis.app.bus import Bus, decode_record, encode, now_ms
from vocalis.domain import records as rec
from vocalis.domain.events import (
    AnyServerEvent,
    AudioRef,
    ClientEvent,
    ErrorDetail,
    ErrorEvent,
    ResponseCreateRequested,
    SessionUpdateRequested,
)
from vocalis.domain.jobs import GenerateJob, SynthesizeJob, TranscribeJob
from vocalis.domain.replay import advance
from vocalis.domain.session_config import TranscriptionUpdate
from vocalis.domain.state import CancelResponse, SessionState, Transition
from vocalis.handlers.audio_input import InputAudio, InvalidAudio, to_pcm16
from vocalis.handlers.models import ModelRegistry, UnknownModel
from vocalis.handlers.tts import BUNDLED_VOICES, UnknownVoice, Voices
from vocalis.handlers.vad import SileroVad, VadStream
from vocalis.protocol import beta
from vocalis.protocol.codec import AudioAppend, Dialect, ItemWithAudio, decode, render
from vocalis.protocol.errors import Rejection

log = structlog.get_logger(__name__)

# One record holds at most this much audio, so a 15 MiB append never exceeds a NATS payload limit.
MAX_RECORD_INPUT_SECONDS = 5
JOB_KINDS = {TranscribeJob: "stt", GenerateJob: "llm", SynthesizeJob: "tts"}
# How long a session whose client has gone waits for the transcripts of its last turns.
TRANSCRIPTS_GRACE_S = 60


@dataclass(frozen=True)
class EdgeServices:
    bus: Bus
    vad: SileroVad
    registry: ModelRegistry
    executor: Executor
    default_stt_model: str
    max_session_s: int
    max_frame_bytes: int
    audio_max_age_s: int


@dataclass(frozen=True)
class ConnectParams:
    dialect: Dialect
    session_type: Literal["realtime", "transcription"]
    model: str | None = None
    transcription_model: str | None = None
    language: str | None = None
    rejections: tuple[Rejection, ...] = field(default=())


class RealtimeConnection:
    def __init__(self, socket: WebSocket[Any, Any, Any], services: EdgeServices, params: ConnectParams) -> None:
        self.socket = socket
        self.services = services
        self.params = params
        self.bus = services.bus
        self.session_id = "sess_" + secrets.token_hex(10)
        self.log = log.bind(session_id=self.session_id)
        self._input = InputAudio()
        self._vad: VadStream = services.vad.stream()
        self._records_sent = 0
        self._state: SessionState | None = None
        self._reduced_seq = 0
        self._progress = asyncio.Condition()
        self._closed_by_server = False

    # --- writing records ------------------------------------------------------------------------------------

    def _msg_id(self) -> str:
        self._records_sent += 1
        return f"{self.session_id}.edge.{self._records_sent}"

    async def _record(self, source: str, record: rec.Record, *, wait: bool = False) -> int | None:
        subject = self.bus.subjects.session_input(self.session_id, source)
        ttl = self.services.audio_max_age_s if source == "audio" else None
        if wait:
            ack = await self.bus.publish(subject, encode(record), self._msg_id(), ttl_s=ttl)
            return ack.seq
        await self.bus.publish_pipelined(subject, encode(record), self._msg_id(), ttl_s=ttl)
        return None

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        subscription = await self.bus.subscribe_session(self.session_id)
        reducer = asyncio.create_task(self._reduce(subscription))
        opened = rec.SessionOpened(
            at_ms=now_ms(),
            session_id=self.session_id,
            session_type=self.params.session_type,
            dialect=self.params.dialect,
            default_stt_model=self.services.default_stt_model,
            max_duration_s=self.services.max_session_s,
            model=self.params.model,
            transcription_model=self.params.transcription_model,
            language=self.params.language,
        )
        await self._record("edge", opened)
        for rejection in self.params.rejections:
            await self._reject(rejection)
        self.log.info("session.opened", type=self.params.session_type, dialect=self.params.dialect)
        expiry = asyncio.create_task(self._expire_later())
        try:
            await self._receive()
        finally:
            expiry.cancel()
            if not self._closed_by_server:
                await self._finish_transcripts()
                closed = await self._record("edge", rec.SessionClosed(at_ms=now_ms(), reason="client"), wait=True)
                await self._wait_reduced(closed or 0, seconds=5)
            reducer.cancel()
            await asyncio.gather(reducer, return_exceptions=True)
            await subscription.unsubscribe()
            self.log.info("session.closed", by="server" if self._closed_by_server else "client")

    async def _finish_transcripts(self) -> None:
        """A client that leaves right after speaking still gets its last words into the log."""
        async with self._progress:
            try:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self._state is None or not self._state.transcribing),
                    TRANSCRIPTS_GRACE_S,
                )
            except TimeoutError:
                pending = list(self._state.transcribing) if self._state else []
                self.log.warning("session.closed.transcripts_pending", items=pending)

    async def _expire_later(self) -> None:
        await asyncio.sleep(self.services.max_session_s)
        await self._record("edge", rec.SessionExpired(at_ms=now_ms()))

    # --- client frames --------------------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            await self._on_frame(frame)

    async def _on_frame(self, frame: str | bytes) -> None:
        size = len(frame)
        if size > self.services.max_frame_bytes:
            await self._reject(
                Rejection(
                    "invalid_value",
                    f"The frame is {size} bytes, over the limit of {self.services.max_frame_bytes} bytes. "
                    "Send audio in smaller appends.",
                    None,
                    _peek_event_id(frame),
                )
            )
            return
        decoded = decode(frame, self.params.dialect)
        match decoded:
            case AudioAppend():
                await self._on_audio(decoded)
            case ItemWithAudio():
                await self._on_item_audio(decoded)
            case Rejection():
                await self._reject(decoded)
            case _:
                await self._on_client_event(decoded)

    async def _on_client_event(self, event: ClientEvent) -> None:
        voice, where = _requested_voice(event)
        if voice is not None:
            try:
                VOICES.resolve(voice)
            except UnknownVoice as unknown:
                param = where if self.params.dialect == "ga" else (beta.param(where) or where)
                await self._reject(Rejection("invalid_value", str(unknown), param, event.event_id))
                return
        if isinstance(event, SessionUpdateRequested):
            transcription = event.update.transcription
            if isinstance(transcription, TranscriptionUpdate) and isinstance(transcription.model, str):
                try:
                    self.services.registry.canonical(transcription.model)
                except UnknownModel as unknown:
                    param = "session.audio.input.transcription.model"
                    if self.params.dialect == "beta":
                        param = beta.param(param) or param
                    await self._reject(Rejection("invalid_value", str(unknown), param, event.event_id))
                    return
            if event.update.input_format is not UNSET:
                # The audio that follows must be decoded in the new format: wait until the session took it.
                seq = await self._record("client", rec.ClientEventReceived(at_ms=now_ms(), event=event), wait=True)
                await self._wait_reduced(seq or 0, seconds=10)
                return
        await self._record("client", rec.ClientEventReceived(at_ms=now_ms(), event=event))

    async def _on_audio(self, append: AudioAppend) -> None:
        if not append.audio:
            return
        loop = asyncio.get_running_loop()
        try:
            pieces = await loop.run_in_executor(self.services.executor, self._hear, append.audio)
        except InvalidAudio as invalid:
            await self._reject(Rejection("invalid_value", str(invalid), "audio", append.event_id))
            return
        for ticks, pcm16k, probabilities in pieces:
            record = rec.AudioReceived(
                at_ms=now_ms(), ticks=ticks, pcm16k=pcm16k, speech_probs=tuple(probabilities), event_id=append.event_id
            )
            await self._record("audio", record)

    async def _on_item_audio(self, request: ItemWithAudio) -> None:
        """An item's own audio (not the input buffer): recorded at 16 kHz, then the item refers to it."""
        loop = asyncio.get_running_loop()
        decoder = InputAudio(self._input.format)
        try:
            pieces = await loop.run_in_executor(self.services.executor, decoder.decode, request.audio, 3600)
        except InvalidAudio as invalid:
            param = "item.content.audio"
            await self._reject(Rejection("invalid_value", str(invalid), param, request.event.event_id))
            return
        pcm16k = b"".join(to_pcm16(samples) for _, samples in pieces)
        record = rec.ItemAudioReceived(at_ms=now_ms(), pcm16k=pcm16k, event_id=request.event.event_id)
        seq = await self._record("audio", record, wait=True)
        item = msgspec.structs.replace(request.event.item, audio=AudioRef(seq=seq or 0, samples=len(pcm16k) // 2))
        await self._on_client_event(msgspec.structs.replace(request.event, item=item))

    def _hear(self, payload: bytes) -> list[tuple[int, bytes, list[float]]]:
        """Decode, resample and score one append (in a worker thread), split into records of bounded size."""
        return [
            (ticks, to_pcm16(samples), self._vad.feed(samples))
            for ticks, samples in self._input.decode(payload, MAX_RECORD_INPUT_SECONDS)
        ]

    async def _reject(self, rejection: Rejection) -> None:
        record = rec.ClientEventRejected(
            at_ms=now_ms(),
            code=rejection.code,
            message=rejection.message,
            param=rejection.param,
            event_id=rejection.event_id,
        )
        await self._record("client", record)

    # --- reducing the log -----------------------------------------------------------------------------------

    async def _reduce(self, subscription: Any) -> None:
        async for msg in subscription.messages:
            seq = msg.metadata.sequence.stream
            try:
                record = decode_record(msg.data)
            except msgspec.DecodeError as error:
                self.log.error("record.undecodable", seq=seq, error=str(error))
                continue
            transition = self._apply(record, seq)
            await self._emit(transition)
            async with self._progress:
                self._reduced_seq = seq
                self._progress.notify_all()
            if transition.close:
                self._closed_by_server = True
                await self._close_socket()
                return
            if transition.state.closed:
                return

    def _apply(self, record: rec.Record, seq: int) -> Transition:
        try:
            transition = advance(self._state, record, seq)
        except Exception:
            # A bug in the state machine must not end the session: report it, keep the last good state.
            self.log.exception("session.step.failed", seq=seq)
            error = ErrorDetail(type="server_error", code="internal_error", message="Internal error; see logs.")
            assert self._state is not None
            return Transition(self._state, (ErrorEvent(event_id=f"event_err{seq}", error=error),))
        previous = self._state
        self._state = transition.state
        new_format = transition.state.config.input_format
        if previous is None or previous.config.input_format != new_format:
            self._input = InputAudio(new_format)
        return transition

    async def _emit(self, transition: Transition) -> None:
        for event in transition.events:
            await self._send(event)
            await self.bus.publish_pipelined(
                self.bus.subjects.session_output(self.session_id, event.__struct_config__.tag),  # type: ignore[arg-type]
                encode(event),
                event.event_id,
            )
        for job in transition.jobs:
            if isinstance(job, CancelResponse):  # a signal, not work: core NATS, every worker hears it
                await self.bus.nc.publish(self.bus.subjects.cancel(job.response_id), b"")
            else:
                queue = "stt-partial" if isinstance(job, TranscribeJob) and job.partial else JOB_KINDS[type(job)]
                await self.bus.publish_pipelined(self.bus.subjects.jobs(queue), encode(job), job.job_id)

    async def _send(self, event: AnyServerEvent) -> None:
        frame = render(event, self.params.dialect)
        if frame is None:
            return
        try:
            await self.socket.send_data(frame.decode(), mode="text")
        except Exception as error:  # the client is gone; the log still records what it would have got
            self.log.debug("send.failed", error=repr(error))

    async def _close_socket(self) -> None:
        try:
            await self.socket.close(code=1000)
        except Exception as error:
            self.log.debug("close.failed", error=repr(error))

    async def _wait_reduced(self, seq: int, seconds: float) -> None:
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(lambda: self._reduced_seq >= seq), seconds)
            except TimeoutError:
                self.log.warning("session.reduce.lagging", waiting_for=seq, reduced=self._reduced_seq)


VOICES = Voices(list(BUNDLED_VOICES))


def _requested_voice(event: ClientEvent) -> tuple[str | None, str]:
    """The voice a client event asks for, and where (GA path) it asked."""
    if isinstance(event, SessionUpdateRequested) and isinstance(event.update.voice, str):
        return event.update.voice, "session.audio.output.voice"
    if isinstance(event, ResponseCreateRequested) and isinstance(event.response.voice, str):
        return event.response.voice, "response.audio.output.voice"
    return None, ""


def _peek_event_id(frame: str | bytes) -> str | None:
    """The event_id of an oversized frame, if it appears near the start, without parsing the whole frame."""
    head = frame[:512] if isinstance(frame, str) else frame[:512].decode(errors="ignore")
    marker = '"event_id"'
    at = head.find(marker)
    if at < 0:
        return None
    rest = head[at + len(marker) :].lstrip(" :")
    if not rest.startswith('"'):
        return None
    end = rest.find('"', 1)
    return rest[1:end] if end > 0 else None
