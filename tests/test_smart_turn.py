"""Smart Turn v3 at the edge: its input features, its judgement of real speech, and when the edge asks it."""

import hashlib
import shutil

import numpy as np
import pytest
import soxr

from domain.session_config import TurnDetection
from handlers.input_audio.smart_turn import WINDOW_SAMPLES, SmartTurn, features, smart_turn_model_path
from handlers.input_audio.turn_end import TurnEndStream
from handlers.input_audio.vad import SileroVad
from tests.realtime_client import pcm24k


def speech(name: str) -> np.ndarray:
    return soxr.resample(np.frombuffer(pcm24k(name), dtype="<i2").astype(np.float32) / 32768, 24000, 16000)


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn()


def test_features_are_the_ones_the_model_was_trained_with():
    # pipecat ships a numpy port of transformers' WhisperFeatureExtractor(chunk_length=8) beside the model.
    reference = pytest.importorskip("pipecat.audio.turn.smart_turn._whisper_features")
    audio = speech("jfk.wav")
    padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    padded[-len(audio[-WINDOW_SAMPLES:]) :] = audio[-WINDOW_SAMPLES:]
    expected = reference.compute_whisper_log_mel_features(padded, do_normalize=True)
    assert features(audio).shape == expected.shape == (80, 800)
    assert np.abs(features(audio) - expected).max() < 1e-4
    short = speech("hello_world.wav")  # padded with silence in front, as the model expects
    padded = np.concatenate([np.zeros(WINDOW_SAMPLES - len(short), dtype=np.float32), short])
    assert np.abs(features(short) - reference.compute_whisper_log_mel_features(padded)).max() < 1e-4


def test_a_finished_phrase_scores_as_complete_and_a_clause_cut_mid_sentence_does_not(model):
    jfk = speech("jfk.wav")
    pause = np.zeros(int(0.16 * 16000), dtype=np.float32)
    assert model.complete(np.concatenate([speech("hello_world.wav"), pause])) > 0.7
    # "...ask not what your country can do for you," then JFK's pause: the sentence goes on.
    assert model.complete(np.concatenate([jfk[: int(5.0 * 16000)], pause])) < 0.3


def test_a_model_file_that_is_not_the_pinned_one_is_refused(tmp_path):
    copy = tmp_path / "smart-turn.onnx"
    shutil.copy(smart_turn_model_path(), copy)
    with copy.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match=hashlib.sha256(copy.read_bytes()).hexdigest()):
        SmartTurn(copy)


def test_the_edge_scores_each_pause_of_a_semantic_turn_once_and_nothing_for_server_vad(model):
    vad = SileroVad()
    audio = np.concatenate([speech("hello_world.wav"), np.zeros(32000, dtype=np.float32)])
    semantic = TurnDetection(type="semantic_vad", eagerness="low")  # low: the turn lasts through its pauses
    scored: list[tuple[int, float]] = []
    frames = 0
    stream, listener = vad.stream(), TurnEndStream(model)
    for start in range(0, len(audio), 1600):  # 100 ms appends
        chunk = audio[start : start + 1600]
        probabilities = stream.feed(chunk)
        scored += [(frames + index, p) for index, p in listener.feed(chunk, probabilities, semantic)]
        frames += len(probabilities)
    assert 1 <= len(scored) <= 3 and len({frame for frame, _ in scored}) == len(scored)
    # A score is the model's judgement of the turn so far, up to the end of the scored frame.
    first_frame, first = scored[0]
    assert first == pytest.approx(model.complete(audio[: (first_frame + 1) * 512]), abs=0.05)
    stream, listener = vad.stream(), TurnEndStream(model)
    server = [listener.feed(c, stream.feed(c), TurnDetection()) for c in np.array_split(audio, 20)]
    assert not any(server)
