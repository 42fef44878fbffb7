"""The GA dialect: wire shapes of client events, and server events rendered from the canonical model."""

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from domain import events as ev
from domain.session_config import (
    AudioFormat,
    NoiseReduction,
    SessionConfig,
    SessionUpdate,
    Tracing,
    TranscriptionUpdate,
    Truncation,
    TurnDetection,
    TurnDetectionUpdate,
)


class _Wire(Struct, forbid_unknown_fields=True):
    pass


class PcmFormat(_Wire, tag="audio/pcm", tag_field="type"):
    rate: Literal[24000] = 24000


class PcmuFormat(_Wire, tag="audio/pcmu", tag_field="type"):
    pass


class PcmaFormat(_Wire, tag="audio/pcma", tag_field="type"):
    pass


Format = PcmFormat | PcmuFormat | PcmaFormat
_FORMAT_NAMES: dict[type[Struct], AudioFormat] = {
    PcmFormat: "pcm16",
    PcmuFormat: "g711_ulaw",
    PcmaFormat: "g711_alaw",
}


class AudioInput(_Wire):
    format: Format | UnsetType = UNSET
    transcription: TranscriptionUpdate | None | UnsetType = UNSET
    turn_detection: TurnDetectionUpdate | None | UnsetType = UNSET
    noise_reduction: NoiseReduction | None | UnsetType = UNSET


class Voice(_Wire):
    id: str


class AudioOutput(_Wire):
    format: Format | UnsetType = UNSET
    voice: str | Voice | UnsetType = UNSET
    speed: float | UnsetType = UNSET


class Audio(_Wire):
    input: AudioInput | UnsetType = UNSET
    output: AudioOutput | UnsetType = UNSET


class TranscriptionSession(_Wire, tag="transcription", tag_field="type"):
    audio: Audio | UnsetType = UNSET
    include: tuple[str, ...] | None | UnsetType = UNSET


class RealtimeSession(_Wire, tag="realtime", tag_field="type"):
    model: str | UnsetType = UNSET
    audio: Audio | UnsetType = UNSET
    include: tuple[str, ...] | None | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    output_modalities: tuple[Literal["audio", "text"], ...] | UnsetType = UNSET
    tools: tuple[dict[str, Any], ...] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    tracing: Tracing | UnsetType = UNSET
    truncation: Truncation | UnsetType = UNSET
    prompt: Any = UNSET  # a stored prompt template: accepted, reported as null (none is stored here)


class SessionUpdateEvent(_Wire, tag="session.update", tag_field="type"):
    session: RealtimeSession | TranscriptionSession
    event_id: str | None = None


class AppendEvent(_Wire, tag="input_audio_buffer.append", tag_field="type"):
    audio: bytes
    event_id: str | None = None


class CommitEvent(_Wire, tag="input_audio_buffer.commit", tag_field="type"):
    event_id: str | None = None


class ClearEvent(_Wire, tag="input_audio_buffer.clear", tag_field="type"):
    event_id: str | None = None


class WireContent(_Wire):
    type: Literal["input_text", "input_audio", "output_text", "text", "output_audio", "audio", "item_reference"]
    text: str | None = None
    audio: bytes | None = None
    transcript: str | None = None
    id: str | None = None


class WireItem(_Wire):
    """A conversation item as GA and beta clients send it (beta's flat item is a superset)."""

    type: Literal["message", "function_call", "function_call_output", "item_reference"]
    id: str | None = None
    object: str | None = None
    status: str | None = None
    role: Literal["user", "assistant", "system"] | None = None
    content: tuple[WireContent, ...] = ()
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class ResponseAudioOutput(_Wire):
    format: Format | UnsetType = UNSET
    voice: str | Voice | UnsetType = UNSET


class ResponseAudio(_Wire):
    output: ResponseAudioOutput | UnsetType = UNSET


class ResponseParams(_Wire):
    conversation: Literal["auto", "none"] | str = "auto"
    output_modalities: tuple[Literal["audio", "text"], ...] | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    audio: ResponseAudio | UnsetType = UNSET
    tools: tuple[dict[str, Any], ...] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    input: tuple[WireItem, ...] | UnsetType = UNSET
    metadata: dict[str, str] | None = None
    # Accepted for compatibility; not used.
    prompt: Any = UNSET
    tracing: Any = UNSET
    reasoning: Any = UNSET
    parallel_tool_calls: Any = UNSET


class ResponseCreateEvent(_Wire, tag="response.create", tag_field="type"):
    response: ResponseParams = msgspec.field(default_factory=ResponseParams)
    event_id: str | None = None


class ResponseCancelEvent(_Wire, tag="response.cancel", tag_field="type"):
    response_id: str | None = None
    event_id: str | None = None


class ItemCreateEvent(_Wire, tag="conversation.item.create", tag_field="type"):
    item: WireItem
    previous_item_id: str | None = None
    event_id: str | None = None


class ItemRetrieveEvent(_Wire, tag="conversation.item.retrieve", tag_field="type"):
    item_id: str
    event_id: str | None = None


class ItemTruncateEvent(_Wire, tag="conversation.item.truncate", tag_field="type"):
    item_id: str
    content_index: int
    audio_end_ms: int
    event_id: str | None = None


class ItemDeleteEvent(_Wire, tag="conversation.item.delete", tag_field="type"):
    item_id: str
    event_id: str | None = None


ItemEvent = ResponseCancelEvent | ItemCreateEvent | ItemRetrieveEvent | ItemTruncateEvent | ItemDeleteEvent
ClientEvent = SessionUpdateEvent | AppendEvent | CommitEvent | ClearEvent | ResponseCreateEvent | ItemEvent
decoder = msgspec.json.Decoder(ClientEvent)


def response_params(params: ResponseParams) -> "ev.ResponseParams":
    audio = params.audio.output if isinstance(params.audio, ResponseAudio) else UNSET
    output = audio if isinstance(audio, ResponseAudioOutput) else ResponseAudioOutput()
    voice = output.voice.id if isinstance(output.voice, Voice) else output.voice
    return ev.ResponseParams(
        conversation="none" if params.conversation == "none" else "auto",
        output_modalities=params.output_modalities,
        instructions=params.instructions,
        voice=voice,
        output_format=_format(output.format),
        tools=params.tools,
        tool_choice=params.tool_choice,
        max_output_tokens=params.max_output_tokens,
        input=UNSET if isinstance(params.input, UnsetType) else tuple(new_item(i) for i in params.input),
        metadata=params.metadata,
    )


def new_item(item: WireItem) -> "ev.NewItem":
    """The canonical item; audio inside it is taken out by the edge (see `item_audio`)."""
    content = tuple(ev.NewContent(type=c.type, text=c.text, transcript=c.transcript) for c in item.content)
    reference = item.id if item.type == "item_reference" else None
    return ev.NewItem(
        type=item.type,
        id=reference or item.id,
        role=item.role,
        content=content,
        call_id=item.call_id,
        name=item.name,
        arguments=item.arguments,
        output=item.output,
    )


def item_audio(item: WireItem) -> bytes | None:
    pieces = [c.audio for c in item.content if c.type == "input_audio" and c.audio]
    return b"".join(pieces) if pieces else None


def _format(value: Format | UnsetType) -> AudioFormat | UnsetType:
    return UNSET if isinstance(value, UnsetType) else _FORMAT_NAMES[type(value)]


def to_update(session: RealtimeSession | TranscriptionSession) -> SessionUpdate:
    audio = session.audio if isinstance(session.audio, Audio) else Audio()
    audio_in = audio.input if isinstance(audio.input, AudioInput) else AudioInput()
    audio_out = audio.output if isinstance(audio.output, AudioOutput) else AudioOutput()
    fields: dict[str, Any] = {
        "type": "realtime" if isinstance(session, RealtimeSession) else "transcription",
        "include": session.include,
        "input_format": _format(audio_in.format),
        "transcription": audio_in.transcription,
        "turn_detection": audio_in.turn_detection,
        "noise_reduction": audio_in.noise_reduction,
    }
    if isinstance(session, RealtimeSession):
        voice = audio_out.voice.id if isinstance(audio_out.voice, Voice) else audio_out.voice
        fields |= {
            "model": session.model,
            "instructions": session.instructions,
            "output_modalities": session.output_modalities,
            "tools": session.tools,
            "tool_choice": session.tool_choice,
            "max_output_tokens": session.max_output_tokens,
            "truncation": session.truncation,
            "tracing": session.tracing,
            "output_format": _format(audio_out.format),
            "voice": voice,
            "speed": audio_out.speed,
        }
    return SessionUpdate(**fields)


# --- rendering ----------------------------------------------------------------------------------------------

_FORMAT_WIRE: dict[AudioFormat, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}


def turn_detection(value: TurnDetection | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if value.type == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": value.eagerness,
            "create_response": value.create_response,
            "interrupt_response": value.interrupt_response,
        }
    fields = msgspec.to_builtins(value)
    del fields["eagerness"]
    return fields  # type: ignore[no-any-return]


def session(config: SessionConfig, session_id: str, expires_at: int) -> dict[str, Any]:
    audio_input = {
        "format": _FORMAT_WIRE[config.input_format],
        "transcription": config.transcription.wire if config.transcription else None,
        "noise_reduction": msgspec.to_builtins(config.noise_reduction),
        "turn_detection": turn_detection(config.turn_detection),
    }
    include = list(config.include) if config.include is not None else None
    if config.type == "transcription":
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": expires_at,
            "include": include,
            "audio": {"input": audio_input},
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "expires_at": expires_at,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": audio_input,
            "output": {
                "format": _FORMAT_WIRE[config.output_format],
                "voice": config.voice,
                "speed": config.speed,
            },
        },
        "tools": list(config.tools),
        "tool_choice": config.tool_choice,
        "max_output_tokens": config.max_output_tokens,
        "include": include,
        "tracing": config.tracing,
        "truncation": msgspec.to_builtins(config.truncation),
        "prompt": None,
    }


def response(body: dict[str, Any]) -> dict[str, Any]:
    """A canonical response (as builtins) in GA shape."""
    shaped = {k: v for k, v in body.items() if k not in ("voice", "output_format", "temperature")}
    shaped["object"] = "realtime.response"
    shaped["audio"] = {"output": {"format": _FORMAT_WIRE[body["output_format"]], "voice": body["voice"]}}
    return shaped
