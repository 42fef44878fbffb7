"""OpenAI's REST audio API (`/v1/audio/transcriptions`, `/translations`, `/speech`) in Vocalis's terms: a request's
fields checked as OpenAI checks them, and a transcription's records rendered in the response format it asked for.

Pure: the edge (app/audio_api/) reads the request, resolves model and voice names (the registries are handler
code), records it and waits for the worker's records; this module decides what is valid and what the answer says.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import msgspec

from domain import records as rec
from domain import segmentation
from domain.languages import LANGUAGE_NAMES
from domain.session_config import MAX_PROMPT_CHARS, InvalidUpdate, check_length, unknown_language
from domain.transcripts import Cue, srt, vtt

TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
TRANSCRIPT_FORMATS: tuple[str, ...] = get_args(TranscriptFormat)
SPEECH_FORMATS: tuple[str, ...] = get_args(SpeechFormat)
GRANULARITIES = ("word", "segment")
MAX_SPEECH_INPUT_CHARS = 4_096  # as OpenAI
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # what OpenAI accepts (Kokoro then speaks 0.5 to 2: handlers/tts.py)


class ApiError(Exception):
    """A request refused, in OpenAI's error shape and with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = "invalid_value",
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _invalid(param: str, value: object, expected: str) -> ApiError:
    return ApiError(400, f"Invalid '{param}': {str(value)[:64]!r}. Expected {expected}.", param)


class TranscriptionForm(msgspec.Struct, frozen=True):
    """The fields of a transcription or translation request, checked (the model's name not yet resolved)."""

    model: str
    response_format: TranscriptFormat = "json"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    timestamp_granularities: tuple[str, ...] = ()
    stream: bool = False

    @property
    def words(self) -> bool:
        """Whether whisper must time the words: `verbose_json` with the `word` granularity."""
        return self.response_format == "verbose_json" and "word" in self.timestamp_granularities


def transcription_form(
    fields: Mapping[str, str], granularities: Sequence[str], translation: bool = False
) -> TranscriptionForm:
    """The request's text fields (the file is the edge's to read), or ApiError. A translation takes no `language`
    (whisper translates from whatever it hears) and no stream, as OpenAI's."""
    model = fields.get("model", "").strip()
    if not model:
        raise missing("model")
    response_format = fields.get("response_format") or "json"
    if response_format not in TRANSCRIPT_FORMATS:
        raise _invalid("response_format", response_format, f"one of {', '.join(TRANSCRIPT_FORMATS)}")
    language = (fields.get("language") or "").strip().lower() or None
    if translation:
        language = None
    elif language is not None and (refused := unknown_language(language)) is not None:
        raise ApiError(400, refused, "language")
    prompt = fields.get("prompt") or None
    if prompt is not None:
        try:
            check_length(prompt, MAX_PROMPT_CHARS, "prompt")
        except InvalidUpdate as long:
            raise ApiError(400, long.message, "prompt", long.code) from None
    temperature = _number(fields.get("temperature"), "temperature", 0.0, 1.0)
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise _invalid("timestamp_granularities[]", granularity, "'word' or 'segment'")
    stream = _flag(fields.get("stream"), "stream") and not translation
    return TranscriptionForm(
        model=model,
        response_format=response_format,  # type: ignore[arg-type]  # checked above
        language=language,
        prompt=prompt,
        temperature=temperature,
        timestamp_granularities=tuple(dict.fromkeys(granularities)),
        stream=stream,
    )


def _number(raw: str | None, param: str, low: float, high: float) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(param, raw, f"a number from {low:g} to {high:g}") from None
    if not low <= value <= high:
        raise _invalid(param, raw, f"a number from {low:g} to {high:g}")
    return value


def _flag(raw: str | None, param: str) -> bool:
    if raw is None or raw.lower() in ("", "false", "0"):
        return False
    if raw.lower() in ("true", "1"):
        return True
    raise _invalid(param, raw, "true or false")


class SpeechForm(msgspec.Struct, frozen=True):
    """The fields of a speech request, checked (the voice's name not yet resolved)."""

    input: str
    model: str
    voice: str
    speed: float = 1.0
    response_format: SpeechFormat = "mp3"
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = None  # accepted, recorded, not followed: Kokoro takes no instructions


def speech_form(body: object) -> SpeechForm:
    """A speech request's JSON body, or ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", None, "invalid_json")
    for param in ("model", "input", "voice"):
        if body.get(param) in (None, ""):
            raise missing(param)
    text, model, voice = body["input"], body["model"], body["voice"]
    if isinstance(voice, dict) and isinstance(voice.get("id"), str):  # a custom voice object: {"id": ...}
        voice = voice["id"]
    for param, value in (("input", text), ("model", model), ("voice", voice)):
        if not isinstance(value, str):
            raise _invalid(param, value, "a string")
    if len(text) > MAX_SPEECH_INPUT_CHARS:
        message = (
            f"Invalid 'input': string too long. Expected a string with maximum length {MAX_SPEECH_INPUT_CHARS}, "
            f"but got a string with length {len(text)} instead."
        )
        raise ApiError(400, message, "input", "string_above_max_length")
    speed = body.get("speed", 1.0)
    if speed is None:
        speed = 1.0
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise _invalid("speed", speed, f"a number from {MIN_SPEED} to {MAX_SPEED}")
    response_format: SpeechFormat = body.get("response_format") or "mp3"
    if response_format not in SPEECH_FORMATS:
        raise _invalid("response_format", response_format, f"one of {', '.join(SPEECH_FORMATS)}")
    stream_format: Literal["audio", "sse"] = body.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise _invalid("stream_format", stream_format, "'audio' or 'sse'")
    instructions = body.get("instructions")
    return SpeechForm(
        input=text,
        model=model,
        voice=voice,
        speed=float(speed),
        response_format=response_format,
        stream_format=stream_format,
        instructions=instructions if isinstance(instructions, str) else None,
    )


def speech_clauses(text: str) -> tuple[str, ...]:
    """The input as a conversation's answer is cut for speech: sentences and clauses, the first one short."""
    segmenter, clauses = segmentation.feed(segmentation.Segmenter(), text)
    _, rest = segmentation.flush(segmenter)
    return tuple(clause for clause in (*clauses, *rest) if clause.strip()) or (text,)


# --- the answer -------------------------------------------------------------------------------------------------


def language_name(code: str | None) -> str:
    """The language as OpenAI's `verbose_json` names it ("english"), the code itself if whisper has no name."""
    return LANGUAGE_NAMES.get(code or "", code or "")


def transcript_text(segments: Sequence[rec.TranscriptSegmentDecoded]) -> str:
    return "".join(segment.text for segment in segments).strip()


def transcript_body(
    form: TranscriptionForm,
    task: Literal["transcribe", "translate"],
    segments: Sequence[rec.TranscriptSegmentDecoded],
    completed: rec.TranscriptionCompleted,
) -> tuple[bytes, str]:
    """The response to a finished transcription, in its format: the body and its media type."""
    text = transcript_text(segments)
    match form.response_format:
        case "text":
            return (text + "\n").encode(), "text/plain; charset=utf-8"
        case "srt":
            return srt(_cues(segments)).encode(), "text/plain; charset=utf-8"
        case "vtt":
            return vtt(_cues(segments)).encode(), "text/plain; charset=utf-8"
        case "verbose_json":
            body: dict[str, Any] = {
                "task": task,
                "language": language_name(completed.language),
                "duration": round(completed.audio_seconds, 3),
                "text": text,
                "usage": usage(completed),
            }
            if not form.timestamp_granularities or "segment" in form.timestamp_granularities:
                body["segments"] = [_segment(s) for s in segments]
            if "word" in form.timestamp_granularities:
                body["words"] = [
                    {"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
                    for s in segments
                    for w in s.words
                ]
            return msgspec.json.encode(body), "application/json"
    return msgspec.json.encode({"text": text, "usage": usage(completed)}), "application/json"


def usage(completed: rec.TranscriptionCompleted) -> dict[str, Any]:
    """What the request used, as OpenAI bills whisper: seconds of audio."""
    return {"type": "duration", "seconds": round(completed.audio_seconds, 3)}


def _segment(segment: rec.TranscriptSegmentDecoded) -> dict[str, Any]:
    return {
        "id": segment.index,
        "seek": segment.seek,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def _cues(segments: Sequence[rec.TranscriptSegmentDecoded]) -> list[Cue]:
    return [(round(s.start * 1000), round(s.end * 1000), s.text.strip()) for s in segments if s.text.strip()]


def sse(event: Mapping[str, Any]) -> bytes:
    """One server-sent event, as OpenAI streams them: a `data:` line of JSON."""
    return b"data: " + msgspec.json.encode(event) + b"\n\n"
