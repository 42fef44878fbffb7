"""Client audio to the 16 kHz stream the models hear: G.711 decoding and a streaming polyphase resampler.

One `InputAudio` per session keeps the resampler's filter state across appends, so chunk boundaries leave no
clicks or drift (per-chunk interpolation, as Speaches does, gets both wrong).
"""

import io
import itertools
from collections.abc import Iterator

import av
import numpy as np
import soxr

from domain.audio_time import BYTES_PER_SAMPLE, INPUT_RATES, MODEL_RATE, ticks_for_samples
from domain.session_config import AudioFormat


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_G711 = {"g711_ulaw": _ulaw_table(), "g711_alaw": _alaw_table()}


def g711_to_pcm16(payload: bytes, audio_format: AudioFormat) -> np.ndarray:
    return _G711[audio_format][np.frombuffer(payload, dtype=np.uint8)]


class InvalidAudio(ValueError):
    pass


class InputAudio:
    def __init__(self, audio_format: AudioFormat = "pcm16") -> None:
        self.format = audio_format
        self._resampler = soxr.ResampleStream(INPUT_RATES[audio_format], MODEL_RATE, 1, dtype="float32", quality="HQ")

    def decode(self, payload: bytes, max_seconds: int) -> list[tuple[int, np.ndarray]]:
        """One append's bytes as pieces of at most `max_seconds`: (length in session ticks, float32 samples
        at 16 kHz). Nothing is decoded from a payload that is invalid as a whole."""
        width = BYTES_PER_SAMPLE[self.format]
        if len(payload) % width:
            raise InvalidAudio(f"pcm16 audio must have an even number of bytes, got {len(payload)}.")
        step = max_seconds * INPUT_RATES[self.format] * width
        return [self._decode(payload[offset : offset + step]) for offset in range(0, len(payload), step)]

    def _decode(self, payload: bytes) -> tuple[int, np.ndarray]:
        samples = np.frombuffer(payload, dtype="<i2") if self.format == "pcm16" else g711_to_pcm16(payload, self.format)
        ticks = ticks_for_samples(len(samples), INPUT_RATES[self.format])
        resampled = self._resampler.resample_chunk(samples.astype(np.float32) / 32768.0)
        return ticks, resampled


def to_pcm16(samples: np.ndarray) -> bytes:
    pcm: bytes = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    return pcm


def decode_file(data: bytes, max_seconds: float) -> bytes:
    """An uploaded audio file (wav, mp3, Ogg/Opus, FLAC, WebM, M4A: whatever FFmpeg reads) as 16 kHz mono pcm16, as
    faster-whisper decodes a file (PyAV, its first audio stream, frames FFmpeg cannot decode skipped), but into pcm16
    as it goes and no further than `max_seconds`: a small file of a low bit rate holds hours. InvalidAudio if it
    holds no audio FFmpeg can read, or more than that."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=MODEL_RATE)
    limit = int(max_seconds * MODEL_RATE) * 2
    pcm = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidAudio("The file has no audio stream.")
            frames = _decodable(container.decode(container.streams.audio[0]))
            for frame in itertools.chain(frames, [None]):  # None: the resampler's flush
                if frame is not None:
                    frame.pts = None  # a file's own timestamps may jump; the resampler needs none
                for resampled in resampler.resample(frame):
                    pcm += resampled.to_ndarray().tobytes()
                if len(pcm) > limit:
                    raise InvalidAudio(f"The file holds more than {max_seconds:.0f} s of audio, the limit.")
    except av.error.FFmpegError as error:
        raise InvalidAudio(f"The file could not be decoded as audio ({error.strerror or error}).") from None
    if not pcm:
        raise InvalidAudio("The file holds no audio that could be decoded.")
    return bytes(pcm)


def _decodable(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    """The frames FFmpeg could decode, the others skipped (a damaged frame in a long file costs that frame only)."""
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue
