"""Speech synthesis with the real Kokoro model: intelligibility (checked by whisper), voices, G.711 output, and the
TTS worker end to end on a real nats-server."""

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import jiwer
import msgspec
import numpy as np
import pytest
import soxr

from app import runner
from app.bus import MSG_ID, Bus, decode_record
from app.log_reader import read_entries
from app.settings import Settings
from domain import records as rec
from domain.jobs import SynthesizeJob
from handlers import tts
from handlers.input_audio.decode import g711_to_pcm16
from handlers.models import ChecksumMismatch
from handlers.stt import Transcriber
from handlers.tts import (
    CHUNK_SAMPLES,
    OPENAI_VOICES,
    SAMPLE_RATE,
    KokoroSynthesizer,
    UnknownVoice,
    encode_chunks,
    pcm16_to_alaw,
    pcm16_to_ulaw,
)
from handlers.tts_worker import TtsWorker
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL
from tests.realtime_client import words

TEXT = "Hello world, this is a test."
BUNDLED = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]


@pytest.fixture(scope="session")
def synthesizer() -> KokoroSynthesizer:
    return KokoroSynthesizer(MODEL_CACHE)


@pytest.fixture(scope="session")
def hello(synthesizer: KokoroSynthesizer) -> list[bytes]:
    """TEXT in the default voice, as 24 kHz pcm16 chunks."""
    list(synthesizer.synthesize("Warm up.", None))
    started = time.perf_counter()
    chunks = list(synthesizer.synthesize(TEXT, None))
    seconds = sum(len(c) for c in chunks) / 2 / SAMPLE_RATE
    print(f"kokoro: {seconds:.2f} s of audio in {time.perf_counter() - started:.2f} s")
    return chunks


def pcm(chunks: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(chunks), dtype="<i2")


def word_errors(reference: str, hypothesis: str) -> int:
    output = jiwer.process_words(words(reference), words(hypothesis))
    return output.substitutions + output.deletions + output.insertions


@pytest.fixture(scope="module")
def listener() -> Transcriber:
    """Whisper as its authors run it (the full 30 s window): this judges Kokoro's speech, not Vocalis' decoding.
    On a clip this short, tiny.en with the trimmed window sometimes repeats the sentence."""
    settings = Settings(model_dir=MODEL_CACHE, stt_model=TEST_STT_MODEL, stt_window="full")
    return runner.transcriber(settings)


def test_default_voice_speaks_the_text(hello: list[bytes], listener: Transcriber) -> None:
    assert hello and all(0 < len(c) <= 2 * CHUNK_SAMPLES and len(c) % 2 == 0 for c in hello)
    assert all(len(c) == 2 * CHUNK_SAMPLES for c in hello[:-1])
    samples = pcm(hello)
    assert 0.8 <= len(samples) / SAMPLE_RATE <= 4.0
    assert np.abs(samples).max() > 3000  # speech, not silence
    audio16k = soxr.resample(samples.astype(np.float32) / 32768.0, SAMPLE_RATE, 16_000)
    heard = "".join(listener.transcribe(audio16k, TEST_STT_MODEL, language="en"))
    print(f"whisper heard: {heard!r}")
    assert word_errors(TEXT, heard) <= 1, heard


def test_voice_names(synthesizer: KokoroSynthesizer) -> None:
    assert synthesizer.voices.bundled == BUNDLED
    assert synthesizer.voice(None) == synthesizer.voice("") == "jm_kumo"
    assert set(OPENAI_VOICES) == {
        "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"
    }  # fmt: skip
    for name, bundled in OPENAI_VOICES.items():
        assert synthesizer.voice(name) == bundled in BUNDLED
        assert synthesizer.voice(name.upper()) == bundled
    assert synthesizer.voice("alloy") == synthesizer.voice("cedar") == "jm_kumo"
    assert synthesizer.voice("shimmer") == synthesizer.voice("marin") == "jf_nezumi"
    for name in BUNDLED:
        assert synthesizer.voice(name) == name


def test_unknown_voice_says_what_exists(synthesizer: KokoroSynthesizer) -> None:
    with pytest.raises(UnknownVoice) as raised:
        synthesizer.voice("af_heart")
    message = str(raised.value)
    assert "af_heart" in message
    assert all(name in message for name in [*BUNDLED, *OPENAI_VOICES])
    with pytest.raises(UnknownVoice):
        next(synthesizer.synthesize(TEXT, "nova"))


def test_other_voices_and_speed(synthesizer: KokoroSynthesizer, hello: list[bytes]) -> None:
    faster = pcm(list(synthesizer.synthesize(TEXT, "alloy", speed=1.5)))
    assert 0.5 * len(pcm(hello)) < len(faster) < 0.85 * len(pcm(hello))
    female = pcm(list(synthesizer.synthesize(TEXT, "shimmer")))
    assert 0.8 <= len(female) / SAMPLE_RATE <= 4.0
    assert list(synthesizer.synthesize("  ", None)) == []
    slowest = pcm(list(synthesizer.synthesize("Okay.", None, speed=0.25)))  # OpenAI's minimum; Kokoro's is 0.5
    assert 0.3 < len(slowest) / SAMPLE_RATE < 3.0


@pytest.fixture(scope="module")
def audioop() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop")


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


@pytest.mark.parametrize(("encoder", "audio_format", "reference"), [
    (pcm16_to_ulaw, "g711_ulaw", "lin2ulaw"),
    (pcm16_to_alaw, "g711_alaw", "lin2alaw"),
])  # fmt: skip
def test_g711_encoders(encoder: Callable[[np.ndarray], np.ndarray], audio_format: str, reference: str, audioop) -> None:
    encoded = encoder(ALL_INT16)
    assert encoded.dtype == np.uint8
    assert encoded.tobytes() == getattr(audioop, reference)(ALL_INT16.astype("<i2").tobytes(), 2)
    # Every code decodes to a value that encodes back to it (µ-law's "negative zero", 0x7f, encodes as 0xff).
    codes = np.arange(256, dtype=np.uint8)
    roundtrip = encoder(g711_to_pcm16(codes.tobytes(), audio_format))  # type: ignore[arg-type]
    expected = np.where(codes == 0x7F, 0xFF, codes) if audio_format == "g711_ulaw" else codes
    assert (roundtrip == expected).all()
    # Decoding an encoded sample lands within half a quantisation step of it.
    error = np.abs(g711_to_pcm16(encoded.tobytes(), audio_format).astype(np.int32) - ALL_INT16)  # type: ignore[arg-type]
    assert (error <= np.maximum(np.abs(ALL_INT16.astype(np.int32)) // 16, 16)).all()


@pytest.mark.parametrize("audio_format", ["g711_ulaw", "g711_alaw"])
def test_g711_output_decodes_close_to_the_pcm(hello: list[bytes], audio_format: str) -> None:
    encoded = list(encode_chunks(iter(hello), audio_format))  # type: ignore[arg-type]
    assert all(0 < len(c) <= 800 for c in encoded) and all(len(c) == 800 for c in encoded[:-1])
    decoded = g711_to_pcm16(b"".join(encoded), audio_format).astype(np.float32) / 32768.0  # type: ignore[arg-type]
    reference = soxr.resample(pcm(hello).astype(np.float32) / 32768.0, SAMPLE_RATE, 8_000)
    assert abs(len(decoded) - len(reference)) <= 1
    n = min(len(decoded), len(reference))
    assert np.corrcoef(decoded[:n], reference[:n])[0, 1] > 0.99
    noise = np.sqrt(np.mean((decoded[:n] - reference[:n]) ** 2)) / np.sqrt(np.mean(reference[:n] ** 2))
    assert noise < 0.1  # G.711 is about 35 dB SNR


def test_model_checksum_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "MODEL_SHA256", "0" * 64)
    with pytest.raises(ChecksumMismatch):
        tts.model_path(tmp_path)
    assert not list((tmp_path / "kokoro").iterdir())  # nothing half-written is left behind


# The worker on a real nats-server.


@pytest.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    bus = await runner.connect(Settings(data_dir=tmp_path, model_dir=MODEL_CACHE), nats_url, "tts-test")
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture
async def worker(bus: Bus, synthesizer: KokoroSynthesizer) -> AsyncIterator[TtsWorker]:
    worker = TtsWorker(bus, synthesizer, "tts-test-worker")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 10)
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def submit(bus: Bus, job: SynthesizeJob) -> None:
    await bus.js.publish(
        bus.subjects.jobs("tts", job.session_id), msgspec.json.encode(job), headers={MSG_ID: job.job_id}
    )


async def records_until(bus: Bus, session_id: str, done: Callable[[list[rec.Record]], bool]) -> list[rec.Record]:
    subject = bus.subjects.session_input(session_id, "tts")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = [decode_record(e.data) for e in await read_entries(bus, subject)]
        if done(records):
            return records
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out; records so far: {records}")


async def jobs_left(bus: Bus) -> tuple[int, int, int]:
    info = await bus.js.consumer_info(bus.subjects.jobs_stream, "tts")
    stream = await bus.js.stream_info(bus.subjects.jobs_stream)
    return info.num_pending, info.num_ack_pending, stream.state.messages


def finished(job_ids: set[str]) -> Callable[[list[rec.Record]], bool]:
    def check(records: list[rec.Record]) -> bool:
        ended = {r.job_id for r in records if isinstance(r, rec.SpeechFailed | rec.SpeechSynthesized) and _ends(r)}
        return job_ids <= ended

    return check


def _ends(record: rec.Record) -> bool:
    return isinstance(record, rec.SpeechFailed) or (isinstance(record, rec.SpeechSynthesized) and record.last)


async def test_worker_publishes_chunks_then_last(bus: Bus, worker: TtsWorker) -> None:
    jobs = [
        SynthesizeJob("job-pcm", "sess1", "resp1", 0, TEXT, "alloy"),
        SynthesizeJob("job-ulaw", "sess1", "resp1", 1, "Goodbye.", "marin", audio_format="g711_ulaw"),
        SynthesizeJob("job-bad", "sess1", "resp1", 2, TEXT, "nova"),
    ]
    for job in jobs:
        await submit(bus, job)
    records = await records_until(bus, "sess1", finished({j.job_id for j in jobs}))

    pcm_chunks = [r for r in records if isinstance(r, rec.SpeechSynthesized) and r.job_id == "job-pcm"]
    assert [c.chunk_index for c in pcm_chunks] == list(range(len(pcm_chunks)))
    assert [c.last for c in pcm_chunks] == [False] * (len(pcm_chunks) - 1) + [True]
    assert all(c.response_id == "resp1" and c.clause_index == 0 and c.worker == "tts-test-worker" for c in pcm_chunks)
    assert all(0 < len(c.audio) <= 2 * CHUNK_SAMPLES for c in pcm_chunks)
    assert 0.8 <= sum(len(c.audio) for c in pcm_chunks) / 2 / SAMPLE_RATE <= 4.0

    ulaw = [r for r in records if isinstance(r, rec.SpeechSynthesized) and r.job_id == "job-ulaw"]
    assert ulaw[-1].last and all(0 < len(c.audio) <= 800 for c in ulaw) and ulaw[0].clause_index == 1

    failed = [r for r in records if r.job_id == "job-bad"]  # type: ignore[union-attr]
    assert len(failed) == 1 and isinstance(failed[0], rec.SpeechFailed)
    assert "nova" in failed[0].message and "jm_kumo" in failed[0].message

    entries = await read_entries(bus, bus.subjects.session_input("sess1", "tts"))
    assert len(entries) == len(records)
    assert await jobs_left(bus) == (0, 0, 0)  # every job acknowledged (a work queue drops acked messages)

    # A job delivered again records nothing twice: its chunks' message ids repeat.
    await bus.js.publish(
        bus.subjects.jobs("tts", jobs[0].session_id), msgspec.json.encode(jobs[0]), headers={MSG_ID: "job-pcm.again"}
    )
    await wait_for_jobs(bus)
    assert len(await read_entries(bus, bus.subjects.session_input("sess1", "tts"))) == len(records)


async def wait_for_jobs(bus: Bus) -> None:
    deadline = time.monotonic() + 20
    while await jobs_left(bus) != (0, 0, 0):
        assert time.monotonic() < deadline, "jobs were not acknowledged"
        await asyncio.sleep(0.1)


async def test_cancelled_response_publishes_nothing(bus: Bus, worker: TtsWorker) -> None:
    await bus.nc.publish(bus.subjects.cancel("resp-cancelled"), b"")
    await bus.nc.flush()
    deadline = time.monotonic() + 5
    cancelled = SynthesizeJob("job-c", "sess2", "resp-cancelled", 0, TEXT, "alloy")
    while worker.unwanted.why(cancelled) != "cancelled" and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert worker.unwanted.why(cancelled) == "cancelled"

    await submit(bus, cancelled)
    await submit(bus, SynthesizeJob("job-ok", "sess2", "resp-ok", 0, "Okay.", "alloy"))
    records = await records_until(bus, "sess2", finished({"job-ok"}))
    assert records and all(r.job_id == "job-ok" for r in records)  # type: ignore[union-attr]
    assert await jobs_left(bus) == (0, 0, 0)


class Paced:
    """The real synthesizer, its chunks handed out no faster than one per `delay` seconds (as if on a slow CPU)."""

    def __init__(self, synthesizer: KokoroSynthesizer, delay: float) -> None:
        self.synthesizer = synthesizer
        self.delay = delay

    def voice(self, name: str | None) -> str:
        return self.synthesizer.voice(name)

    def synthesize(self, text: str, voice: str | None, speed: float = 1.0) -> Iterator[bytes]:
        for chunk in self.synthesizer.synthesize(text, voice, speed):
            time.sleep(self.delay)
            yield chunk


async def test_cancel_midway_stops_the_clause(bus: Bus, synthesizer: KokoroSynthesizer) -> None:
    worker = TtsWorker(bus, Paced(synthesizer, 0.05), "paced-worker")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await submit(bus, SynthesizeJob("job-long", "sess3", "resp-long", 0, TEXT, "alloy"))
    await records_until(bus, "sess3", lambda records: len(records) > 0)
    await bus.nc.publish(bus.subjects.cancel("resp-long"), b"")
    await wait_for_jobs(bus)
    stop.set()
    await asyncio.wait_for(task, 10)
    records = [decode_record(e.data) for e in await read_entries(bus, bus.subjects.session_input("sess3", "tts"))]
    chunks = [r for r in records if isinstance(r, rec.SpeechSynthesized)]
    assert chunks and len(chunks) == len(records)
    assert not any(c.last for c in chunks)
    assert len(chunks) < 10  # the whole clause is about 17 chunks
