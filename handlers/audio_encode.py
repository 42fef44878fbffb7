"""Speech to the audio formats of OpenAI's `/v1/audio/speech`, encoded as it streams (PyAV, the FFmpeg that
faster-whisper already brings).

Kokoro speaks 24 kHz mono pcm16; each format keeps that rate (Opus takes 24 kHz as it is). `pcm` is the raw samples,
as OpenAI sends them; `wav` is those samples behind a header whose sizes say "unknown" (0xFFFFFFFF), as a streamed
WAV must (readers take the data to the end of the file); the others are FFmpeg's encoders in the container OpenAI
uses: mp3, Ogg Opus, AAC in ADTS, FLAC. Encoders buffer a little (a frame of the codec), so the bytes of a chunk come
out with a later one or at `finish`.
"""

import struct

import av
import numpy as np
from av.audio.stream import AudioStream

from domain.rest_audio import SpeechFormat
from handlers.tts import SAMPLE_RATE

MEDIA_TYPES: dict[SpeechFormat, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# (container, codec, bit rate) of each format FFmpeg encodes
_CODECS: dict[SpeechFormat, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", 64_000),
    "opus": ("ogg", "libopus", 32_000),
    "aac": ("adts", "aac", 64_000),
    "flac": ("flac", "flac", None),
}
_STREAMING_SIZE = 0xFFFFFFFF


def wav_header(rate: int = SAMPLE_RATE) -> bytes:
    """A mono pcm16 WAV header for a stream of unknown length."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", _STREAMING_SIZE)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + (struct.pack("<I", _STREAMING_SIZE))
    )


class _Sink:
    """Where the muxer writes: the bytes wait here until the caller takes them (no seeking: a stream)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class SpeechEncoder:
    """24 kHz pcm16 chunks in, the format's bytes out, chunk by chunk; `finish` flushes the encoder."""

    def __init__(self, audio_format: SpeechFormat) -> None:
        self.format = audio_format
        self._header = wav_header() if audio_format == "wav" else b""
        self._container: av.container.OutputContainer | None = None
        if audio_format in _CODECS:
            container, codec, bit_rate = _CODECS[audio_format]
            self._sink = _Sink()
            self._container = av.open(self._sink, mode="w", format=container)
            stream = self._container.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
            assert isinstance(stream, AudioStream)
            self._stream = stream
            if bit_rate is not None:
                self._stream.bit_rate = bit_rate
            self._resampler = av.AudioResampler(
                format=self._stream.codec_context.format, layout="mono", rate=SAMPLE_RATE
            )
            self._samples = 0

    def encode(self, pcm: bytes) -> bytes:
        header, self._header = self._header, b""
        if self._container is None:
            return header + pcm
        if not pcm:
            return b""
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._samples
        self._samples += frame.samples
        for resampled in self._resampler.resample(frame):
            self._container.mux(self._stream.encode(resampled))
        return self._sink.take()

    def finish(self) -> bytes:
        header, self._header = self._header, b""
        if self._container is None:
            return header
        for resampled in self._resampler.resample(None):
            self._container.mux(self._stream.encode(resampled))
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return self._sink.take()
