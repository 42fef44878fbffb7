"""Builds tests/data/hesitations.wav: spoken requests that pause in the middle, with where each really ends.

Each request is synthesised whole by the bundled Kokoro (so the voice carries on through the sentence, as a person's
does when they stop to think), then silence is put in at the marked word boundaries: the boundary is where whisper's
word timings put it, moved to the quietest 10 ms nearby so that no word is clipped. Requests are separated by
1 s of silence. tests/data/hesitations.json lists each request's text, where its voice starts and ends, and where
its pauses are, in seconds of the file; bench/turn_taking.py scores turn detection against it.

    .venv/bin/python -m bench.hesitations
"""

import json
import wave

import numpy as np
import soxr

from app.runner import transcriber
from app.settings import Settings
from handlers.tts import SAMPLE_RATE, KokoroSynthesizer
from tests.realtime_client import AUDIO

# "|" marks a hesitation: (text, the pause in ms at each mark).
REQUESTS = (
    ("Could you book me a table for | four people | tomorrow evening?", (900, 700)),
    ("I want to know whether the train to | Edinburgh leaves on time.", (1100,)),
    ("What is the weather going to be like in | Paris this weekend?", (800,)),
    ("Please remind me to call my sister | at six o'clock.", (1000,)),
    ("Can you tell me how to | get to the nearest pharmacy?", (700,)),
    ("I think the best option would be | the second one.", (1200,)),
    ("Send a message to | David saying that I will be | ten minutes late.", (900, 800)),
    ("How many tablespoons are there in | a cup?", (1000,)),
    ("Turn the lights off in the | living room.", (800,)),
    ("My flight leaves from | the north terminal, and it lands in | Rome.", (700, 1000)),
    ("Let me think about what I need from the shop.", ()),
    ("That sounds good to me.", ()),
)
GAP_S = 1.0
SEARCH_S = 0.08  # how far from whisper's boundary the quietest point may be


def envelope(audio: np.ndarray, step: int) -> np.ndarray:
    usable = len(audio) // step * step
    return np.sqrt((audio[:usable].reshape(-1, step) ** 2).mean(axis=1))


def voice_bounds(audio: np.ndarray) -> tuple[int, int]:
    """The first and last sample of `audio` louder than 1% of its loudest 10 ms."""
    step = SAMPLE_RATE // 100
    loud = np.flatnonzero(envelope(audio, step) > 0.01 * envelope(audio, step).max())
    return int(loud[0]) * step, int(loud[-1] + 1) * step


def main() -> None:
    settings = Settings.from_env()
    kokoro = KokoroSynthesizer(settings.models_path)
    whisper = transcriber(settings).model("whisper-base")
    pieces: list[np.ndarray] = [np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)]
    at = len(pieces[0])
    listing = []
    for marked, pauses in REQUESTS:
        text = " ".join(marked.replace("|", " ").split())
        audio = (
            np.concatenate([np.frombuffer(chunk, dtype=np.int16) for chunk in kokoro.synthesize(text, None)]).astype(
                np.float32
            )
            / 32768
        )
        heard = soxr.resample(audio, SAMPLE_RATE, 16_000)
        segments, _ = whisper.transcribe(heard, word_timestamps=True, language="en", beam_size=5)
        words = [word for segment in segments for word in segment.words]
        marks = [len(part.split()) for part in marked.split("|")][:-1]
        cuts = []
        after = 0
        for count in marks:
            after += count
            boundary = int((words[after - 1].end + words[after].start) / 2 * SAMPLE_RATE)
            window = int(SEARCH_S * SAMPLE_RATE)
            step = SAMPLE_RATE // 100
            low = max(0, boundary - window)
            quiet = envelope(audio[low : boundary + window], step)
            cuts.append(low + int(np.argmin(quiet)) * step + step // 2)
        start, end = voice_bounds(audio)
        parts, pause_at, previous, shift = [], [], 0, 0
        for cut, pause_ms in zip(cuts, pauses, strict=True):
            parts += [audio[previous:cut], np.zeros(pause_ms * SAMPLE_RATE // 1000, dtype=np.float32)]
            pause_at.append(round((at + cut + shift) / SAMPLE_RATE, 3))
            shift += pause_ms * SAMPLE_RATE // 1000
            previous = cut
        parts.append(audio[previous:])
        utterance = np.concatenate(parts)
        listing.append(
            {
                "text": text,
                "voice_start_s": round((at + start) / SAMPLE_RATE, 3),
                "voice_end_s": round((at + end + shift) / SAMPLE_RATE, 3),
                "pauses_s": pause_at,
                "pause_ms": list(pauses),
            }
        )
        pieces += [utterance, np.zeros(int(GAP_S * SAMPLE_RATE), dtype=np.float32)]
        at += len(utterance) + int(GAP_S * SAMPLE_RATE)
        print(f"{text!r}: pauses after {[w.word for w in words[: sum(marks[:1])]][-1:]} ...")
    pcm = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2")
    with wave.open(str(AUDIO / "hesitations.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    (AUDIO / "hesitations.json").write_text(json.dumps({"requests": listing}, indent=2) + "\n")
    print(f"{len(listing)} requests, {len(pcm) / SAMPLE_RATE:.1f} s -> {AUDIO / 'hesitations.wav'}")


if __name__ == "__main__":
    main()
