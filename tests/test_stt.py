"""The whisper transcriber: the trimmed encoder window, and word-timed decodes of a turn in progress."""

import numpy as np
import soxr

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
