"""The beta dialect (`OpenAI-Beta: realtime=v1`): flat sessions and the older event names."""

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from domain import events as ev
from domain.protocol import ga
from domain.session_config import (
    AudioFormat,
    NoiseReduction,
    SessionConfig,
    SessionUpdate,
    Tracing,
    TranscriptionUpdate,
    TurnDetectionUpdate,
)


class _Wire(Struct, forbid_unknown_fields=True):
    pass


class TranscriptionSession(_Wire):
    input_audio_format: AudioFormat | UnsetType = UNSET
    input_audio_transcription: TranscriptionUpdate | None | UnsetType = UNSET
    turn_detection: TurnDetectionUpdate | None | UnsetType = UNSET
    input_audio_noise_reduction: NoiseReduction | None | UnsetType = UNSET
    include: tuple[str, ...] | None | UnsetType = UNSET
    modalities: tuple[Literal["text", "audio"], ...] | UnsetType = UNSET


class Session(TranscriptionSession):
    model: str | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    voice: str | UnsetType = UNSET
    output_audio_format: AudioFormat | UnsetType = UNSET
    tools: tuple[dict[str, Any], ...] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    max_response_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    speed: float | UnsetType = UNSET
    tracing: Tracing | UnsetType = UNSET


class SessionUpdateEvent(_Wire, tag="session.update", tag_field="type"):
    session: Session
    event_id: str | None = None


class TranscriptionSessionUpdateEvent(_Wire, tag="transcription_session.update", tag_field="type"):
    session: TranscriptionSession
    event_id: str | None = None


class ResponseParams(_Wire):
    conversation: Literal["auto", "none"] | str = "auto"
    modalities: tuple[Literal["text", "audio"], ...] | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    voice: str | UnsetType = UNSET
    output_audio_format: AudioFormat | UnsetType = UNSET
    tools: tuple[dict[str, Any], ...] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    max_response_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    input: tuple[ga.WireItem, ...] | UnsetType = UNSET
    metadata: dict[str, str] | None = None


class ResponseCreateEvent(_Wire, tag="response.create", tag_field="type"):
    response: ResponseParams = msgspec.field(default_factory=ResponseParams)
    event_id: str | None = None


ClientEvent = (
    SessionUpdateEvent
    | TranscriptionSessionUpdateEvent
    | ga.AppendEvent
    | ga.CommitEvent
    | ga.ClearEvent
    | ResponseCreateEvent
    | ga.ItemEvent
)
decoder = msgspec.json.Decoder(ClientEvent)


def to_update(session: TranscriptionSession) -> SessionUpdate:
    fields: dict[str, Any] = {
        "input_format": session.input_audio_format,
        "transcription": session.input_audio_transcription,
        "turn_detection": session.turn_detection,
        "noise_reduction": session.input_audio_noise_reduction,
        "include": session.include,
    }
    if isinstance(session, Session):
        modalities = session.modalities
        if not isinstance(modalities, UnsetType):
            modalities = ("audio",) if "audio" in modalities else ("text",)
        fields |= {
            "model": session.model,
            "output_modalities": modalities,
            "instructions": session.instructions,
            "voice": session.voice,
            "output_format": session.output_audio_format,
            "tools": session.tools,
            "tool_choice": session.tool_choice,
            "temperature": session.temperature,
            "max_output_tokens": session.max_response_output_tokens,
            "speed": session.speed,
            "tracing": session.tracing,
        }
    return SessionUpdate(**fields)


def response_params(params: ResponseParams) -> ev.ResponseParams:
    modalities = params.modalities
    if not isinstance(modalities, UnsetType):
        modalities = ("audio",) if "audio" in modalities else ("text",)
    return ev.ResponseParams(
        conversation="none" if params.conversation == "none" else "auto",
        output_modalities=modalities,
        instructions=params.instructions,
        voice=params.voice,
        output_format=params.output_audio_format,
        tools=params.tools,
        tool_choice=params.tool_choice,
        temperature=params.temperature,
        max_output_tokens=params.max_response_output_tokens,
        input=UNSET if isinstance(params.input, UnsetType) else tuple(ga.new_item(i) for i in params.input),
        metadata=params.metadata,
    )


# GA parameter paths the state machine reports, as a beta client knows them.
PARAM_PATHS = (
    ("session.audio.input.transcription", "session.input_audio_transcription"),
    ("session.audio.input.turn_detection", "session.turn_detection"),
    ("session.audio.input.noise_reduction", "session.input_audio_noise_reduction"),
    ("session.audio.input.format", "session.input_audio_format"),
    ("session.audio.output.format", "session.output_audio_format"),
    ("session.audio.output.voice", "session.voice"),
    ("session.audio.output.speed", "session.speed"),
    ("session.max_output_tokens", "session.max_response_output_tokens"),
    ("response.audio.output.voice", "response.voice"),
)


def param(path: str | None) -> str | None:
    for ga_path, beta_path in PARAM_PATHS:
        if path is not None and path.startswith(ga_path):
            return beta_path + path[len(ga_path) :]
    return path


def session(config: SessionConfig, session_id: str, expires_at: int) -> dict[str, Any]:
    common = {
        "id": session_id,
        "expires_at": expires_at,
        "input_audio_format": config.input_format,
        "input_audio_transcription": config.transcription.wire if config.transcription else None,
        "turn_detection": ga.turn_detection(config.turn_detection),
        "input_audio_noise_reduction": msgspec.to_builtins(config.noise_reduction),
        "include": list(config.include) if config.include is not None else None,
    }
    if config.type == "transcription":
        return {
            "object": "realtime.transcription_session",
            **common,
            "modalities": ["text"],
            "client_secret": {"value": "", "expires_at": expires_at},
        }
    return {
        "object": "realtime.session",
        "model": config.model,
        **common,
        "modalities": ["text", "audio"] if "audio" in config.output_modalities else ["text"],
        "instructions": config.instructions,
        "voice": config.voice,
        "output_audio_format": config.output_format,
        "tools": list(config.tools),
        "tool_choice": config.tool_choice,
        "temperature": config.temperature,
        "max_response_output_tokens": config.max_output_tokens,
        "speed": config.speed,
        "tracing": config.tracing,
    }


EVENT_NAMES = {
    "conversation.item.added": "conversation.item.created",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
}
_CONTENT_TYPES = {"output_text": "text", "output_audio": "audio"}


def item(body: dict[str, Any]) -> dict[str, Any]:
    """A GA item (as builtins) as beta shapes it: assistant content is `text` / `audio`."""
    if "content" in body:
        body = body | {"content": [c | {"type": _CONTENT_TYPES.get(c["type"], c["type"])} for c in body["content"]]}
    return body


def response(body: dict[str, Any]) -> dict[str, Any]:
    shaped = {k: v for k, v in body.items() if k not in ("output_modalities", "output_format")}
    shaped["object"] = "realtime.response"
    shaped["modalities"] = ["text", "audio"] if "audio" in body["output_modalities"] else ["text"]
    shaped["output_audio_format"] = body["output_format"]
    shaped["output"] = [item(i) for i in body["output"]]
    return shaped
