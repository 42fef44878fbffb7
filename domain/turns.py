"""Turn detection from recorded speech probabilities, one 32 ms frame at a time.

A turn starts at the first frame at or above `threshold` (its start moved back by `prefix_padding_ms`, never
before `floor`, the end of the previous turn). While speaking, frames down to `threshold - 0.15` (at least 0.01)
still count as voice (silero's own hysteresis), so soft syllables do not split a turn.

Server VAD stops a turn once `silence_duration_ms` has passed since the last frame judged voice. Semantic VAD asks
an end-of-turn model instead: when a pause reaches one of `SCORE_PAUSES_MS`, the edge scores the turn's audio and
records the probability that the turn is complete beside that frame's speech probability; a score at or above the
eagerness's threshold stops the turn, unless the words of the pause say the sentence goes on (the turn's closing
decode, asked `CLOSE_AFTER_MS` into the pause, ends on "the", "to", a comma: `domain.continuation`); while that
decode is out, a sure score waits for it up to `WORDS_WAIT_MS` (high eagerness goes by the sound alone). A pause
as long as the eagerness allows stops the turn whatever was said. The decision is made here from recorded numbers
and words, so a replay decides the same.
"""

from typing import Literal

import msgspec
from msgspec import Struct

from domain.audio_time import VAD_FRAME_SAMPLES, samples_from_ms
from domain.session_config import EAGERNESS, TurnDetection

HYSTERESIS = 0.15
MIN_RELEASE = 0.01  # as silero: with a low threshold, silence must still end a turn
# Semantic VAD: the pauses after which the end-of-turn model hears the turn. The first is as short as the model
# still judges reliably (it was trained on turns ending in about 200 ms of silence); the later ones give a turn it
# found unfinished another chance, as a longer silence makes the end clearer, before the longest pause.
SCORE_PAUSES_MS = (160, 640, 1280)
# A sure score waits this long into the pause for the words of the closing decode; a worker too busy to answer by
# then does not hold the turn open any longer.
WORDS_WAIT_MS = 1000
# What the words of a semantic VAD turn's pause say: the sentence "goes on", it "may end", the closing decode is
# "pending", or the turn has "no words" (a transcription session without a model): the score decides alone.
Heard = Literal["goes on", "may end", "pending", "no words"]


class Speaking(Struct, frozen=True):
    start_sample: int
    last_voice_sample: int
    complete: float | None = None  # semantic VAD: the end-of-turn score of the pause so far, if it was scored


class TurnStarted(Struct, frozen=True):
    start_sample: int


class TurnStopped(Struct, frozen=True):
    end_sample: int


def advance(
    speaking: Speaking | None,
    frame_end: int,
    probability: float,
    config: TurnDetection,
    floor: int,
    complete: float | None = None,
    heard: Heard = "no words",
) -> tuple[Speaking | None, TurnStarted | TurnStopped | None]:
    """Fold one frame (ending at 16 kHz sample `frame_end`) into the detector; `complete` is the end-of-turn
    model's score recorded for this frame, if it was scored, and `heard` what the words of the pause say."""
    if speaking is None:
        if probability < config.threshold:
            return None, None
        frame_start = frame_end - VAD_FRAME_SAMPLES
        start = max(floor, frame_start - samples_from_ms(config.prefix_padding_ms))
        return Speaking(start_sample=start, last_voice_sample=frame_end), TurnStarted(start)
    if is_voice(probability, config):
        return Speaking(speaking.start_sample, frame_end), None
    if complete is not None:
        speaking = msgspec.structs.replace(speaking, complete=complete)
    if ends_on_score(speaking, frame_end, config, heard):
        return None, TurnStopped(frame_end)
    if frame_end - speaking.last_voice_sample >= samples_from_ms(config.longest_silence_ms):
        return None, TurnStopped(frame_end)
    return speaking, None


def ends_on_score(speaking: Speaking, frame_end: int, config: TurnDetection, heard: Heard) -> bool:
    """Semantic VAD: whether the pause's score and words end the turn at `frame_end`."""
    eagerness = EAGERNESS[config.eagerness]
    if config.type != "semantic_vad" or speaking.complete is None or speaking.complete < eagerness.complete_at:
        return False
    if not eagerness.checks_words or heard == "may end" or heard == "no words":
        return True
    return heard == "pending" and frame_end - speaking.last_voice_sample >= samples_from_ms(WORDS_WAIT_MS)


def is_voice(probability: float, config: TurnDetection) -> bool:
    """Whether a frame inside a turn counts as voice."""
    return probability >= max(config.threshold - HYSTERESIS, MIN_RELEASE)


def wants_score(speaking: Speaking | None, frame_end: int, probability: float, config: TurnDetection) -> bool:
    """Whether the end-of-turn model should hear the turn that ends with this frame: semantic VAD, inside a turn,
    and this frame makes its pause as long as one of `SCORE_PAUSES_MS` (rounded up to whole frames)."""
    if config.type != "semantic_vad" or speaking is None or is_voice(probability, config):
        return False
    pause_frames = (frame_end - speaking.last_voice_sample) // VAD_FRAME_SAMPLES
    return any(pause_frames == -(-samples_from_ms(ms) // VAD_FRAME_SAMPLES) for ms in SCORE_PAUSES_MS)
