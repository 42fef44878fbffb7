"""Server VAD turn detection from recorded speech probabilities, one 32 ms frame at a time.

A turn starts at the first frame at or above `threshold` (its start moved back by `prefix_padding_ms`, never
before `floor`, the end of the previous turn) and stops once `silence_duration_ms` has passed since the last
frame judged voice. While speaking, frames down to `threshold - 0.15` (at least 0.01) still count as voice
(silero's own hysteresis), so soft syllables do not split a turn.
"""

from msgspec import Struct

from domain.audio_time import VAD_FRAME_SAMPLES, samples_from_ms
from domain.session_config import TurnDetection

HYSTERESIS = 0.15
MIN_RELEASE = 0.01  # as silero: with a low threshold, silence must still end a turn


class Speaking(Struct, frozen=True):
    start_sample: int
    last_voice_sample: int


class TurnStarted(Struct, frozen=True):
    start_sample: int


class TurnStopped(Struct, frozen=True):
    end_sample: int


def advance(
    speaking: Speaking | None, frame_end: int, probability: float, config: TurnDetection, floor: int
) -> tuple[Speaking | None, TurnStarted | TurnStopped | None]:
    """Fold one frame (ending at 16 kHz sample `frame_end`) into the detector."""
    if speaking is None:
        if probability < config.threshold:
            return None, None
        frame_start = frame_end - VAD_FRAME_SAMPLES
        start = max(floor, frame_start - samples_from_ms(config.prefix_padding_ms))
        return Speaking(start_sample=start, last_voice_sample=frame_end), TurnStarted(start)
    if probability >= max(config.threshold - HYSTERESIS, MIN_RELEASE):
        return Speaking(speaking.start_sample, frame_end), None
    if frame_end - speaking.last_voice_sample >= samples_from_ms(config.effective_silence_ms):
        return None, TurnStopped(frame_end)
    return speaking, None
