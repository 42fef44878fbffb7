"""A session's state, and the scratch (`Draft`) one step of the state machine builds the next state in."""

from typing import Literal

import msgspec
from msgspec import Struct

from domain import events as ev
from domain.conversation_state import ConvEntry, ResponseState, Speculation
from domain.ids import derive_id
from domain.jobs import Job
from domain.records import Word
from domain.session_config import SessionConfig
from domain.turns import Speaking


class CancelResponse(Struct, frozen=True, tag="cancel"):
    """Tell the workers to stop generating and speaking for a response (sent on core NATS, not queued)."""

    response_id: str


class WithdrawJob(Struct, frozen=True, tag="withdraw"):
    """A job asked for earlier that is no longer wanted. If no worker has taken it yet, the edge deletes it unseen and
    records it as failed, so that the state machine stops waiting for it; if one has, its result comes as usual."""

    job_id: str


Directive = Job | CancelResponse | WithdrawJob


class AudioMark(Struct, frozen=True):
    """Where one audio record sits: its stream sequence and the 16 kHz sample it starts at."""

    seq: int
    sample: int


class LiveTurn(Struct, frozen=True):
    """A server-VAD turn's transcription, decoded while the turn grows (`domain.transcription`). Once
    committed, it waits for the decode that completes its transcript (`awaited`)."""

    item_id: str
    start: int  # the turn's first 16 kHz sample
    asked_to: int  # where the latest decode asked for ends
    stable: str = ""  # the text sent as transcript deltas; never revised
    stable_tail: tuple[Word, ...] = ()  # its last words
    pending: tuple[Word, ...] = ()  # the latest decode's words after the stable ones
    decoded_to: int = 0  # where the latest decode's audio ends
    asked: tuple[str, ...] = ()  # decodes in flight
    partials_from_ms: int = 0  # no decode while the user speaks before then: the STT workers are behind
    closing: str | None = None  # the decode asked when the turn's silence began
    end: int = 0  # the committed turn's end
    voice_until: int = 0  # and the end of its speech: whisper makes up words in the silence after
    awaited: str | None = None

    @property
    def stable_end(self) -> int:
        """Where the last stable word ends."""
        return self.stable_tail[-1].end if self.stable_tail else 0


class SessionState(Struct, frozen=True):
    session_id: str
    session_type: Literal["realtime", "transcription"]
    config: SessionConfig
    default_stt_model: str
    expires_at: int
    max_duration_s: int
    llm_context_tokens: int | None = None
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
    live: LiveTurn | None = None  # the transcription of the turn in progress
    finishing: tuple[LiveTurn, ...] = ()  # committed turns waiting for their last decode
    heard_language: str | None = None  # detected on the first decode whose words became stable
    announced: tuple[str, ...] = ()  # of those, items whose transcription events the client gets
    items: tuple[ConvEntry, ...] = ()  # the conversation, in order
    responses: tuple[ResponseState, ...] = ()  # responses in progress
    idle_since: int | None = None  # 16 kHz sample when the last response ended (idle timeout)
    speculation: Speculation | None = None  # the response the turn in progress would get, started early
    speculations_used: int = 0
    speculations_wasted: int = 0
    closed: bool = False

    @property
    def stt_model(self) -> str:
        """The transcription model of the session's jobs."""
        return self.config.transcription.model if self.config.transcription else self.default_stt_model

    @property
    def stt_language(self) -> str | None:
        """The language the session set for transcription (None: whisper detects it)."""
        return self.config.transcription.language if self.config.transcription else None


class Transition(Struct, frozen=True):
    state: SessionState
    events: tuple[ev.AnyServerEvent, ...] = ()
    jobs: tuple[Directive, ...] = ()
    close: bool = False


class Draft:
    """The mutable scratch of one step: the new state is built here, the input state is never touched."""

    def __init__(self, state: SessionState, now_ms: int) -> None:
        self.state = state
        self.now_ms = now_ms  # the clock of the record being reduced: what deadlines are counted from
        self.events: list[ev.AnyServerEvent] = []
        self.jobs: list[Directive] = []
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
