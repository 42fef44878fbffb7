"""The effective configuration of a session, and how partial updates merge into it.

The canonical shape follows OpenAI's GA session. Dialect codecs (`domain.protocol`) map GA and beta wire
shapes to and from it. An update is validated as a whole: it applies completely or not at all.
"""

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from domain.languages import WHISPER_LANGUAGES

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
SessionType = Literal["realtime", "transcription"]

DEFAULT_THRESHOLD = 0.5
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 500


class Eagerness(Struct, frozen=True):
    """How semantic VAD ends a turn: at a pause the end-of-turn model scores `complete_at` or more (once the words
    of the pause agree, if it `checks_words`), and after `longest_pause_ms` of silence whatever it said."""

    complete_at: float
    longest_pause_ms: int
    checks_words: bool = True


# OpenAI documents the longest waits (8 s, 4 s, 2 s); auto is medium. The thresholds are Vocalis's, chosen with
# bench/turn_taking.py: high takes an unsure turn as finished, low waits for a confident one.
EAGERNESS = {
    "low": Eagerness(complete_at=0.9, longest_pause_ms=8000),
    "medium": Eagerness(complete_at=0.7, longest_pause_ms=4000),
    "auto": Eagerness(complete_at=0.7, longest_pause_ms=4000),
    # high answers on the sound alone: a few hundred ms sooner, and more sentences cut off (bench/turn_taking.py)
    "high": Eagerness(complete_at=0.5, longest_pause_ms=2000, checks_words=False),
}
# OpenAI documents no limit for realtime instructions; its Assistants API takes 256,000 characters, far more than
# any context window holds. The bound keeps what every LLM job and session event copies small.
MAX_INSTRUCTIONS_CHARS = 256_000
# Whisper reads only the last 223 tokens of a prompt (about 1,000 characters of English) and ignores the rest,
# which every transcription job would still copy; four times that leaves room for any prompt a client means.
MAX_PROMPT_CHARS = 4_096


class TurnDetection(Struct, frozen=True, omit_defaults=False):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS
    idle_timeout_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"

    @property
    def longest_silence_ms(self) -> int:
        """The silence that ends a turn whatever the end-of-turn model said (server VAD: the only rule)."""
        if self.type == "semantic_vad":
            return EAGERNESS[self.eagerness].longest_pause_ms
        return self.silence_duration_ms


class Transcription(Struct, frozen=True):
    model: str
    language: str | None = None
    prompt: str | None = None
    incremental: bool = True  # a Vocalis extension: transcript deltas while the user speaks (server VAD turns)

    @property
    def wire(self) -> dict[str, Any]:
        """As OpenAI's session objects show it. The extension shows only once a client turned it off: only a client
        that knows it sets it, and strict clients refuse fields that OpenAI does not send."""
        shown: dict[str, Any] = {"model": self.model, "language": self.language, "prompt": self.prompt}
        if not self.incremental:
            shown["incremental"] = False
        return shown


class NoiseReduction(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The input audio is denoised (DeepFilterNet 3, at the edge, before the VAD) while set; both types run the same
    model and setting (handlers/input_audio/denoise.py says why). `strength` is accepted and reported, not used."""

    type: Literal["near_field", "far_field"]
    strength: float | None = None


class TokenLimits(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    post_instructions: int | None = None


class RetentionRatio(
    Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, tag="retention_ratio", tag_field="type"
):
    """GA's truncation that keeps a fraction of the budget when it cuts, so the next turns fit without cutting."""

    retention_ratio: float
    token_limits: TokenLimits | None = None


Truncation = Literal["auto", "disabled"] | RetentionRatio
Tracing = Literal["auto"] | dict[str, Any] | None


class SessionConfig(Struct, frozen=True):
    type: SessionType
    model: str | None = None
    input_format: AudioFormat = "pcm16"
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = TurnDetection()
    noise_reduction: NoiseReduction | None = None
    include: tuple[str, ...] | None = None
    # Conversation fields: stored and reported here; conversation responses use them.
    instructions: str = ""
    output_modalities: tuple[Literal["audio", "text"], ...] = ("audio",)
    voice: str = "jm_kumo"  # the most intelligible bundled Kokoro voice
    output_format: AudioFormat = "pcm16"
    speed: float = 1.0
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"
    temperature: float = 0.8
    truncation: Truncation = "auto"
    tracing: Tracing = None  # accepted and reported as sent: Vocalis has no tracing backend


class TranscriptionUpdate(Struct, frozen=True, forbid_unknown_fields=True):
    model: str | UnsetType = UNSET
    language: str | None | UnsetType = UNSET
    prompt: str | None | UnsetType = UNSET
    incremental: bool | UnsetType = UNSET


class TurnDetectionUpdate(Struct, frozen=True, forbid_unknown_fields=True):
    type: Literal["server_vad", "semantic_vad"]
    threshold: float | UnsetType = UNSET
    prefix_padding_ms: int | UnsetType = UNSET
    silence_duration_ms: int | UnsetType = UNSET
    idle_timeout_ms: int | None | UnsetType = UNSET
    create_response: bool | UnsetType = UNSET
    interrupt_response: bool | UnsetType = UNSET
    eagerness: Literal["low", "medium", "high", "auto"] | UnsetType = UNSET


class SessionUpdate(Struct, frozen=True):
    """A partial session: UNSET keeps the current value, None clears a nullable field."""

    type: SessionType | UnsetType = UNSET
    model: str | UnsetType = UNSET  # the edge refuses a name it does not serve
    input_format: AudioFormat | UnsetType = UNSET
    transcription: TranscriptionUpdate | None | UnsetType = UNSET
    turn_detection: TurnDetectionUpdate | None | UnsetType = UNSET
    noise_reduction: NoiseReduction | None | UnsetType = UNSET
    include: tuple[str, ...] | None | UnsetType = UNSET
    instructions: str | UnsetType = UNSET
    output_modalities: tuple[Literal["audio", "text"], ...] | UnsetType = UNSET
    voice: str | UnsetType = UNSET
    output_format: AudioFormat | UnsetType = UNSET
    speed: float | UnsetType = UNSET
    tools: tuple[dict[str, Any], ...] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    max_output_tokens: int | Literal["inf"] | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    truncation: Truncation | UnsetType = UNSET
    tracing: Tracing | UnsetType = UNSET


class InvalidUpdate(Exception):
    """An update the session must refuse; `param` is the GA path of the offending field."""

    def __init__(self, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


_TD = "session.audio.input.turn_detection"


def _merge_turn_detection(current: TurnDetection | None, update: TurnDetectionUpdate) -> TurnDetection:
    # Same type: a partial object changes only what it names. A new type starts from that type's defaults.
    base = current if current is not None and current.type == update.type else TurnDetection(type=update.type)
    changes = {name: value for name in update.__struct_fields__ if (value := getattr(update, name)) is not UNSET}
    merged = msgspec.structs.replace(base, **changes)
    if not 0.0 <= merged.threshold <= 1.0:
        raise InvalidUpdate(
            "invalid_value",
            f"Invalid 'threshold': {merged.threshold}. Expected a value between 0 and 1.",
            f"{_TD}.threshold",
        )
    for name, upper in (("prefix_padding_ms", 10_000), ("silence_duration_ms", 10_000)):
        value = getattr(merged, name)
        if not 0 <= value <= upper:
            raise InvalidUpdate(
                "invalid_value",
                f"Invalid '{name}': {value}. Expected a value between 0 and {upper}.",
                f"{_TD}.{name}",
            )
    if merged.idle_timeout_ms is not None and not 5_000 <= merged.idle_timeout_ms <= 30_000:
        raise InvalidUpdate(
            "invalid_value",
            f"Invalid 'idle_timeout_ms': {merged.idle_timeout_ms}. Expected a value between 5000 and 30000.",
            f"{_TD}.idle_timeout_ms",
        )
    return merged


def _merge_transcription(
    current: Transcription | None, update: TranscriptionUpdate, default_model: str
) -> Transcription:
    base = current if current is not None else Transcription(model=default_model)
    changes = {name: value for name in update.__struct_fields__ if (value := getattr(update, name)) is not UNSET}
    merged = msgspec.structs.replace(base, **changes)
    if merged.language is not None and (refused := unknown_language(merged.language)) is not None:
        raise InvalidUpdate("invalid_value", refused, "session.audio.input.transcription.language")
    if merged.prompt is not None:
        check_length(merged.prompt, MAX_PROMPT_CHARS, "session.audio.input.transcription.prompt")
    return merged


def unknown_language(language: str) -> str | None:
    """Why whisper cannot take `language`, or None."""
    if language in WHISPER_LANGUAGES:
        return None
    return f"Invalid 'language': '{language[:64]}'. Expected an ISO-639-1 code, such as 'en', 'de' or 'ja'."


def check_length(text: str, limit: int, param: str) -> None:
    """InvalidUpdate as OpenAI words it when `text` is over `limit` characters."""
    if len(text) > limit:
        name = param.rsplit(".", 1)[-1]
        raise InvalidUpdate(
            "string_above_max_length",
            f"Invalid '{name}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(text)} instead.",
            param,
        )


def apply_update(config: SessionConfig, update: SessionUpdate, default_stt_model: str) -> SessionConfig:
    """The config after `update`, or InvalidUpdate and no change at all."""
    if update.type is not UNSET and update.type != config.type:
        raise InvalidUpdate(
            "invalid_value",
            f"Cannot change the session type from '{config.type}' to '{update.type}'. "
            "Open a new connection (use ?intent=transcription for a transcription session).",
            "session.type",
        )
    changes: dict[str, Any] = {}
    for name in update.__struct_fields__:
        value = getattr(update, name)
        if value is UNSET or name == "type":
            continue
        if name == "turn_detection" and value is not None:
            value = _merge_turn_detection(config.turn_detection, value)
        elif name == "transcription" and value is not None:
            value = _merge_transcription(config.transcription, value, default_stt_model)
        changes[name] = value
    if isinstance(update.instructions, str):
        check_length(update.instructions, MAX_INSTRUCTIONS_CHARS, "session.instructions")
    if isinstance(update.speed, float) and not 0.25 <= update.speed <= 1.5:
        raise InvalidUpdate(
            "invalid_value",
            f"Invalid 'speed': {update.speed}. Expected a value between 0.25 and 1.5.",
            "session.audio.output.speed",
        )
    if isinstance(update.truncation, RetentionRatio) and not 0.0 <= update.truncation.retention_ratio <= 1.0:
        raise InvalidUpdate(
            "invalid_value",
            f"Invalid 'retention_ratio': {update.truncation.retention_ratio}. Expected a value between 0 and 1.",
            "session.truncation.retention_ratio",
        )
    max_tokens = update.max_output_tokens
    if isinstance(max_tokens, int) and not 1 <= max_tokens <= 4096:
        raise InvalidUpdate(
            "invalid_value",
            f"Invalid 'max_output_tokens': {max_tokens}. Expected 1 to 4096 or 'inf'.",
            "session.max_output_tokens",
        )
    return msgspec.structs.replace(config, **changes)
