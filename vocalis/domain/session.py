"""A session's state and the pure state machine over its records: `step(state, record, seq)`."""

from collections.abc import Sequence
from typing import Literal

import msgspec
from msgspec import Struct

from vocalis.domain import events as ev
from vocalis.domain import records as rec
from vocalis.domain.audio_time import (
    MODEL_RATE,
    TICKS_PER_MS,
    TICKS_PER_SECOND,
    VAD_FRAME_SAMPLES,
    ms_from_samples,
    ms_from_ticks,
    samples_from_ms,
)
from vocalis.domain.ids import derive_id
from vocalis.domain.jobs import Job, TranscribeJob
from vocalis.domain.session_config import InvalidUpdate, SessionConfig, Transcription, apply_update
from vocalis.domain.turns import Speaking, TurnStarted, TurnStopped, advance

MIN_COMMIT_MS = 100


class AudioMark(Struct, frozen=True):
    """Where one audio record sits: its stream sequence and the 16 kHz sample it starts at."""

    seq: int
    sample: int


class SessionState(Struct, frozen=True):
    session_id: str
    session_type: Literal["realtime", "transcription"]
    config: SessionConfig
    default_stt_model: str
    expires_at: int
    max_duration_s: int
    next_id: int = 0
    samples: int = 0  # length of the session's 16 kHz audio stream
    frames: int = 0  # VAD frames seen
    buffer_start: int = 0  # 16 kHz sample where the uncommitted input buffer begins
    buffer_ticks: int = 0  # the uncommitted buffer's length in session time
    marks: tuple[AudioMark, ...] = ()  # audio records that may still hold uncommitted audio
    speaking: Speaking | None = None
    speech_item_id: str | None = None
    last_item_id: str | None = None
    transcribing: tuple[str, ...] = ()  # items whose transcript is awaited
    closed: bool = False


class Transition(Struct, frozen=True):
    state: SessionState
    events: tuple[ev.AnyServerEvent, ...] = ()
    jobs: tuple[Job, ...] = ()
    close: bool = False


class _Draft:
    """The mutable scratch of one step: the new state is built here, the input state is never touched."""

    def __init__(self, state: SessionState) -> None:
        self.state = state
        self.events: list[ev.AnyServerEvent] = []
        self.jobs: list[Job] = []
        self.close = False

    def update(self, **changes: object) -> None:
        self.state = msgspec.structs.replace(self.state, **changes)

    def new_id(self, prefix: str) -> str:
        counter = self.state.next_id
        self.update(next_id=counter + 1)
        return derive_id(prefix, self.state.session_id, counter)

    def emit(self, event_type: type[ev.ServerEvent], **fields: object) -> None:
        self.events.append(event_type(event_id=self.new_id("event"), **fields))  # type: ignore[arg-type]

    def error(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        event_id: str | None = None,
        error_type: Literal["invalid_request_error", "server_error"] = "invalid_request_error",
    ) -> None:
        detail = ev.ErrorDetail(type=error_type, code=code, message=message, param=param, event_id=event_id)
        self.emit(ev.ErrorEvent, error=detail)

    def finish(self) -> Transition:
        return Transition(self.state, tuple(self.events), tuple(self.jobs), self.close)


def open_session(record: rec.SessionOpened) -> Transition:
    """The initial state of a session, and its `session.created`."""
    stt_model = record.transcription_model
    if record.session_type == "transcription":
        stt_model = stt_model or record.model or record.default_stt_model
    transcription = Transcription(model=stt_model, language=record.language) if stt_model else None
    config = SessionConfig(type=record.session_type, model=record.model, transcription=transcription)
    state = SessionState(
        session_id=record.session_id,
        session_type=record.session_type,
        config=config,
        default_stt_model=record.default_stt_model,
        expires_at=record.at_ms // 1000 + record.max_duration_s,
        max_duration_s=record.max_duration_s,
    )
    draft = _Draft(state)
    draft.emit(ev.SessionCreated, session_id=state.session_id, expires_at=state.expires_at, session=config)
    return draft.finish()


def step(state: SessionState, record: rec.Record, seq: int) -> Transition:
    """Reduce one record (stream sequence `seq`) into the session."""
    if state.closed:
        return Transition(state)
    draft = _Draft(state)
    match record:
        case rec.AudioReceived():
            _on_audio(draft, record, seq)
        case rec.ClientEventReceived(event=event):
            _on_client_event(draft, event)
        case rec.ClientEventRejected():
            draft.error(record.code, record.message, record.param, record.event_id)
        case rec.TranscriptionDeltaProduced():
            if record.item_id in state.transcribing:
                draft.emit(ev.TranscriptDelta, item_id=record.item_id, delta=record.text)
        case rec.TranscriptionCompleted():
            if record.item_id in state.transcribing:
                draft.update(transcribing=_without(state.transcribing, record.item_id))
                usage = ev.DurationUsage(seconds=round(record.audio_seconds, 3))
                draft.emit(ev.TranscriptCompleted, item_id=record.item_id, transcript=record.transcript, usage=usage)
        case rec.TranscriptionFailed():
            if record.item_id in state.transcribing:
                draft.update(transcribing=_without(state.transcribing, record.item_id))
                error = ev.TranscriptionError(type="server_error", code="transcription_failed", message=record.message)
                draft.emit(ev.TranscriptFailed, item_id=record.item_id, error=error)
        case rec.SessionExpired():
            draft.error("session_expired", f"Your session hit the maximum duration of {_duration(state)}.")
            draft.update(closed=True)
            draft.close = True
        case rec.SessionClosed():
            draft.update(closed=True)
        case rec.SessionOpened():
            draft.error(None, "The session is already open.", error_type="server_error")
    return draft.finish()


def _duration(state: SessionState) -> str:
    seconds = state.max_duration_s
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"


def _without(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(i for i in items if i != item)


# --- audio and turns ----------------------------------------------------------------------------------------


def _on_audio(draft: _Draft, record: rec.AudioReceived, seq: int) -> None:
    state = draft.state
    start = state.samples
    draft.update(
        samples=start + len(record.pcm16k) // 2,
        buffer_ticks=state.buffer_ticks + record.ticks,
        marks=(*state.marks, AudioMark(seq=seq, sample=start)),
    )
    detection = state.config.turn_detection
    for probability in record.speech_probs:
        frame_end = (draft.state.frames + 1) * VAD_FRAME_SAMPLES
        draft.update(frames=draft.state.frames + 1)
        if detection is None:
            continue
        before = draft.state.speaking
        speaking, change = advance(before, frame_end, probability, detection, floor=draft.state.buffer_start)
        draft.update(speaking=speaking)
        if isinstance(change, TurnStarted):
            item_id = draft.new_id("item")
            draft.update(speech_item_id=item_id)
            draft.emit(ev.SpeechStarted, item_id=item_id, audio_start_ms=ms_from_samples(change.start_sample))
        elif isinstance(change, TurnStopped):
            item_id = draft.state.speech_item_id or draft.new_id("item")
            draft.emit(ev.SpeechStopped, item_id=item_id, audio_end_ms=ms_from_samples(change.end_sample))
            start = before.start_sample if before else draft.state.buffer_start
            _commit(draft, item_id, start, change.end_sample)
    _forget_consumed_audio(draft)


def _commit(draft: _Draft, item_id: str, start: int, end: int) -> None:
    """Make samples [start, end) a user item and ask for its transcript."""
    state = draft.state
    previous = state.last_item_id
    draft.update(
        buffer_start=end,
        buffer_ticks=(state.samples - end) * (TICKS_PER_SECOND // MODEL_RATE),
        speaking=None,
        speech_item_id=None,
        last_item_id=item_id,
    )
    draft.emit(ev.AudioCommitted, item_id=item_id, previous_item_id=previous)
    item = ev.Item(id=item_id, role="user", content=(ev.ContentPart(type="input_audio", transcript=None),))
    draft.emit(ev.ItemAdded, previous_item_id=previous, item=item)
    draft.emit(ev.ItemDone, previous_item_id=previous, item=item)
    transcription = state.config.transcription
    if transcription is None:
        return
    marks = _marks_covering(state.marks, start, end)
    job = TranscribeJob(
        job_id=draft.new_id("job"),
        session_id=state.session_id,
        item_id=item_id,
        first_seq=marks[0].seq,
        last_seq=marks[-1].seq,
        first_sample=marks[0].sample,
        start_sample=start,
        end_sample=end,
        model=transcription.model,
        language=transcription.language,
        prompt=transcription.prompt,
    )
    draft.jobs.append(job)
    draft.update(transcribing=(*draft.state.transcribing, item_id))


def _marks_covering(marks: Sequence[AudioMark], start: int, end: int) -> tuple[AudioMark, ...]:
    first = 0
    while first + 1 < len(marks) and marks[first + 1].sample <= start:
        first += 1
    last = first
    while last + 1 < len(marks) and marks[last + 1].sample < end:
        last += 1
    return tuple(marks[first : last + 1])


def _forget_consumed_audio(draft: _Draft) -> None:
    """Bound what a session holds on to. With turn detection on, silence older than the prefix padding can
    never join a turn, so it leaves the buffer; without it, the client's buffer is kept until it commits or
    clears. Marks of audio before the buffer are dropped."""
    state = draft.state
    detection = state.config.turn_detection
    if detection is not None and state.speaking is None:
        floor = state.samples - samples_from_ms(detection.prefix_padding_ms) - VAD_FRAME_SAMPLES
        if floor > state.buffer_start:
            kept_ticks = (state.samples - floor) * (TICKS_PER_SECOND // MODEL_RATE)
            draft.update(buffer_start=floor, buffer_ticks=min(state.buffer_ticks, kept_ticks))
    keep_from = state.speaking.start_sample if state.speaking is not None else draft.state.buffer_start
    marks = state.marks
    first = 0
    while first + 1 < len(marks) and marks[first + 1].sample <= keep_from:
        first += 1
    if first:
        draft.update(marks=marks[first:])


# --- client events ------------------------------------------------------------------------------------------


def _on_client_event(draft: _Draft, event: ev.ClientEvent) -> None:
    state = draft.state
    match event:
        case ev.SessionUpdateRequested():
            try:
                config = apply_update(state.config, event.update, state.default_stt_model)
            except InvalidUpdate as invalid:
                draft.error(invalid.code, invalid.message, invalid.param, event.event_id)
                return
            if config.turn_detection is None and state.speaking is not None:
                draft.update(speaking=None, speech_item_id=None)
            draft.update(config=config)
            draft.emit(ev.SessionUpdated, session_id=state.session_id, expires_at=state.expires_at, session=config)
        case ev.AudioCommitRequested():
            buffered_ms = ms_from_ticks(state.buffer_ticks)
            if buffered_ms < MIN_COMMIT_MS or state.samples <= state.buffer_start:
                draft.error(
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small. Expected at least "
                    f"{MIN_COMMIT_MS}ms of audio, but buffer only has "
                    f"{state.buffer_ticks / TICKS_PER_MS:.2f}ms of audio.",
                    None,
                    event.event_id,
                )
                return
            item_id = state.speech_item_id or draft.new_id("item")
            start = state.speaking.start_sample if state.speaking else state.buffer_start
            _commit(draft, item_id, start, state.samples)
        case ev.AudioClearRequested():
            draft.update(buffer_start=state.samples, buffer_ticks=0, speaking=None, speech_item_id=None)
            draft.emit(ev.AudioCleared)
            _forget_consumed_audio(draft)
        case ev.UnservedRequest():
            where = "a transcription session" if state.session_type == "transcription" else "this server yet"
            draft.error(
                "invalid_value",
                f"'{event.event_type}' is not supported in {where}.",
                "type",
                event.event_id,
            )
