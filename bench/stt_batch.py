"""STT batching: does decoding several sessions' windows together cost less than decoding them one by one?

Cuts `--windows` windows of the lengths a live decode asks for (2 to 8 s, from lecture_60s.wav, a fixed pattern) and
decodes all of them with the worker's own batched decode (`Transcriber.words`, word timings and all) in batches of
each size in `--sizes`, the windows taken in the same order as a worker would (mixed lengths: a batch pads its rows
to the longest). Each size runs `--rounds` times, interleaved with the other sizes so that a noisy machine hurts
them alike. Reports per size the median wall time per window, the windows per second and the speed-up over batches
of one; and whether every window's words came out the same as alone. Deterministic; no server. Writes
bench/results/stt_batch_<model>_<device>.json.

    .venv/bin/python -m bench.stt_batch --model whisper-base --sizes 1 2 4 8 [--device cuda]
"""

import argparse
import statistics
import time
from typing import Any

import numpy as np
from faster_whisper import decode_audio

from app.runner import transcriber
from app.settings import Settings
from bench.report import save
from handlers.stt import Transcriber, WordsRequest
from tests.realtime_client import AUDIO

LENGTHS_S = (3.0, 5.0, 4.0, 6.5, 2.5, 7.5, 4.5, 5.5)  # live decodes of turns in progress: a few seconds each


def windows(count: int) -> list[np.ndarray]:
    audio = decode_audio(str(AUDIO / "lecture_60s.wav"))
    step = (len(audio) / 16_000 - max(LENGTHS_S)) / count
    return [
        audio[round(i * step * 16_000) : round((i * step + LENGTHS_S[i % len(LENGTHS_S)]) * 16_000)]
        for i in range(count)
    ]


def decode_in_batches(stt: Transcriber, model: str, audio: list[np.ndarray], size: int) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    words: list[Any] = []
    for i in range(0, len(audio), size):
        words += [w for w, _ in stt.words([WordsRequest(a, "en") for a in audio[i : i + size]], model)]
    return time.perf_counter() - started, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = Settings.from_env(stt_model=args.model, stt_device=args.device, stt_compute_type=args.compute_type)
    stt = transcriber(settings)
    device = stt.model(args.model).model.device
    audio = windows(args.windows)
    decode_in_batches(stt, args.model, audio[:4], 2)  # warm-up: the first decodes pay for allocations
    seconds: dict[int, list[float]] = {size: [] for size in args.sizes}
    alone: list[Any] = []
    same: dict[int, int] = {}
    for _ in range(args.rounds):
        for size in args.sizes:
            took, words = decode_in_batches(stt, args.model, audio, size)
            seconds[size].append(took)
            alone = words if size == 1 else alone
            if alone:
                same[size] = sum(_texts(a) == _texts(b) for a, b in zip(alone, words, strict=True))
    base = statistics.median(seconds[min(args.sizes)])
    rows = []
    print(f"{args.model} on {device}: {len(audio)} windows of {sum(len(a) for a in audio) / 16_000:.0f} s in all")
    print("batch | ms per window | windows/s | speed-up | same words as alone")
    for size in args.sizes:
        median = statistics.median(seconds[size])
        row = {
            "batch": size,
            "ms_per_window": round(1000 * median / len(audio), 1),
            "windows_per_s": round(len(audio) / median, 2),
            "speed_up": round(base / median, 2),
            "same_words": same.get(size),
            "rounds_s": [round(s, 3) for s in seconds[size]],
        }
        rows.append(row)
        print(
            f"{size:5} | {row['ms_per_window']:13} | {row['windows_per_s']:9} | {row['speed_up']:8} | "
            f"{row['same_words']}/{len(audio)}"
        )
    save(
        f"stt_batch_{args.model}_{device}", {"model": args.model, "device": device, "windows": len(audio), "rows": rows}
    )


def _texts(words: list[tuple[str, float, float]]) -> list[str]:
    return [text for text, _, _ in words]


if __name__ == "__main__":
    main()
