"""Work the state machine hands to model workers. Jobs are small: audio is read from the log by sequence."""

from typing import Any

from msgspec import Struct

from domain.session_config import AudioFormat


class TranscribeJob(Struct, frozen=True, tag="transcribe"):
    """Transcribe 16 kHz samples [start_sample, end_sample) of a session's audio stream.

    The audio lies in the session's `audio.received` records with stream sequences first_seq..last_seq; the
    first of them begins at sample `first_sample`. With `words`, the result is one `stt.words` record (a decode
    of a turn in progress) instead of transcript deltas and `stt.completed`.
    """

    job_id: str
    session_id: str
    item_id: str
    first_seq: int
    last_seq: int
    first_sample: int
    start_sample: int
    end_sample: int
    model: str
    language: str | None = None
    prompt: str | None = None
    words: bool = False
    partial: bool = False  # a decode while the user speaks: it waits for the transcripts already due


class GenerateJob(Struct, frozen=True, tag="generate"):
    """Stream a chat completion. `messages` and `tools` are in the Chat Completions format."""

    job_id: str
    session_id: str
    response_id: str
    messages: tuple[dict[str, Any], ...]
    model: str
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"
    temperature: float | None = None
    max_tokens: int | None = None


class SynthesizeJob(Struct, frozen=True, tag="synthesize"):
    """Speak one clause of a response, in chunks of at most 100 ms of `audio_format`."""

    job_id: str
    session_id: str
    response_id: str
    clause_index: int
    text: str
    voice: str
    speed: float = 1.0
    audio_format: AudioFormat = "pcm16"


Job = TranscribeJob | GenerateJob | SynthesizeJob
