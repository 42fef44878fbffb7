"""Work the state machine hands to model workers. Jobs are small: audio is read from the log by sequence.

Every job carries its session, so a worker can tell when the session no longer wants it, and a deadline (epoch
milliseconds, from the clock of the record that asked for it): a job not started by then is not worth starting,
because its turn has moved on or its client would wait too long. Once started, a job runs to its end.
"""

from typing import Any, Literal

from msgspec import Struct

from domain import records as rec
from domain.session_config import AudioFormat

# How long a job may wait in its queue, by what it is for.
PARTIAL_DECODE_WAIT_MS = 2_000  # a decode while the user speaks: the next one will say more
TRANSCRIPT_WAIT_MS = 30_000  # a transcript the client waits for
GENERATE_WAIT_MS = 60_000
SYNTHESIZE_WAIT_MS = 120_000  # a late clause of a long answer waits for the ones before it
REQUEST_WAIT_MS = 30_000  # the job of a REST request (/v1/audio/...): its client holds the request open
# How the failure of a transcription a worker did not start by its deadline begins: it was shed under load (the
# edge's metrics count such partial decodes).
TRANSCRIPTION_LATE = "Transcription could not start in time"


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
    deadline_ms: int | None = None  # start by then, or not at all (None: whenever)
    asked_ms: int | None = None  # when it was asked for (the clock of the record that did): its result says how long
    # it waited for a worker


class TranscribeFileJob(Struct, frozen=True, tag="transcribe_file"):
    """Transcribe (or translate into English) the whole audio of a REST request (`/v1/audio/transcriptions`,
    `/v1/audio/translations`): its session's `audio.received` records first_seq..last_seq, all of them.

    Answered segment by segment (`stt.segment`, with word times when `word_timestamps`), then `stt.completed`
    with the language whisper heard; `item_id` is the request's id, which is also its session's.
    """

    job_id: str
    session_id: str
    item_id: str
    first_seq: int
    last_seq: int
    model: str
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None  # None: whisper's fallback from 0 upwards, as OpenAI does for 0
    word_timestamps: bool = False
    deadline_ms: int | None = None  # start by then, or not at all (None: whenever)


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
    deadline_ms: int | None = None  # start by then, or not at all (None: whenever)


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
    deadline_ms: int | None = None  # start by then, or not at all (None: whenever)


Job = TranscribeJob | TranscribeFileJob | GenerateJob | SynthesizeJob


def failed(job: Job, message: str, worker: str, at_ms: int) -> rec.Record:
    """The record that ends a job without its result: the state machine answers it as the job's failure."""
    match job:
        case TranscribeJob() | TranscribeFileJob():
            return rec.TranscriptionFailed(
                at_ms=at_ms, job_id=job.job_id, item_id=job.item_id, message=message, worker=worker
            )
        case GenerateJob():
            return rec.GenerationFailed(
                at_ms=at_ms, job_id=job.job_id, response_id=job.response_id, message=message, worker=worker
            )
        case SynthesizeJob():
            return rec.SpeechFailed(
                at_ms=at_ms,
                job_id=job.job_id,
                response_id=job.response_id,
                clause_index=job.clause_index,
                message=message,
                worker=worker,
            )
