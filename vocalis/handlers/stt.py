"""faster-whisper behind a small interface: audio in, transcript pieces out, lazily.

Models stay loaded for the life of the worker: one instance per model name, loaded on first use.
"""

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import structlog
from faster_whisper import WhisperModel

from vocalis.handlers.models import ModelRegistry

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SttOptions:
    device: str = "auto"
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: every core
    beam_size: int = 1


class Transcriber:
    def __init__(self, registry: ModelRegistry, options: SttOptions = SttOptions()) -> None:
        self._registry = registry
        self._options = options
        self._models: dict[str, WhisperModel] = {}
        self._lock = threading.Lock()

    def model(self, name: str) -> WhisperModel:
        canonical = self._registry.canonical(name)
        with self._lock:
            if canonical not in self._models:
                path = self._registry.path(canonical)
                log.info("stt.model.loading", model=canonical, path=str(path))
                self._models[canonical] = WhisperModel(
                    str(path),
                    device=self._options.device,
                    compute_type=self._options.compute_type,
                    cpu_threads=self._options.cpu_threads or os.cpu_count() or 1,
                )
            return self._models[canonical]

    def transcribe(
        self, audio: np.ndarray, model: str, language: str | None = None, prompt: str | None = None
    ) -> Iterator[str]:
        """The transcript of 16 kHz float32 `audio` as pieces whose concatenation is the whole transcript."""
        segments, _info = self.model(model).transcribe(
            audio,
            language=language,
            initial_prompt=prompt,
            beam_size=self._options.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        first = True
        for segment in segments:
            text = segment.text.lstrip() if first else segment.text
            if text:
                first = False
                yield text
