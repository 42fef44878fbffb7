"""The records of a session's log: its inputs, in the order the state machine reduces them.

Every record carries the schema version `v` and the edge's receive time `at_ms` (epoch milliseconds), the only
clock the state machine sees.
"""

from typing import Literal

from msgspec import Raw, Struct

from domain.events import ClientEvent

SCHEMA_VERSION = 1


class RecordBase(Struct, frozen=True, tag_field="kind", kw_only=True):
    at_ms: int
    v: int = SCHEMA_VERSION


class SessionOpened(RecordBase, frozen=True, tag="session.opened"):
    session_id: str
    session_type: Literal["realtime", "transcription"]
    dialect: Literal["ga", "beta"]
    default_stt_model: str
    max_duration_s: int
    model: str | None = None
    transcription_model: str | None = None
    language: str | None = None
    llm_context_tokens: int | None = None  # the LLM's context window, when known: `session.truncation` fits it
    edge: str | None = None  # the edge that holds the session (its heartbeats list it); None in older logs


class ClientEventReceived(RecordBase, frozen=True, tag="client.event"):
    event: ClientEvent


class ClientEventRejected(RecordBase, frozen=True, tag="client.rejected"):
    """A client frame the edge could not accept; the state machine answers it with an `error`."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


class AudioReceived(RecordBase, frozen=True, tag="audio.received"):
    """One `input_audio_buffer.append`: its length, its audio at 16 kHz, silero's speech probability for each
    32 ms frame that this append completed, and (semantic VAD) the end-of-turn model's scores: (index into
    `speech_probs`, probability that the turn is complete after that frame)."""

    ticks: int
    pcm16k: bytes
    speech_probs: tuple[float, ...] = ()
    event_id: str | None = None
    turn_scores: tuple[tuple[int, float], ...] = ()

    @property
    def samples(self) -> int:
        return len(self.pcm16k) // 2


class AudioReceivedUnread(RecordBase, frozen=True, tag="audio.received"):
    """An `audio.received` record as the edge reads it back from the log: the session needs the length of its
    audio, not the audio, so the base64 text is left as it is (decoding it was most of the edge's cost per second
    of audio)."""

    ticks: int
    pcm16k: Raw  # the JSON string, quotes included: base64 as msgspec writes it, no escapes, no line breaks
    speech_probs: tuple[float, ...] = ()
    event_id: str | None = None
    turn_scores: tuple[tuple[int, float], ...] = ()

    @property
    def samples(self) -> int:
        text = memoryview(self.pcm16k)[1:-1]
        return (len(text) // 4 * 3 - bytes(text[-2:]).count(b"=")) // 2


class ItemAudioReceived(RecordBase, frozen=True, tag="item.audio"):
    """The audio of a `conversation.item.create` input_audio part, at 16 kHz; not part of the input buffer."""

    pcm16k: bytes
    event_id: str | None = None


class ItemAudioReceivedUnread(RecordBase, frozen=True, tag="item.audio"):
    """An `item.audio` record as the edge reads it back: the session refers to it by sequence only."""

    pcm16k: Raw
    event_id: str | None = None


class TranscriptionDeltaProduced(RecordBase, frozen=True, tag="stt.delta"):
    job_id: str
    item_id: str
    index: int
    text: str
    worker: str


class TranscriptionCompleted(RecordBase, frozen=True, tag="stt.completed"):
    job_id: str
    item_id: str
    transcript: str
    audio_seconds: float
    worker: str
    language: str | None = None


class Word(Struct, frozen=True, array_like=True):
    """A decoded word: its text as whisper writes it (with its leading space) and where it lies in the session's
    16 kHz audio stream."""

    text: str
    start: int
    end: int


class WordsDecoded(RecordBase, frozen=True, tag="stt.words"):
    """One decode of a turn's samples [start_sample, end_sample), word by word (a decode of a turn that may
    still be growing: the state machine decides which words are stable)."""

    job_id: str
    item_id: str
    start_sample: int
    end_sample: int
    words: tuple[Word, ...]
    worker: str
    language: str | None = None  # as given, or as whisper detected it
    waited_ms: int = 0  # from the job's asking to the decode's start: how far behind the STT workers are


class TimedWord(Struct, frozen=True, array_like=True):
    """A word of a REST transcription: whisper's text (with its leading space), its start and end in seconds of the
    request's audio, and whisper's probability for it."""

    text: str
    start: float
    end: float
    probability: float


class TranscriptSegmentDecoded(RecordBase, frozen=True, tag="stt.segment"):
    """One segment of a REST transcription (a `transcribe_file` job), as whisper decoded it: the fields of OpenAI's
    `verbose_json` segment, and its words when the request asked for word timestamps. Segments in `index` order
    concatenate to the transcript of the job's `stt.completed`."""

    job_id: str
    item_id: str
    index: int
    seek: int
    start: float
    end: float
    text: str
    tokens: tuple[int, ...]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    worker: str
    words: tuple[TimedWord, ...] = ()


class TranscriptionFailed(RecordBase, frozen=True, tag="stt.failed"):
    job_id: str
    item_id: str
    message: str
    worker: str


class ToolCallDelta(Struct, frozen=True):
    """A piece of a streamed tool call, as chat completions streams it (`index` identifies the call)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class GenerationDelta(RecordBase, frozen=True, tag="llm.delta"):
    """A piece of a streamed completion. `attempt` counts the job's deliveries: a job taken over from a worker
    that stopped generates a different sample, which must never be joined to the first one."""

    job_id: str
    response_id: str
    index: int
    worker: str
    attempt: int = 1
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


class GenerationDone(RecordBase, frozen=True, tag="llm.done"):
    job_id: str
    response_id: str
    finish_reason: str  # "stop", "length", "tool_calls", ... as the endpoint said
    worker: str
    attempt: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of the input tokens, those the endpoint had cached (its prompt prefix cache)
    prefill_ms: float | None = None  # the endpoint's time evaluating the prompt's other tokens, where it says


class GenerationFailed(RecordBase, frozen=True, tag="llm.failed"):
    job_id: str
    response_id: str
    message: str
    worker: str
    attempt: int = 1


class SpeechSynthesized(RecordBase, frozen=True, tag="tts.audio"):
    """One chunk (at most 100 ms) of a clause's speech, in the job's output format."""

    job_id: str
    response_id: str
    clause_index: int
    chunk_index: int
    audio: bytes
    last: bool
    worker: str


class SpeechFailed(RecordBase, frozen=True, tag="tts.failed"):
    job_id: str
    response_id: str
    clause_index: int
    message: str
    worker: str


class TranscriptionRequested(RecordBase, frozen=True, tag="api.transcription"):
    """A request to `/v1/audio/transcriptions` or `/v1/audio/translations`, as the edge accepted it: the first
    record of its session (`file_…`), before its audio. `model` is the model it runs on (the request's name
    resolved); the options are the request's."""

    endpoint: Literal["transcriptions", "translations"]
    model: str
    requested_model: str
    response_format: str
    filename: str | None
    upload_bytes: int
    audio_seconds: float
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    timestamp_granularities: tuple[str, ...] = ()
    stream: bool = False


class SpeechRequested(RecordBase, frozen=True, tag="api.speech"):
    """A request to `/v1/audio/speech`, as the edge accepted it: the first record of its session (`speech_…`).
    `voice` is the bundled voice it is spoken in; `instructions` are recorded but not followed (Kokoro takes none)."""

    input: str
    model: str
    voice: str
    requested_voice: str
    speed: float
    response_format: str
    stream_format: Literal["audio", "sse"]
    instructions: str | None = None


class SessionExpired(RecordBase, frozen=True, tag="session.expired"):
    pass


# The reason of a close that another process recorded for a session whose edge stopped holding it (it died, or lost
# it) without recording its end: the session was cut off, and its edge may not have reduced every record before it.
EDGE_LOST = "edge_lost"


class SessionClosed(RecordBase, frozen=True, tag="session.closed"):
    # "client", "unresponsive", "failed", "log_unavailable" (recorded by its edge), or EDGE_LOST; a REST request's
    # session: "answered" (its response was sent), or "client" / "failed" as above
    reason: str


_NotAudio = (
    SessionOpened
    | ClientEventReceived
    | ClientEventRejected
    | TranscriptionDeltaProduced
    | TranscriptionCompleted
    | WordsDecoded
    | TranscriptSegmentDecoded
    | TranscriptionFailed
    | GenerationDelta
    | GenerationDone
    | GenerationFailed
    | SpeechSynthesized
    | SpeechFailed
    | TranscriptionRequested
    | SpeechRequested
    | SessionExpired
    | SessionClosed
)
Record = _NotAudio | AudioReceived | ItemAudioReceived
# A session's records as the edge's reducer decodes them: the same records, their audio left unread.
ReducerRecord = _NotAudio | AudioReceivedUnread | ItemAudioReceivedUnread
