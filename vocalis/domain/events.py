"""Canonical client and server events.

Client events are what the edge decoded from either dialect; server events follow OpenAI's GA shapes and the
edge renders them in the client's dialect. Both are recorded on the log as they are here.
"""

from typing import Literal

from msgspec import Struct

from vocalis.domain.session_config import SessionConfig, SessionUpdate

# --- client -------------------------------------------------------------------------------------------------


class SessionUpdateRequested(Struct, frozen=True, tag="session.update"):
    update: SessionUpdate
    event_id: str | None = None


class AudioCommitRequested(Struct, frozen=True, tag="input_audio_buffer.commit"):
    event_id: str | None = None


class AudioClearRequested(Struct, frozen=True, tag="input_audio_buffer.clear"):
    event_id: str | None = None


class UnservedRequest(Struct, frozen=True, tag="unserved"):
    """A well-formed client event that this session does not serve (responses, conversation items)."""

    event_type: str
    event_id: str | None = None


ClientEvent = SessionUpdateRequested | AudioCommitRequested | AudioClearRequested | UnservedRequest

# --- server -------------------------------------------------------------------------------------------------


class ErrorDetail(Struct, frozen=True, omit_defaults=False):
    type: Literal["invalid_request_error", "server_error"]
    code: str | None
    message: str
    param: str | None = None
    event_id: str | None = None


class ContentPart(Struct, frozen=True, omit_defaults=False):
    type: Literal["input_audio", "input_text"]
    transcript: str | None = None


class Item(Struct, frozen=True, omit_defaults=False):
    id: str
    role: Literal["user", "assistant", "system"]
    content: tuple[ContentPart, ...]
    type: Literal["message"] = "message"
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    object: Literal["realtime.item"] = "realtime.item"


class DurationUsage(Struct, frozen=True):
    seconds: float
    type: Literal["duration"] = "duration"


class TranscriptionError(Struct, frozen=True, omit_defaults=False):
    type: str
    code: str | None
    message: str
    param: str | None = None


class ServerEvent(Struct, frozen=True, tag_field="type", omit_defaults=False):
    event_id: str


class ErrorEvent(ServerEvent, frozen=True, tag="error"):
    error: ErrorDetail


class SessionCreated(ServerEvent, frozen=True, tag="session.created"):
    session_id: str
    expires_at: int
    session: SessionConfig


class SessionUpdated(ServerEvent, frozen=True, tag="session.updated"):
    session_id: str
    expires_at: int
    session: SessionConfig


class SpeechStarted(ServerEvent, frozen=True, tag="input_audio_buffer.speech_started"):
    item_id: str
    audio_start_ms: int


class SpeechStopped(ServerEvent, frozen=True, tag="input_audio_buffer.speech_stopped"):
    item_id: str
    audio_end_ms: int


class AudioCommitted(ServerEvent, frozen=True, tag="input_audio_buffer.committed"):
    item_id: str
    previous_item_id: str | None


class AudioCleared(ServerEvent, frozen=True, tag="input_audio_buffer.cleared"):
    pass


class ItemAdded(ServerEvent, frozen=True, tag="conversation.item.added"):
    previous_item_id: str | None
    item: Item


class ItemDone(ServerEvent, frozen=True, tag="conversation.item.done"):
    previous_item_id: str | None
    item: Item


_TRANSCRIPTION = "conversation.item.input_audio_transcription"


class TranscriptDelta(ServerEvent, frozen=True, tag=f"{_TRANSCRIPTION}.delta"):
    item_id: str
    delta: str
    content_index: int = 0


class TranscriptCompleted(ServerEvent, frozen=True, tag=f"{_TRANSCRIPTION}.completed"):
    item_id: str
    transcript: str
    usage: DurationUsage
    content_index: int = 0


class TranscriptFailed(ServerEvent, frozen=True, tag=f"{_TRANSCRIPTION}.failed"):
    item_id: str
    error: TranscriptionError
    content_index: int = 0


AnyServerEvent = (
    ErrorEvent
    | SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | AudioCommitted
    | AudioCleared
    | ItemAdded
    | ItemDone
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
)
