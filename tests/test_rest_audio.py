"""The REST audio API's pure parts (domain/rest_audio.py) and the speech encoder, without a server."""

import io
import json
import wave

import av
import numpy as np
import pytest

from domain import records as rec
from domain.languages import LANGUAGE_NAMES, WHISPER_LANGUAGES
from domain.rest_audio import (
    SPEECH_FORMATS,
    ApiError,
    TranscriptionForm,
    speech_clauses,
    speech_form,
    transcript_body,
    transcription_form,
)
from handlers.audio_encode import SpeechEncoder
from handlers.input_audio.decode import InvalidAudio, decode_file
from tests.realtime_client import AUDIO


def segment(index: int, start: float, end: float, text: str, words: tuple[rec.TimedWord, ...] = ()) -> rec.Record:
    return rec.TranscriptSegmentDecoded(
        at_ms=0,
        job_id="job_1",
        item_id="file_1",
        index=index,
        seek=0,
        start=start,
        end=end,
        text=text,
        tokens=(1, 2),
        temperature=0.0,
        avg_logprob=-0.2,
        compression_ratio=1.1,
        no_speech_prob=0.01,
        worker="w",
        words=words,
    )


SEGMENTS = [
    segment(
        0, 0.0, 2.5, " Hello there.", (rec.TimedWord(" Hello", 0.1, 0.6, 0.9), rec.TimedWord(" there.", 0.7, 1.2, 0.8))
    ),
    segment(1, 2.5, 3_725.25, " Goodbye.", (rec.TimedWord(" Goodbye.", 2.6, 3.0, 0.9),)),
]
COMPLETED = rec.TranscriptionCompleted(
    at_ms=0,
    job_id="job_1",
    item_id="file_1",
    transcript="Hello there. Goodbye.",
    audio_seconds=3.5,
    worker="w",
    language="en",
)


def test_every_language_whisper_knows_has_a_name():
    assert set(LANGUAGE_NAMES) == WHISPER_LANGUAGES


def test_transcription_fields_are_checked_as_openai_checks_them():
    form = transcription_form({"model": "whisper-1", "language": "EN", "stream": "true"}, ["word", "word"])
    assert (form.language, form.stream, form.timestamp_granularities) == ("en", True, ("word",))
    assert not form.words  # word times only for verbose_json
    translation = transcription_form({"model": "whisper-1", "language": "de", "stream": "true"}, [], translation=True)
    assert translation.language is None and not translation.stream
    for fields, granularities, param in [
        ({}, [], "model"),
        ({"model": "m", "response_format": "docx"}, [], "response_format"),
        ({"model": "m", "language": "klingon"}, [], "language"),
        ({"model": "m", "temperature": "2"}, [], "temperature"),
        ({"model": "m", "temperature": "warm"}, [], "temperature"),
        ({"model": "m", "prompt": "x" * 5000}, [], "prompt"),
        ({"model": "m", "stream": "maybe"}, [], "stream"),
        ({"model": "m"}, ["sentence"], "timestamp_granularities[]"),
    ]:
        with pytest.raises(ApiError) as refused:
            transcription_form(fields, granularities)
        assert (refused.value.status, refused.value.param) == (400, param)


def test_speech_fields_are_checked_as_openai_checks_them():
    form = speech_form({"model": "tts-1", "voice": {"id": "alloy"}, "input": "Hi", "speed": 1, "instructions": "x"})
    assert (form.voice, form.speed, form.response_format, form.stream_format) == ("alloy", 1.0, "mp3", "audio")
    for body, param, code in [
        ({"voice": "alloy", "input": "Hi"}, "model", "missing_required_parameter"),
        ({"model": "tts-1", "voice": "alloy", "input": ""}, "input", "missing_required_parameter"),
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input", "string_above_max_length"),
        ({"model": "tts-1", "voice": "alloy", "input": "Hi", "speed": 0.1}, "speed", "invalid_value"),
        ({"model": "tts-1", "voice": "alloy", "input": "Hi", "speed": True}, "speed", "invalid_value"),
        (
            {"model": "tts-1", "voice": "alloy", "input": "Hi", "response_format": "ogg"},
            "response_format",
            "invalid_value",
        ),
        ({"model": "tts-1", "voice": "alloy", "input": "Hi", "stream_format": "ws"}, "stream_format", "invalid_value"),
        ({"model": "tts-1", "voice": 3, "input": "Hi"}, "voice", "invalid_value"),
    ]:
        with pytest.raises(ApiError) as refused:
            speech_form(body)
        assert (refused.value.param, refused.value.code) == (param, code or "invalid_value")
        assert refused.value.body()["error"]["type"] == "invalid_request_error"


def test_a_transcript_in_every_format():
    def body(response_format: str, granularities: tuple[str, ...] = ()) -> tuple[bytes, str]:
        form = TranscriptionForm("whisper-1", response_format, timestamp_granularities=granularities)  # type: ignore[arg-type]
        return transcript_body(form, "transcribe", SEGMENTS, COMPLETED)

    assert body("text") == (b"Hello there. Goodbye.\n", "text/plain; charset=utf-8")
    assert body("json")[0] == b'{"text":"Hello there. Goodbye.","usage":{"type":"duration","seconds":3.5}}'
    srt = body("srt")[0].decode()
    assert srt == "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:02,500 --> 01:02:05,250\nGoodbye.\n"
    assert body("vtt")[0].decode().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    verbose = json.loads(body("verbose_json")[0])
    assert (verbose["task"], verbose["language"], verbose["duration"]) == ("transcribe", "english", 3.5)
    assert [s["id"] for s in verbose["segments"]] == [0, 1] and "words" not in verbose
    worded = json.loads(body("verbose_json", ("word",))[0])
    assert "segments" not in worded
    assert worded["words"] == [
        {"word": "Hello", "start": 0.1, "end": 0.6},
        {"word": "there.", "start": 0.7, "end": 1.2},
        {"word": "Goodbye.", "start": 2.6, "end": 3.0},
    ]


@pytest.mark.parametrize("audio_format", SPEECH_FORMATS)
def test_speech_encodes_as_it_streams_and_decodes_to_its_length(audio_format):
    tone = (np.sin(np.arange(48_000) / 24_000 * 2 * np.pi * 220) * 8000).astype("<i2").tobytes()  # 2 s
    encoder = SpeechEncoder(audio_format)  # type: ignore[arg-type]
    pieces = [encoder.encode(tone[i : i + 4800]) for i in range(0, len(tone), 4800)]
    pieces.append(encoder.finish())
    data = b"".join(pieces)
    if audio_format == "pcm":
        assert data == tone
        return
    assert sum(1 for piece in pieces[:-1] if piece) >= 1, "bytes come out before the end"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        seconds = sum(frame.samples for frame in container.decode(stream)) / stream.rate
    assert 1.9 < seconds < 2.2


def test_uploads_decode_to_16_khz_and_garbage_is_invalid():
    pcm = decode_file((AUDIO / "jfk.wav").read_bytes(), 60)
    with wave.open(str(AUDIO / "jfk.wav")) as source:
        assert len(pcm) // 2 == pytest.approx(source.getnframes() * 16_000 / 24_000, abs=16)
    for garbage in (b"", b"not audio" * 100):
        with pytest.raises(InvalidAudio):
            decode_file(garbage, 60)
    with pytest.raises(InvalidAudio, match="more than 10 s"):
        decode_file((AUDIO / "jfk.wav").read_bytes(), 10)


def test_speech_is_cut_into_clauses_as_an_answer_is():
    text = "Ask not what your country can do for you, ask what you can do for your country. Thank you."
    clauses = speech_clauses(text)
    assert len(clauses) >= 3 and len(clauses[0].split()) <= 6
    assert " ".join(clauses) == text
    assert speech_clauses("...") == ("...",)  # nothing to cut: one clause, as it is
