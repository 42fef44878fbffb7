"""Turn-taking: how soon a turn ends after the voice does, and how often a pause inside a sentence ends it.

No server: speech is streamed in 100 ms appends through the edge's own audio path (decoding, soxr, silero, and for
semantic VAD the edge's Smart Turn scoring, `TurnEndStream`) and the state machine's turn rule
(`domain.turns.advance`), for server VAD (500 ms) and each semantic VAD eagerness. Time is the audio's, as if
streamed live: a score counts from its compute time after the frame it was taken on, and for semantic VAD the
words of each pause's closing decode (whisper-base on the pause's last 6 s, as an idle worker would run it) from
their decode time after the pause reached `CLOSE_AFTER_MS`. The speech:

- tests/data/hesitations.wav: requests that pause mid-sentence (bench/hesitations.py), each streamed on its own
  and followed by 9 s of silence (more than the longest pause any eagerness waits);
- tests/data/jfk.wav: one sentence with two long pauses at its commas; its voice ends at 10.2 s;
- tests/data/lecture_60s.wav: a speaker pausing inside and between sentences; whisper's word timings and
  punctuation say where each sentence ends (the last one, unfinished, is not counted).

Reported per configuration: the median time from the end of the voice to the end of the turn, and the share of
sentences cut off: a turn ended inside them. Prints a table and writes bench/results/turn_taking.json.

    .venv/bin/python -m bench.turn_taking
"""

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.runner import transcriber
from app.settings import Settings
from bench.report import save
from domain.audio_time import MODEL_RATE, VAD_FRAME_SAMPLES, samples_from_ms
from domain.session_config import TurnDetection
from domain.transcription import CLOSE_AFTER_MS, pause_verdict
from domain.turns import Heard, Speaking, TurnStopped, advance, is_voice
from handlers.input_audio.decode import InputAudio
from handlers.input_audio.smart_turn import SmartTurn
from handlers.input_audio.turn_end import TurnEndStream
from handlers.input_audio.vad import SileroVad
from handlers.stt import Transcriber, WordsRequest
from handlers.stt_worker import placed
from tests.realtime_client import AUDIO, pcm24k, silence

JFK_VOICE_END_S = 10.2  # the end of "country", read from the waveform
TRAILING_SILENCE_MS = 9000
LEAD_MS = 500
DECODE_SAMPLES = 6 * MODEL_RATE  # about what a closing decode hears: the turn from a little before its stable words
APPEND_BYTES = 4800  # 100 ms of 24 kHz pcm16, as clients send
CONFIGS = {
    "server_vad 500 ms": TurnDetection(),
    **{
        f"semantic {eagerness}": TurnDetection(type="semantic_vad", eagerness=eagerness)  # type: ignore[arg-type]
        for eagerness in ("high", "auto", "low")
    },
}


class TimedSmartTurn(SmartTurn):
    """Smart Turn that keeps how long each score took."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def complete(self, audio: np.ndarray) -> float:
        started = time.perf_counter()
        probability = super().complete(audio)
        self.seconds.append(time.perf_counter() - started)
        return probability


@dataclass
class Stop:
    at_s: float  # when the session ends the turn, in seconds of the stream (audio streamed in real time)


@dataclass
class Sentence:
    start_s: float
    end_s: float  # the end of the voice
    stops: list[Stop] = field(default_factory=list)


def stream(pcm: bytes, config: TurnDetection, vad: SileroVad, model: TimedSmartTurn, stt: Transcriber) -> list[Stop]:
    """The turn ends that a session with `config` records for 24 kHz `pcm`, streamed in 100 ms appends in real
    time: a score counts from the frame its compute time after the one it was taken on, and the closing decode's
    words from the frame their decode time after it was asked (whisper-base, one at a time, as an idle worker)."""
    decoder, vad_stream, turn_end = InputAudio(), vad.stream(), TurnEndStream(model)
    speaking: Speaking | None = None
    floor = frames = 0
    heard_audio: list[np.ndarray] = []
    due_scores: dict[int, float] = {}  # frame -> score, from the frame it is known
    words_at: int | None = None  # the frame from which the closing decode's words are known
    verdict: Heard = "pending"
    stops = []
    for offset in range(0, len(pcm), APPEND_BYTES):
        for _ticks, samples in decoder.decode(pcm[offset : offset + APPEND_BYTES], 5):
            heard_audio.append(samples)
            probabilities = vad_stream.feed(samples)
            timed = len(model.seconds)
            for taken, (index, probability) in enumerate(turn_end.feed(samples, probabilities, config)):
                lag = math.ceil(model.seconds[timed + taken] * MODEL_RATE / VAD_FRAME_SAMPLES)
                due_scores[frames + index + 1 + lag] = probability
            for probability in probabilities:
                frames += 1
                frame_end = frames * VAD_FRAME_SAMPLES
                if speaking is not None and is_voice(probability, config):
                    words_at, verdict = None, "pending"
                elif (
                    speaking is not None
                    and words_at is None
                    and config.type == "semantic_vad"
                    and frame_end - speaking.last_voice_sample >= samples_from_ms(CLOSE_AFTER_MS)
                ):
                    first = max(speaking.start_sample, frame_end - DECODE_SAMPLES)
                    audio = np.concatenate(heard_audio)[first:frame_end]
                    started = time.perf_counter()
                    ((words, _language),) = stt.words([WordsRequest(audio, "en")], "whisper-base")
                    words_at = frames + math.ceil((time.perf_counter() - started) * MODEL_RATE / VAD_FRAME_SAMPLES)
                    verdict = pause_verdict(placed(words, first), speaking.last_voice_sample, "en")
                heard: Heard = verdict if words_at is not None and frames >= words_at else "pending"
                before = speaking
                speaking, change = advance(
                    speaking, frame_end, probability, config, floor, due_scores.pop(frames, None), heard
                )
                if isinstance(change, TurnStopped) and before is not None:
                    floor = change.end_sample
                    words_at, verdict = None, "pending"
                    stops.append(Stop(change.end_sample / MODEL_RATE))
    return stops


def requests() -> list[tuple[bytes, Sentence]]:
    """Each hesitation request cut out of its file, with its voice's times in the cut."""
    pcm = pcm24k("hesitations.wav")
    listing = json.loads((AUDIO / "hesitations.json").read_text())["requests"]
    cut = []
    for request in listing:
        start = max(0.0, request["voice_start_s"] - LEAD_MS / 1000)
        end = request["voice_end_s"] + 0.2
        audio = pcm[int(start * 24_000) * 2 : int(end * 24_000) * 2]
        sentence = Sentence(request["voice_start_s"] - start, request["voice_end_s"] - start)
        cut.append((audio + silence(TRAILING_SILENCE_MS), sentence))
    return cut


def lecture_sentences(stt: Transcriber) -> list[Sentence]:
    """The lecture's finished sentences, from whisper-base's word timings and punctuation."""
    audio = np.frombuffer(pcm24k("lecture_60s.wav"), dtype="<i2").astype(np.float32) / 32768
    import soxr

    heard = soxr.resample(audio, 24_000, MODEL_RATE)
    whisper = stt.model("whisper-base")
    segments, _ = whisper.transcribe(heard, word_timestamps=True, language="en", beam_size=5)
    sentences, start = [], None
    for word in (word for segment in segments for word in segment.words):
        start = word.start if start is None else start
        if word.word.strip().endswith((".", "?", "!")):
            sentences.append(Sentence(start, word.end))
            start = None
    return sentences


def score(sentences: list[Sentence], stops: list[Stop]) -> None:
    """Give each sentence the stops that fall inside it or in the silence after it."""
    for stop in stops:
        for sentence, following in zip(sentences, [*sentences[1:], None], strict=True):
            if sentence.start_s < stop.at_s and (following is None or stop.at_s <= following.start_s):
                sentence.stops.append(stop)
                break


def run(
    config: TurnDetection, vad: SileroVad, model: TimedSmartTurn, stt: Transcriber, lecture: list[Sentence]
) -> dict[str, Any]:
    ended: list[Sentence] = []  # sentences whose end is the end of a turn (a request, jfk)
    for pcm, sentence in requests():
        score([sentence], stream(pcm, config, vad, model, stt))
        ended.append(sentence)
    jfk = Sentence(0.0, JFK_VOICE_END_S)
    score([jfk], stream(pcm24k("jfk.wav") + silence(TRAILING_SILENCE_MS), config, vad, model, stt))
    ended.append(jfk)
    in_lecture = [Sentence(s.start_s, s.end_s) for s in lecture]
    score(in_lecture, stream(pcm24k("lecture_60s.wav") + silence(TRAILING_SILENCE_MS), config, vad, model, stt))
    # A sentence is cut off when a turn ended inside it, before its voice did.
    everything = ended + in_lecture
    cut = [s for s in everything if any(stop.at_s < s.end_s for stop in s.stops)]
    delays = []
    for sentence in ended:
        after = [stop for stop in sentence.stops if stop.at_s >= sentence.end_s]
        if after:
            delays.append(after[0].at_s - sentence.end_s)
    return {
        "sentences": len(everything),
        "cut_off": len(cut),
        "cut_off_rate": round(len(cut) / len(everything), 3),
        "turn_ends": len(ended),
        "turn_ends_found": len(delays),
        "end_of_voice_to_stopped_median_ms": round(statistics.median(delays) * 1000) if delays else None,
        "end_of_voice_to_stopped_ms": [round(d * 1000) for d in delays],
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    settings = Settings.from_env()
    vad, model, stt = SileroVad(), TimedSmartTurn(), transcriber(settings)
    lecture = lecture_sentences(stt)
    rows = []
    print(f"{'turn detection':<20}{'end of voice -> stopped, median':>33}{'sentences cut off':>19}")
    for name, config in CONFIGS.items():
        model.seconds.clear()
        row = {"config": name, **run(config, vad, model, stt, lecture)}
        row["score_ms_median"] = round(statistics.median(model.seconds) * 1000, 1) if model.seconds else None
        row["scores"] = len(model.seconds)
        rows.append(row)
        cut = f"{row['cut_off']}/{row['sentences']} ({row['cut_off_rate']:.0%})"
        print(f"{name:<20}{row['end_of_voice_to_stopped_median_ms']!s:>30} ms{cut:>19}")
    print(f"Smart Turn per score: median {rows[-1]['score_ms_median']} ms (one thread)")
    save("turn_taking", rows)


if __name__ == "__main__":
    main()
