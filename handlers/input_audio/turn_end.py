"""Semantic VAD at the edge: the end-of-turn scores the state machine decides with.

The stream follows the session's turns with the state machine's own rule (`domain.turns`), and at each pause
where the rule looks for a score it asks Smart Turn about the turn so far. The scores go on the log with the audio
they belong to; the state machine alone decides from them, so where this stream's view of a turn differs (a manual
commit it did not see), a score is only a number the rule ignores.
"""

import numpy as np

from domain.audio_time import VAD_FRAME_SAMPLES
from domain.session_config import TurnDetection
from domain.turns import Speaking, TurnStopped, advance, wants_score
from handlers.input_audio.smart_turn import WINDOW_SAMPLES, SmartTurn


class TurnEndStream:
    def __init__(self, model: SmartTurn) -> None:
        self._model = model
        self._speaking: Speaking | None = None
        self._floor = 0  # where the last turn stopped: the next one's padding starts no earlier
        self._frames = 0  # VAD frames seen, as the state machine counts them
        self._heard = 0  # samples fed
        # The latest samples: a scored turn's last 8 s, and the part of a frame that the VAD holds back.
        self._recent = np.zeros(0, dtype=np.float32)

    def feed(
        self, samples: np.ndarray, probabilities: list[float], config: TurnDetection | None
    ) -> tuple[tuple[int, float], ...]:
        """Follow the frames that `samples` completed (their VAD `probabilities`); return the scores taken, as
        (index into `probabilities`, probability that the turn is complete)."""
        self._recent = np.concatenate([self._recent, samples.astype(np.float32, copy=False)])
        self._recent = self._recent[-(WINDOW_SAMPLES + VAD_FRAME_SAMPLES) :]
        self._heard += len(samples)
        scores: list[tuple[int, float]] = []
        for index, probability in enumerate(probabilities):
            self._frames += 1
            frame_end = self._frames * VAD_FRAME_SAMPLES
            if config is None:
                self._speaking = None
                continue
            complete = None
            if wants_score(self._speaking, frame_end, probability, config):
                complete = round(self._model.complete(self._turn_audio(frame_end)), 4)
                scores.append((index, complete))
            self._speaking, change = advance(self._speaking, frame_end, probability, config, self._floor, complete)
            if isinstance(change, TurnStopped):
                self._floor = change.end_sample
        return tuple(scores)

    def _turn_audio(self, frame_end: int) -> np.ndarray:
        assert self._speaking is not None  # only a turn is scored
        first = self._heard - len(self._recent)  # the stream position of self._recent[0]
        start = max(self._speaking.start_sample, first)
        return self._recent[start - first : frame_end - first]
