"""Audio-time bookkeeping.

Session audio time is counted in ticks of 1/48 000 s: every supported input rate (8, 16, 24 kHz) is a whole
number of ticks per sample, so time stays exact integers whatever the client sends. Turn boundaries and the
audio that workers read are positions in the 16 kHz stream the edge derives from the input (VAD and whisper
both run at 16 kHz).
"""

TICKS_PER_SECOND = 48_000
TICKS_PER_MS = TICKS_PER_SECOND // 1000
MODEL_RATE = 16_000
SAMPLES_PER_MS = MODEL_RATE // 1000
VAD_FRAME_SAMPLES = 512  # silero's window at 16 kHz: 32 ms

INPUT_RATES = {"pcm16": 24_000, "g711_ulaw": 8_000, "g711_alaw": 8_000}
BYTES_PER_SAMPLE = {"pcm16": 2, "g711_ulaw": 1, "g711_alaw": 1}


def ticks_for_samples(samples: int, rate: int) -> int:
    return samples * (TICKS_PER_SECOND // rate)


def ms_from_ticks(ticks: int) -> int:
    return ticks // TICKS_PER_MS


def ticks_for_bytes(size: int, audio_format: str) -> int:
    """The length of `size` bytes of audio in `audio_format` (pcm16 24 kHz or G.711 8 kHz)."""
    return ticks_for_samples(size // BYTES_PER_SAMPLE[audio_format], INPUT_RATES[audio_format])


def ms_covering_ticks(ticks: int) -> int:
    """Whole milliseconds that cover `ticks`: what a client that counts the bytes it played may say."""
    return -(-ticks // TICKS_PER_MS)


def ms_from_samples(samples: int) -> int:
    return samples // SAMPLES_PER_MS


def samples_from_ms(ms: int) -> int:
    return ms * SAMPLES_PER_MS
