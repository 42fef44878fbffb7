"""The whisper transcriber: the trimmed encoder window, and word-timed decodes of a turn in progress, alone and
batched across sessions; and how an STT worker reads a job's audio from the log."""

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import soxr

from app import runner
from app.bus import Bus, encode
from app.settings import Settings
from domain import records as rec
from domain.audio_time import MODEL_RATE
from domain.jobs import TranscribeJob
from handlers.stt import TRIMMED_PADDING_FRAMES, Transcriber, Words, WordsRequest
from handlers.stt_batch import WordsBatcher
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL
from tests.realtime_client import JFK, pcm24k, word_error_rate


def jfk_16k() -> np.ndarray:
    audio = np.frombuffer(pcm24k("jfk.wav"), dtype="<i2").astype(np.float32) / 32768
    return soxr.resample(audio, 24_000, MODEL_RATE)


def test_the_encoder_gets_the_audio_and_a_little_padding_not_the_whole_window(transcriber: Transcriber):
    model = transcriber.model("whisper-tiny.en")
    features = model.feature_extractor(jfk_16k())[:, :-1]  # 11 s: 1100 frames of content
    window = np.pad(features, ((0, 0), (0, 3000 - features.shape[-1])))  # as faster-whisper pads it
    encoded = model.encode(window)
    frames = -(-(features.shape[-1] + TRIMMED_PADDING_FRAMES) // 100) * 100
    assert encoded.shape[1] == frames // 2 < 1500  # the encoder halves the frames; 1500 for a full window


def test_words_come_with_their_times_in_the_audio(transcriber: Transcriber):
    ((words, language),) = transcriber.words([WordsRequest(jfk_16k())], "whisper-tiny.en")
    assert language == "en"
    assert word_error_rate(JFK, "".join(w for w, _, _ in words)) <= 0.15
    starts = [s for _, s, _ in words]
    assert starts == sorted(starts) and 0.0 <= starts[0] < 1.0 and 9.0 < words[-1][2] <= 11.1
    assert all(w.startswith(" ") for w, _, _ in words)


def test_words_decoded_together_are_each_request_s_own(transcriber: Transcriber):
    jfk = jfk_16k()
    requests = [  # prompts of different lengths: whisper generates them apart, within the one call
        WordsRequest(jfk[: 4 * MODEL_RATE], prompt="A speech."),
        WordsRequest(jfk),
        WordsRequest(np.zeros(2 * MODEL_RATE, np.float32)),
    ]
    together = transcriber.words(requests, "whisper-tiny.en")
    alone = [transcriber.words([request], "whisper-tiny.en")[0] for request in requests]
    for request, (words, language), (words_alone, _) in zip(requests, together, alone, strict=True):
        assert language == "en"
        text = "".join(w for w, _, _ in words)
        assert word_error_rate("".join(w for w, _, _ in words_alone), text) <= 0.1
        assert all(0 <= start <= end <= len(request.audio) / MODEL_RATE + 0.1 for _, start, end in words)
    assert word_error_rate(JFK, "".join(w for w, _, _ in together[1][0])) <= 0.15
    assert not any(text.strip(" .") for text, _, _ in together[2][0])  # silence: no words, whatever its neighbours


class CountingBatches(Transcriber):
    """The real transcriber, noting each batch it is given (as the lengths of its requests' audio)."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.__dict__.update(transcriber.__dict__)
        self.batches: list[list[int]] = []

    def words(self, requests: Sequence[WordsRequest], model: str) -> list[tuple[Words, str]]:
        self.batches.append([len(request.audio) for request in requests])
        return super().words(requests, model)


async def test_waiting_decodes_form_the_next_batch_due_transcripts_apart_and_first(transcriber: Transcriber):
    counting = CountingBatches(transcriber)
    batcher = WordsBatcher(counting, size=2, wanted=lambda job: job.job_id != "expired")
    jfk = jfk_16k()

    def decode(job_id: str, seconds: float, partial: bool = True) -> "asyncio.Task[object]":
        samples = round(seconds * MODEL_RATE)
        job = TranscribeJob(job_id, "sess", "item", 1, 1, 0, 0, samples, "whisper-tiny.en", words=True, partial=partial)
        return asyncio.create_task(batcher.words(job, jfk[:samples]))

    first = decode("first", 3.0)  # finds the model idle: decoded alone, at once
    await asyncio.sleep(0)
    waiting = [
        decode("partial", 4.0),
        decode("closing", 5.0, partial=False),
        decode("expired", 6.0),
        abandoned := decode("abandoned", 8.0),  # its job's task is cancelled (its worker stopping) before its turn
        decode("last", 7.0),
    ]
    await asyncio.sleep(0)
    abandoned.cancel()
    waiting.remove(abandoned)
    results = await asyncio.wait_for(asyncio.gather(first, *waiting), 60)
    assert counting.batches == [[3 * MODEL_RATE], [5 * MODEL_RATE], [4 * MODEL_RATE, 7 * MODEL_RATE]]
    assert results[3] is None  # no longer wanted when its batch was formed: never decoded
    assert all(result is not None and result[0] for i, result in enumerate(results) if i != 3)


class TimedCalls(Transcriber):
    """The real transcriber, noting when each decode call began and ended (by the job's audio length)."""

    def __init__(self, transcriber: Transcriber) -> None:
        self.__dict__.update(transcriber.__dict__)
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}

    def words(self, requests: Sequence[WordsRequest], model: str) -> list[tuple[Words, str]]:
        (request,) = requests
        self.began[len(request.audio)] = time.perf_counter()
        try:
            return super().words(requests, model)
        finally:
            self.ended[len(request.audio)] = time.perf_counter()


async def test_with_two_lanes_partial_decodes_take_both_and_a_transcript_due_goes_before_those_waiting():
    """A partial decode does not wait while a lane is free; a transcript that falls due takes the first lane freed,
    ahead of the partial decodes asked before it."""
    two_lanes = TimedCalls(runner.transcriber(Settings(model_dir=MODEL_CACHE, stt_model=TEST_STT_MODEL, stt_lanes=2)))
    batcher = WordsBatcher(two_lanes, size=1, wanted=lambda job: True, lanes=2)
    jfk = jfk_16k()
    long, other, waiting, short = 11 * MODEL_RATE, 5 * MODEL_RATE, 4 * MODEL_RATE, 3 * MODEL_RATE

    def decode(samples: int, partial: bool) -> "asyncio.Task[object]":
        job = TranscribeJob("j", "sess", "item", 1, 1, 0, 0, samples, TEST_STT_MODEL, words=True, partial=partial)
        return asyncio.create_task(batcher.words(job, jfk[:samples]))

    decodes = []
    for samples, partial in ((long, True), (other, True), (waiting, True), (short, False)):
        decodes.append(decode(samples, partial))
        await asyncio.sleep(0)
    results = await asyncio.wait_for(asyncio.gather(*decodes), 60)
    assert all(result is not None for result in results)
    assert two_lanes.began[other] < two_lanes.ended[long], "the second partial decode waited with a lane free"
    assert two_lanes.began[short] < two_lanes.began[waiting], "the transcript waited for an earlier partial decode"


async def test_a_job_s_audio_is_read_without_a_consumer(nats_url: str):
    bus = await Bus.connect(nats_url, "vocalis", "test")
    try:
        await bus.ensure_streams(max_age_s=3600, max_bytes=-1)
        s = bus.subjects
        audio: dict[int, rec.AudioReceived | rec.ItemAudioReceived] = {}
        for i in range(30):  # audio, another session's audio, a result and an item's own audio, interleaved
            record = rec.AudioReceived(at_ms=i, ticks=4800, pcm16k=bytes([i]) * 3200, speech_probs=(0.5,) * 3)
            audio[(await bus.publish(s.session_input("sess_a", "audio"), encode(record), f"a{i}")).seq] = record
            await bus.publish(s.session_input("sess_b", "audio"), encode(record), f"b{i}")
            await bus.publish(s.session_input("sess_a", "stt"), b'{"kind": "stt.failed"}', f"s{i}")
            if i == 10:
                item = rec.ItemAudioReceived(at_ms=i, pcm16k=b"item")
                audio[(await bus.publish(s.session_input("sess_a", "audio"), encode(item), "item")).seq] = item
        seqs = sorted(audio)
        assert await bus.read_audio("sess_a", seqs[5], seqs[20]) == [audio[seq] for seq in seqs[5:21]]
        assert await bus.read_audio("sess_a", seqs[11], seqs[11]) == [audio[seqs[11]]]  # the item's audio
        info = await bus.js.stream_info(s.sessions_stream)
        assert info.config.allow_direct and info.state.consumer_count == 0
    finally:
        await bus.close()
