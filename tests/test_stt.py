"""The whisper transcriber: the trimmed encoder window, and word-timed decodes of a turn in progress; and how an
STT worker reads a job's audio from the log."""

import numpy as np
import soxr

from app.bus import Bus, encode
from domain import records as rec
from domain.audio_time import MODEL_RATE
from handlers.stt import TRIMMED_PADDING_FRAMES, Transcriber
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
    words, language = transcriber.words(jfk_16k(), "whisper-tiny.en")
    assert language == "en"
    assert word_error_rate(JFK, "".join(w for w, _, _ in words)) <= 0.15
    starts = [s for _, s, _ in words]
    assert starts == sorted(starts) and 0.0 <= starts[0] < 1.0 and 9.0 < words[-1][2] <= 11.1
    assert all(w.startswith(" ") for w, _, _ in words)


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
