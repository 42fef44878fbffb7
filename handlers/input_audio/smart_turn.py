"""Smart Turn v3 (ONNX, BSD-2): the probability that a speaker has finished their turn, from how the turn sounds.

The model is a whisper-tiny encoder with a classifier on top. It hears the last 8 s of the turn (shorter turns are
padded with silence in front) as whisper's 80-bin log-mel features of the waveform normalised to zero mean and unit
variance, and answers with one sigmoid probability. Its file ships inside the `pipecat-ai` wheel, installed with
`--no-deps`; only the file is used, checked by sha256 like silero's.
"""

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor

from domain.audio_time import MODEL_RATE
from handlers.models import checked

SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * MODEL_RATE
_FEATURES = FeatureExtractor(feature_size=80, chunk_length=WINDOW_SECONDS)


def smart_turn_model_path() -> Path:
    # find_spec does not execute pipecat/__init__.py (nor import any of pipecat's dependencies).
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pipecat-ai is not installed: pip install --no-deps -r requirements-nodeps.txt")
    return Path(spec.submodule_search_locations[0]) / "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"


def features(audio: np.ndarray) -> np.ndarray:
    """The model's input for 16 kHz float32 `audio`: shape (80, 800), from its last 8 s, silence in front."""
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    tail = audio[-WINDOW_SAMPLES:]
    window[WINDOW_SAMPLES - len(tail) :] = tail
    # As the model was trained (transformers' WhisperFeatureExtractor with do_normalize): the whole padded window.
    window = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
    # faster-whisper's extractor is whisper's (reflect-padded STFT, Slaney mel, log10 clipped 8 below the peak);
    # without its extra padding, the 801 frames of 8 s lose the last one, as the reference does.
    return np.asarray(_FEATURES(window, padding=0), dtype=np.float32)


class SmartTurn:
    def __init__(self, path: Path | None = None) -> None:
        path = path or smart_turn_model_path()
        checked(path, SMART_TURN_SHA256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one scoring per pause: short, and beside the other sessions' work
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def complete(self, audio: np.ndarray) -> float:
        """The probability that the turn whose 16 kHz float32 audio ends `audio` is complete."""
        (probability,) = self._session.run(None, {"input_features": features(audio)[np.newaxis]})
        return float(np.asarray(probability).reshape(-1)[0])
