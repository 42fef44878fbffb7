"""The assistant's voice on a WebRTC audio track: the session's output audio, resampled to 48 kHz (Opus's rate) and
handed to aiortc's encoder 20 ms at a time in real time, silence between answers.

It knows what has been played of the item it plays, which is what a barge-in keeps: the count a WebSocket client
keeps of the audio it played, for `conversation.item.truncate`.
"""

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from domain.audio_time import INPUT_RATES
from domain.session_config import AudioFormat
from handlers.input_audio.decode import g711_to_pcm16

RATE = 48_000
FRAME_SAMPLES = RATE // 50  # 20 ms, Opus's usual frame
TIME_BASE = fractions.Fraction(1, RATE)

# What the track tells the client, with the response it concerns: `output_audio_buffer.started` or `.stopped`.
Announce = Callable[[str, str], None]


@dataclass
class _Chunk:
    response_id: str
    item_id: str
    samples: np.ndarray  # int16 at 48 kHz, what is left of it to play


@dataclass(frozen=True)
class Cut:
    """What a clear stopped: the response, and its item as far as it was played."""

    response_id: str
    item_id: str
    played_ms: int


class Speaker(MediaStreamTrack):
    kind = "audio"

    def __init__(self, announce: Announce) -> None:
        super().__init__()
        self._announce = announce
        self._queue: deque[_Chunk] = deque()
        self._format: AudioFormat = "pcm16"
        self._resampler = soxr.ResampleStream(INPUT_RATES["pcm16"], RATE, 1, dtype="int16")
        self._playing: str | None = None  # the response whose audio is on the track, from started to stopped
        self._finished: set[str] = set()  # responses whose audio is all queued (their response.done came)
        self._cleared: set[str] = set()  # responses cut off: audio of theirs still on its way is dropped
        self._item: str | None = None  # the item last played, and how many of its samples were
        self._item_samples = 0
        self._start: float | None = None
        self._pts = 0

    def follow(self, audio_format: AudioFormat) -> None:
        """Decode the session's output audio in the format it has taken."""
        if audio_format != self._format:
            self._format = audio_format
            self._resampler = soxr.ResampleStream(INPUT_RATES[audio_format], RATE, 1, dtype="int16")

    def play(self, response_id: str, item_id: str, audio: bytes) -> None:
        """Queue one audio delta of the session's output."""
        if response_id in self._cleared:
            return
        pcm = np.frombuffer(audio, dtype="<i2") if self._format == "pcm16" else g711_to_pcm16(audio, self._format)
        self._queue.append(_Chunk(response_id, item_id, self._resampler.resample_chunk(pcm)))

    def finish(self, response_id: str) -> None:
        """The response is done: what the resampler still holds of it is queued, and once played, it stops."""
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._resampler.clear()
        ours = [chunk for chunk in self._queue if chunk.response_id == response_id]
        if ours:
            ours[-1].samples = np.concatenate([ours[-1].samples, tail])
        if ours or self._playing == response_id:
            self._finished.add(response_id)

    def clear(self) -> Cut | None:
        """Stop the audio on the track and drop what is queued; what was cut, if anything was."""
        response_id = self._playing or (self._queue[0].response_id if self._queue else None)
        if response_id is None:
            return None
        item_id = self._item if self._playing == response_id and self._item else self._queue[0].item_id
        played = self._item_samples if item_id == self._item else 0
        self._cleared.update({response_id, *(chunk.response_id for chunk in self._queue)})
        self._queue.clear()
        self._resampler.clear()
        self._playing = None
        return Cut(response_id, item_id, played * 1000 // RATE)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pace()
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._next_samples().tobytes())
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = TIME_BASE
        self._pts += FRAME_SAMPLES
        return frame

    async def _pace(self) -> None:
        """Until this frame's time comes: the encoder sends each frame as soon as it has it."""
        if self._start is None:
            self._start = time.monotonic()
            return
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def _next_samples(self) -> np.ndarray:
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._queue:
            chunk = self._queue[0]
            self._started(chunk.response_id)
            taken = chunk.samples[: FRAME_SAMPLES - filled]
            out[filled : filled + len(taken)] = taken
            filled += len(taken)
            chunk.samples = chunk.samples[len(taken) :]
            if chunk.item_id != self._item:
                self._item, self._item_samples = chunk.item_id, 0
            self._item_samples += len(taken)
            if not len(chunk.samples):
                self._queue.popleft()
        playing = self._playing
        if playing in self._finished and not any(chunk.response_id == playing for chunk in self._queue):
            self._finished.discard(playing)
            self._playing = None
            self._announce("output_audio_buffer.stopped", playing)
        return out

    def _started(self, response_id: str) -> None:
        if self._playing == response_id:
            return
        if self._playing is not None:  # a response whose done never came, as after a cut the client did not ask for
            self._finished.discard(self._playing)
            self._announce("output_audio_buffer.stopped", self._playing)
        self._playing = response_id
        self._announce("output_audio_buffer.started", response_id)
