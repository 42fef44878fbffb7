"""Canonical client and server events.

Client events are what the edge decoded from either dialect; server events follow OpenAI's GA shapes and the
edge renders them in the client's dialect. Both are recorded on the log as they are here.
"""

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

from domain.session_config import AudioFormat, SessionConfig, SessionUpdate

# --- client -------------------------------------------------------------------------------------------------


class SessionUpdateRequested(Struct, frozen=True, tag="session.update"):
    update: SessionUpdate
    event_id: str | None = None


class AudioCommitRequested(Struct, frozen=True, tag="input_audio_buffer.commit"):
    event_id: str | None = None


class AudioClearRequested(Struct, frozen=True, tag="input_audio_buffer.clear"):
    event_id: str | None = None


class NewContent(Struct, frozen=True):
    type: Literal["input_text", "input_audio", "output_text", "text", "output_audio", "audio", "item_reference"]
    text: str | None = None
    transcript: str | None = None


class AudioRef(Struct, frozen=True):
    """Audio a client sent inside an item: recorded separately (16 kHz), found by its stream sequence."""

    seq: int
    samples: int


class NewItem(Struct, frozen=True):
    """An item as a client sends it (GA or beta), before the session checks it."""

    type: Literal["message", "function_call", "function_call_output", "item_reference"]
    id: str | None = None
    role: Literal["user", "assistant", "system"] | None = None
    content: tuple[NewContent, ...] = ()
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    audio: AudioRef | None = None


class ResponseParams(Struct, frozen=True):
    """`response.create` overrides; UNSET keeps the session's value for this response."""

    conversation: Literal["auto", "none"] = "auto"
    output_modalities: tuple[Literal["audio", "text"], ...] | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    voice: str | UnsetType = UNSET
    output_format: AudioFormat | UnsetType = UNSET
    tools: tuple[dict[str, Any], ...] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    input: tuple[NewItem, ...] | UnsetType = UNSET
    metadata: dict[str, str] | None = None


class ResponseCreateRequested(Struct, frozen=True, tag="response.create"):
    response: ResponseParams = ResponseParams()
    event_id: str | None = None


class ResponseCancelRequested(Struct, frozen=True, tag="response.cancel"):
    response_id: str | None = None
    event_id: str | None = None


class ItemCreateRequested(Struct, frozen=True, tag="conversation.item.create"):
    item: NewItem
    previous_item_id: str | None = None
    event_id: str | None = None


class ItemRetrieveRequested(Struct, frozen=True, tag="conversation.item.retrieve"):
    item_id: str
    event_id: str | None = None


class ItemTruncateRequested(Struct, frozen=True, tag="conversation.item.truncate"):
    item_id: str
    content_index: int
    audio_end_ms: int
    event_id: str | None = None


class ItemDeleteRequested(Struct, frozen=True, tag="conversation.item.delete"):
    item_id: str
    event_id: str | None = None


class UnservedRequest(Struct, frozen=True, tag="unserved"):
    """A well-formed client event that this session does not serve (responses, conversation items)."""

    event_type: str
    event_id: str | None = None


ClientEvent = (
    SessionUpdateRequested
    | AudioCommitRequested
    | AudioClearRequested
    | ResponseCreateRequested
    | ResponseCancelRequested
    | ItemCreateRequested
    | ItemRetrieveRequested
    | ItemTruncateRequested
    | ItemDeleteRequested
    | UnservedRequest
)

# --- server -------------------------------------------------------------------------------------------------


class ErrorDetail(Struct, frozen=True, omit_defaults=False):
    type: Literal["invalid_request_error", "server_error"]
    code: str | None
    message: str
    param: str | None = None
    event_id: str | None = None


class ContentPart(Struct, frozen=True, omit_defaults=False):
    type: Literal["input_audio", "input_text", "output_text", "output_audio"]
    text: str | None = None
    transcript: str | None = None


class MessageItem(Struct, frozen=True, omit_defaults=False, tag="message", tag_field="type"):
    id: str
    role: Literal["user", "assistant", "system"]
    content: tuple[ContentPart, ...]
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    object: Literal["realtime.item"] = "realtime.item"


class FunctionCallItem(Struct, frozen=True, omit_defaults=False, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str = ""
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    object: Literal["realtime.item"] = "realtime.item"


class FunctionCallOutputItem(Struct, frozen=True, omit_defaults=False, tag="function_call_output", tag_field="type"):
    id: str
    call_id: str
    output: str
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    object: Literal["realtime.item"] = "realtime.item"


Item = MessageItem | FunctionCallItem | FunctionCallOutputItem


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


class ItemRetrieved(ServerEvent, frozen=True, tag="conversation.item.retrieved"):
    item: Item


class ItemDeleted(ServerEvent, frozen=True, tag="conversation.item.deleted"):
    item_id: str


class ItemTruncated(ServerEvent, frozen=True, tag="conversation.item.truncated"):
    item_id: str
    content_index: int
    audio_end_ms: int


class TimeoutTriggered(ServerEvent, frozen=True, tag="input_audio_buffer.timeout_triggered"):
    item_id: str
    audio_start_ms: int
    audio_end_ms: int


class Usage(Struct, frozen=True, omit_defaults=False):
    total_tokens: int
    input_tokens: int
    output_tokens: int


class Response(Struct, frozen=True, omit_defaults=False):
    """A response, as `response.created` / `response.done` carry it (rendered per dialect)."""

    id: str
    status: Literal["in_progress", "completed", "cancelled", "incomplete", "failed"]
    output_modalities: tuple[Literal["audio", "text"], ...]
    voice: str
    output_format: str
    max_output_tokens: int | Literal["inf"]
    conversation_id: str | None
    output: tuple[Item, ...] = ()
    status_details: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    usage: Usage | None = None
    temperature: float = 0.8


class RateLimit(Struct, frozen=True):
    name: Literal["requests", "tokens"]
    limit: int
    remaining: int
    reset_seconds: float


class ResponseCreated(ServerEvent, frozen=True, tag="response.created"):
    response: Response


class ResponseDone(ServerEvent, frozen=True, tag="response.done"):
    response: Response


class RateLimitsUpdated(ServerEvent, frozen=True, tag="rate_limits.updated"):
    rate_limits: tuple[RateLimit, ...]


class OutputItemAdded(ServerEvent, frozen=True, tag="response.output_item.added"):
    response_id: str
    output_index: int
    item: Item


class OutputItemDone(ServerEvent, frozen=True, tag="response.output_item.done"):
    response_id: str
    output_index: int
    item: Item


class Part(Struct, frozen=True, omit_defaults=False):
    type: Literal["text", "audio"]
    text: str | None = None
    transcript: str | None = None


class ContentPartAdded(ServerEvent, frozen=True, tag="response.content_part.added"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: Part


class ContentPartDone(ServerEvent, frozen=True, tag="response.content_part.done"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    part: Part


class OutputTextDelta(ServerEvent, frozen=True, tag="response.output_text.delta"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class OutputTextDone(ServerEvent, frozen=True, tag="response.output_text.done"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    text: str


class OutputAudioDelta(ServerEvent, frozen=True, tag="response.output_audio.delta"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: bytes


class OutputAudioDone(ServerEvent, frozen=True, tag="response.output_audio.done"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int


class OutputAudioTranscriptDelta(ServerEvent, frozen=True, tag="response.output_audio_transcript.delta"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


class OutputAudioTranscriptDone(ServerEvent, frozen=True, tag="response.output_audio_transcript.done"):
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str


class FunctionCallArgumentsDelta(ServerEvent, frozen=True, tag="response.function_call_arguments.delta"):
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class FunctionCallArgumentsDone(ServerEvent, frozen=True, tag="response.function_call_arguments.done"):
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


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
    | ItemRetrieved
    | ItemDeleted
    | ItemTruncated
    | TimeoutTriggered
    | ResponseCreated
    | ResponseDone
    | RateLimitsUpdated
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | OutputAudioDelta
    | OutputAudioDone
    | OutputAudioTranscriptDelta
    | OutputAudioTranscriptDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
)
