"""Work the state machine hands to model workers. Jobs are small: audio is read from the log by sequence."""

from msgspec import Struct


class TranscribeJob(Struct, frozen=True, tag="transcribe"):
    """Transcribe 16 kHz samples [start_sample, end_sample) of a session's audio stream.

    The audio lies in the session's `audio.received` records with stream sequences first_seq..last_seq; the
    first of them begins at sample `first_sample`.
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


Job = TranscribeJob
