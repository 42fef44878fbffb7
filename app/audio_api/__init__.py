"""OpenAI's REST audio API on the work queues: `/v1/models`, `/v1/audio/transcriptions`, `/v1/audio/translations`
and `/v1/audio/speech`.

A request is a short session on the log, like a realtime one: it gets an id (`file_…` for a transcription or a
translation, `speech_…` for speech), its request is recorded (`api.transcription`, `api.speech`), an upload's audio
is decoded here (PyAV, as faster-whisper decodes files) and recorded at 16 kHz in `audio.received` records of at
most 5 s (a NATS message has a size limit), and its job goes to the STT workers' `stt-file` queue (behind sessions'
transcripts) or the `tts` queue, so any worker of a scaled-out deployment serves it. The answer is made of the
worker's result records, read from the session's `in.stt` / `in.tts` subject; a `session.closed` record ends the
session. A client that leaves mid-stream has its job dropped (the signal every worker hears).

Checks and rendering are domain code (`domain/rest_audio.py`); encoding speech is handler code
(`handlers/audio_encode.py`); this package is the I/O between them: `models`, `transcriptions`, `speech`, and
`request`, the session every request is.
"""

from litestar import post
from litestar.handlers import HTTPRouteHandler

from app.audio_api.models import list_models, retrieve_model
from app.audio_api.speech import speech
from app.audio_api.transcriptions import FORM_SLACK_BYTES, transcriptions, translations


def audio_routes(max_upload_bytes: int) -> list[HTTPRouteHandler]:
    """The REST audio API's routes; an upload's body may be the file limit and a few fields."""
    limit = max_upload_bytes + FORM_SLACK_BYTES
    return [
        list_models,
        retrieve_model,
        post("/v1/audio/transcriptions", request_max_body_size=limit)(transcriptions),
        post("/v1/audio/translations", request_max_body_size=limit)(translations),
        speech,
    ]
