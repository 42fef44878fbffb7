"""The REST audio API end to end: the official SDK against a real edge, real NATS, whisper and Kokoro; the jobs go
through the same work queues as a realtime session's."""

import asyncio
import base64
import io
import json
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI

from app.log_reader import read_session
from domain.rest_audio import speech_clauses
from handlers.tts import KokoroSynthesizer
from handlers.tts_worker import TtsWorker
from tests.conftest import Stack
from tests.realtime_client import AUDIO, JFK, word_error_rate, words

TINY_WER = 0.2  # whisper-tiny.en on jfk.wav gets one word or two wrong at most; this bounds it loosely


@pytest.fixture
async def rest(stack: Stack, synthesizer: KokoroSynthesizer) -> AsyncIterator[Stack]:
    """The stack (edge and STT worker) plus a TTS worker, once both take jobs."""
    stop = asyncio.Event()
    tts = asyncio.create_task(TtsWorker(stack.bus, synthesizer, "test-tts").run(stop))
    try:
        await _workers_alive(stack, ("stt", "tts"))
        yield stack
    finally:
        stop.set()
        await asyncio.gather(tts, return_exceptions=True)


async def _workers_alive(stack: Stack, kinds: tuple[str, ...]) -> None:
    for _ in range(200):
        if all((await stack.bus.waiting_workers(kinds)).values()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no live worker of {kinds}")


def client(stack: Stack) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="test-key", base_url=stack.http_url, max_retries=0)


def encoded(tmp_path: Path, name: str, container: str, codec: str, rate: int) -> Path:
    """jfk.wav encoded by PyAV into `tmp_path` (no binary fixtures in the repository)."""
    with wave.open(str(AUDIO / "jfk.wav")) as source:
        pcm = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    target = tmp_path / name
    with av.open(str(target), mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 24_000
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            output.mux(stream.encode(piece))
        output.mux(stream.encode(None))
    return target


def decoded_seconds(data: bytes, container: str | None = None) -> float:
    with av.open(io.BytesIO(data), format=container) as source:
        stream = source.streams.audio[0]
        return sum(frame.samples for frame in source.decode(stream)) / stream.rate


# --- models ---------------------------------------------------------------------------------------------------


async def test_models_lists_transcription_models_llms_and_voices(rest):
    models = await client(rest).models.list()
    ids = [model.id for model in models.data]
    assert {"whisper-base", "whisper-tiny.en", "qwen2.5-coder-1.5b", "kokoro", "jm_kumo"} <= set(ids)
    assert all(model.object == "model" and model.owned_by and model.created > 0 for model in models.data)
    kinds = {model.id: getattr(model, "kind", None) for model in models.data}  # Vocalis's own field
    assert kinds["whisper-tiny.en"] == "transcription" and kinds["jm_kumo"] == "voice" and kinds["kokoro"] == "speech"
    assert kinds["qwen2.5-coder-1.5b"] == "llm"
    assert (await client(rest).models.retrieve("whisper-tiny.en")).id == "whisper-tiny.en"
    assert (await client(rest).models.retrieve("whisper-1")).id == "whisper-1"  # an OpenAI name it serves
    with pytest.raises(openai.NotFoundError) as missing:
        await client(rest).models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    assert missing.value.body["type"] == "invalid_request_error"


# --- transcriptions -------------------------------------------------------------------------------------------


async def test_transcribes_a_wav_with_an_openai_model_name_and_records_the_request_as_a_session(rest):
    response = await client(rest).audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=AUDIO / "jfk.wav"
    )
    transcription = response.parse()
    assert word_error_rate(JFK, transcription.text) <= TINY_WER
    assert transcription.usage.type == "duration" and 10.5 < transcription.usage.seconds < 11.5

    session_id = response.headers["x-request-id"]
    assert session_id.startswith("file_")
    recorded = await read_session(rest.bus, session_id)
    kinds = [json.loads(entry.data)["kind"] for entry in recorded.entries]
    assert kinds[0] == "api.transcription" and kinds[-1] == "session.closed"
    assert kinds.count("audio.received") == 3  # 11 s in records of at most 5 s
    assert "stt.segment" in kinds and "stt.completed" in kinds
    request = json.loads(recorded.entries[0].data)
    assert (request["model"], request["requested_model"]) == ("whisper-tiny.en", "whisper-1")
    assert json.loads(recorded.entries[-1].data)["reason"] == "answered"

    metrics = (await httpx.AsyncClient().get(rest.http_url.removesuffix("/v1") + "/metrics")).text
    assert 'vocalis_jobs_total{kind="stt-file",outcome="done"} 1.0' in metrics
    assert 'vocalis_api_requests_total{endpoint="transcriptions",status="200"} 1.0' in metrics


@pytest.mark.parametrize(
    "name, container, codec, rate",
    [
        ("jfk.mp3", "mp3", "libmp3lame", 24_000),
        ("jfk.opus", "ogg", "libopus", 48_000),
        ("jfk.webm", "webm", "libopus", 48_000),  # what a browser's MediaRecorder makes
        ("jfk.m4a", "ipod", "aac", 24_000),  # a phone's voice memo
    ],
)
async def test_transcribes_compressed_files(rest, tmp_path, name, container, codec, rate):
    path = encoded(tmp_path, name, container, codec, rate)
    text = await client(rest).audio.transcriptions.create(model="whisper-1", file=path, response_format="text")
    assert isinstance(text, str)
    assert word_error_rate(JFK, text) <= TINY_WER


async def test_verbose_json_has_segments_and_words_in_order(rest):
    verbose = await client(rest).audio.transcriptions.create(
        model="whisper-tiny.en",
        file=AUDIO / "jfk.wav",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        temperature=0.0,
    )
    assert verbose.language == "english"
    assert 10.5 < verbose.duration < 11.5
    assert word_error_rate(JFK, verbose.text) <= TINY_WER
    assert verbose.segments and verbose.words
    assert [segment.id for segment in verbose.segments] == list(range(len(verbose.segments)))
    assert "".join(segment.text for segment in verbose.segments).strip() == verbose.text
    starts = [word.start for word in verbose.words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= verbose.duration + 0.5 for w in verbose.words)
    assert word_error_rate(JFK, " ".join(word.word for word in verbose.words)) <= TINY_WER
    segment = verbose.segments[0]
    assert segment.tokens and segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1

    only_segments = await client(rest).audio.transcriptions.create(
        model="whisper-tiny.en", file=AUDIO / "jfk.wav", response_format="verbose_json"
    )
    assert only_segments.segments and only_segments.words is None


async def test_subtitles(rest):
    srt = await client(rest).audio.transcriptions.create(
        model="whisper-1", file=AUDIO / "jfk.wav", response_format="srt"
    )
    vtt = await client(rest).audio.transcriptions.create(
        model="whisper-1", file=AUDIO / "jfk.wav", response_format="vtt"
    )
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert vtt.startswith("WEBVTT\n\n00:00:0")
    cue_text = " ".join(line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit())
    assert word_error_rate(JFK, cue_text) <= TINY_WER


async def test_stream_sends_deltas_then_done(rest):
    stream = await client(rest).audio.transcriptions.create(model="whisper-1", file=AUDIO / "jfk.wav", stream=True)
    events = [event async for event in stream]
    types = [event.type for event in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
    assert types[:-1] and set(types[:-1]) == {"transcript.text.delta"}
    assert "".join(event.delta for event in events[:-1]) == events[-1].text
    assert word_error_rate(JFK, events[-1].text) <= TINY_WER


SPANISH = "Buenos días. Me llamo Juan y vivo en Madrid con mi familia."


def spanish_flac(synthesizer: KokoroSynthesizer, tmp_path: Path) -> Path:
    """Spanish speech: the bundled voice reading Spanish phonemes (espeak's "es"), which whisper-base hears as
    Spanish; saved as FLAC (another upload format)."""
    audio, rate = synthesizer._kokoro.create(SPANISH, "jm_kumo", speed=1.0, lang="es")
    target = tmp_path / "spanish.flac"
    with av.open(str(target), mode="w", format="flac") as output:
        stream = output.add_stream("flac", rate=rate, layout="mono")
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return target


async def test_translation_translates_into_english_with_a_multilingual_model(rest, synthesizer, tmp_path):
    spanish = spanish_flac(synthesizer, tmp_path)
    # whisper-1 means the default model, English-only in the tests: a translation takes the multilingual one.
    response = await client(rest).audio.translations.with_raw_response.create(
        model="whisper-1", file=spanish, response_format="verbose_json"
    )
    translation = response.parse()
    assert translation.language == "spanish" and translation.segments
    heard = words(translation.text)
    assert "madrid" in heard and "family" in heard and "familia" not in heard
    recorded = await read_session(rest.bus, response.headers["x-request-id"])
    request = json.loads(recorded.entries[0].data)
    assert (request["endpoint"], request["model"]) == ("translations", "whisper-base")

    transcript = await client(rest).audio.transcriptions.create(model="whisper-base", file=spanish, language="es")
    assert "familia" in words(transcript.text)  # the same speech, transcribed: still Spanish

    with pytest.raises(openai.BadRequestError) as english_only:
        await client(rest).audio.translations.create(model="whisper-tiny.en", file=spanish)
    assert english_only.value.param == "model"


# --- speech ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
async def test_speech_streams_decodable_audio(rest, response_format):
    speech = client(rest).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Hello there, how are you?", response_format=response_format
    )
    async with speech as response:
        pieces = [piece async for piece in response.iter_bytes()]
        assert response.headers["x-request-id"].startswith("speech_")
    audio = b"".join(pieces)
    seconds = len(audio) / 48_000 if response_format == "pcm" else decoded_seconds(audio)  # pcm: 24 kHz pcm16
    assert 0.8 < seconds < 5


async def test_speech_in_wav_transcribes_back_to_its_text(rest):
    text = "Ask not what your country can do for you."
    async with client(rest).audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts", voice="jm_kumo", input=text, response_format="wav", instructions="Speak calmly."
    ) as response:
        audio = await response.read()
    heard = await client(rest).audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", audio), response_format="text"
    )
    assert word_error_rate(text, heard) <= 0.25


async def test_speech_as_server_sent_events(rest):
    async with client(rest).audio.speech.with_streaming_response.create(
        model="tts-1", voice="coral", input="One, two, three.", response_format="mp3", stream_format="sse"
    ) as response:
        lines = [line async for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    types = [event["type"] for event in events]
    assert types[-1] == "speech.audio.done" and set(types[:-1]) == {"speech.audio.delta"} and len(types) > 2
    assert events[-1]["usage"]["input_tokens"] == 3 and events[-1]["usage"]["output_tokens"] > 0
    audio = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    assert decoded_seconds(audio, "mp3") > 0.5


# --- errors ---------------------------------------------------------------------------------------------------


async def test_a_corrupt_file_is_invalid(rest):
    with pytest.raises(openai.BadRequestError) as refused:
        await client(rest).audio.transcriptions.create(model="whisper-1", file=("notes.mp3", b"no audio here" * 50))
    assert (refused.value.code, refused.value.param) == ("invalid_value", "file")


@pytest.mark.vocalis_settings(max_upload_bytes=100_000)
async def test_a_file_over_the_limit_is_refused_with_413(rest):
    with pytest.raises(openai.APIStatusError) as refused:
        await client(rest).audio.transcriptions.create(model="whisper-1", file=AUDIO / "jfk.wav")  # 528 kB
    assert refused.value.status_code == 413
    assert (refused.value.code, refused.value.param) == ("file_too_large", "file")


async def test_unknown_models_and_voices(rest):
    with pytest.raises(openai.BadRequestError) as model:
        await client(rest).audio.transcriptions.create(model="whisper-huge", file=AUDIO / "hello_world.wav")
    assert (model.value.code, model.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as voice:
        await client(rest).audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert (voice.value.code, voice.value.param) == ("invalid_value", "voice")
    with pytest.raises(openai.BadRequestError) as speech_model:
        await client(rest).audio.speech.create(model="whisper-1", voice="alloy", input="Hi.")
    assert (speech_model.value.code, speech_model.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as language:
        await client(rest).audio.transcriptions.create(model="whisper-1", file=AUDIO / "hello_world.wav", language="xx")
    assert language.value.param == "language"


async def test_missing_and_invalid_fields(rest):
    async with httpx.AsyncClient(base_url=rest.http_url) as http:
        no_model = await http.post("/audio/transcriptions", files={"file": ("a.wav", b"x")})
        no_file = await http.post("/audio/transcriptions", data={"model": "whisper-1"})
        bad_format = await http.post(
            "/audio/transcriptions",
            data={"model": "whisper-1", "response_format": "docx"},
            files={"file": ("a.wav", (AUDIO / "hello_world.wav").read_bytes())},
        )
        no_input = await http.post("/audio/speech", json={"model": "tts-1", "voice": "alloy"})
        too_fast = await http.post("/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "a", "speed": 9})
    for response, param in [
        (no_model, "model"),
        (no_file, "file"),
        (bad_format, "response_format"),
        (no_input, "input"),
        (too_fast, "speed"),
    ]:
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert no_model.json()["error"]["code"] == "missing_required_parameter"


@pytest.mark.vocalis_settings(workers="stt")
async def test_speech_is_refused_without_a_tts_worker(stack):
    with pytest.raises(openai.InternalServerError) as refused:
        await client(stack).audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert refused.value.status_code == 503
    assert refused.value.code == "workers_unavailable"


async def test_a_client_that_leaves_mid_speech_has_its_job_stopped(rest):
    long_text = " ".join(["Ask not what your country can do for you, ask what you can do for your country."] * 8)
    async with client(rest).audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=long_text, response_format="pcm"
    ) as response:
        session_id = response.headers["x-request-id"]
        async for _first in response.iter_bytes():
            break  # and leave
    for _ in range(100):
        recorded = await read_session(rest.bus, session_id)
        bodies = [json.loads(entry.data) for entry in recorded.entries]
        if bodies[-1]["kind"] == "session.closed":
            break
        await asyncio.sleep(0.1)
    assert bodies[-1] == {**bodies[-1], "kind": "session.closed", "reason": "client"}
    await asyncio.sleep(1.0)  # the worker stops between chunks, and the clauses still queued are deleted
    recorded = await read_session(rest.bus, session_id)
    chunks = [body for body in map(json.loads, (e.data for e in recorded.entries)) if body["kind"] == "tts.audio"]
    spoken = {chunk["clause_index"] for chunk in chunks if chunk["last"]}
    assert chunks and len(spoken) < len(speech_clauses(long_text)) - 4  # 16 clauses: most never spoken
    metrics = (await httpx.AsyncClient().get(rest.http_url.removesuffix("/v1") + "/metrics")).text
    withdrawn = re.search(r'vocalis_jobs_total\{kind="tts",outcome="withdrawn"\} (\d+)', metrics)
    assert withdrawn and int(withdrawn.group(1)) >= 1  # the clauses not spoken yet


@pytest.mark.vocalis_settings(workers="llm,tts")
async def test_transcription_is_refused_without_an_stt_worker(stack):
    with pytest.raises(openai.InternalServerError) as refused:
        await client(stack).audio.transcriptions.create(model="whisper-1", file=AUDIO / "lecture_60s.wav")
    assert (refused.value.status_code, refused.value.code) == (503, "workers_unavailable")


@pytest.mark.vocalis_settings(api_key="the-key")
async def test_the_api_key_guards_the_rest_api(stack):
    with pytest.raises(openai.AuthenticationError):
        await client(stack).audio.transcriptions.create(model="whisper-1", file=AUDIO / "hello_world.wav")
    keyed = AsyncOpenAI(api_key="the-key", base_url=stack.http_url, max_retries=0)
    await _workers_alive(stack, ("stt",))
    heard = await keyed.audio.transcriptions.create(model="whisper-1", file=AUDIO / "hello_world.wav")
    assert words(heard.text) == "hello world"
