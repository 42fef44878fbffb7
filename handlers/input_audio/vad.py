"""Silero VAD (ONNX): speech probabilities for each 32 ms frame of a 16 kHz stream.

The model is loaded once and shared; each audio stream keeps its own recurrent state, 64-sample context and
the tail of an incomplete frame, so every frame is scored exactly once.
"""

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort

from domain.audio_time import MODEL_RATE, VAD_FRAME_SAMPLES
from handlers.models import checked

SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
_CONTEXT = 64


def silero_model_path() -> Path:
    # find_spec does not execute silero_vad/__init__.py, which would import torch.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed: pip install --no-deps -r requirements-nodeps.txt")
    return Path(spec.submodule_search_locations[0]) / "data" / "silero_vad.onnx"


class SileroVad:
    def __init__(self, path: Path | None = None) -> None:
        path = path or silero_model_path()
        checked(path, SILERO_SHA256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        self._rate = np.array(MODEL_RATE, dtype=np.int64)

    def stream(self) -> "VadStream":
        return VadStream(self)

    def score(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        probability, new_state = self._session.run(None, {"input": window, "state": state, "sr": self._rate})
        return float(probability[0, 0]), new_state


class VadStream:
    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> list[float]:
        """Probabilities of the frames that `samples` complete, in order."""
        pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        probabilities = []
        offset = 0
        while offset + VAD_FRAME_SAMPLES <= len(pending):
            frame = pending[offset : offset + VAD_FRAME_SAMPLES]
            window = np.concatenate([self._context, frame])[np.newaxis, :]
            probability, self._state = self._vad.score(window, self._state)
            probabilities.append(round(probability, 4))
            self._context = frame[-_CONTEXT:]
            offset += VAD_FRAME_SAMPLES
        self._pending = pending[offset:]
        return probabilities
