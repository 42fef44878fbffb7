"""Transcription latency, per turn, as a client sees it: stop -> completed, and onset -> first partial transcript.

Drives a running Vocalis (`vocalis serve`) exactly as a client would: the official SDK, a transcription session
whose model is chosen with `session.update`, server VAD (silence 500 ms by default, as OpenAI's), and each file
streamed in 100 ms appends paced in real time against a monotonic schedule (chunk k goes out at start + k x 0.1 s,
so a slow send does not push every later chunk back). For every turn (item) it records, on client receive times:

    stop -> completed        `input_audio_buffer.speech_stopped` -> `...input_audio_transcription.completed`
    onset -> first delta     the moment the audio at the turn's `audio_start_ms` was sent (the send time of the
                             100 ms chunk holding that offset; `audio_start_ms` includes the VAD's 300 ms prefix
                             padding) -> the item's first `...input_audio_transcription.delta`; an item without a
                             delta counts as missing
    turn length              `audio_end_ms` - `audio_start_ms`, to split results by utterance length
    transcript               the completed transcript, checked against the concatenation of its deltas (a
                             mismatch is counted only for items that had deltas)

Each model first transcribes hello_world.wav once, not counted, so that loading it is not measured. Prints a table
(p50/p95 over all turns of all runs, and p50 over turns up to 15 s) and writes
bench/results/transcription_latency[_<label>].json and .png (p50/p95 stop -> completed per model and file):

    .venv/bin/python -m bench.transcription_latency --url ws://127.0.0.1:8000/v1 --runs 5 --label before
    .venv/bin/python -m bench.transcription_latency --runs 1 --models whisper-tiny.en --wavs hello_world.wav jfk.wav
"""

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from math import nan
from typing import Any

from openai import AsyncOpenAI

from bench.report import figure, percentile, save
from tests.realtime_client import chunks, pcm24k, silence

TRANSCRIPTION = "conversation.item.input_audio_transcription"
CHUNK_S = 0.1  # tests.realtime_client.chunks cuts 100 ms pieces
SHORT_S = 15.0  # the split between short and long utterances
STATS = (  # the table's latency columns, in order
    "stop_to_completed_p50",
    "stop_to_completed_p95",
    "onset_to_first_delta_p50",
    "onset_to_first_delta_p95",
    "stop_to_completed_p50_upto15s",
    "onset_to_first_delta_p50_upto15s",
)
STOP_TO_COMPLETED = ("stop_to_completed_p50_s", "stop_to_completed_p95_s")


@dataclass
class Turn:
    """One item as the client saw it; times are time.perf_counter() at receipt."""

    start_ms: int
    end_ms: int | None = None
    stopped: float | None = None
    first_delta: float | None = None
    completed: float | None = None
    failed: bool = False
    deltas: list[str] = field(default_factory=list)
    transcript: str | None = None

    @property
    def done(self) -> bool:
        return self.completed is not None or self.failed


async def one_run(url: str, model: str, wav: str, silence_ms: int) -> list[dict[str, Any]]:
    """Every turn of one streamed file, with its latencies (seconds), length and transcript check."""
    client = AsyncOpenAI(api_key="bench", base_url=url.replace("ws", "http", 1), websocket_base_url=url)
    turns: dict[str, Turn] = {}
    sent: list[float] = []  # when chunk k had been sent
    settled = asyncio.Event()  # every turn seen so far has its transcript (or failed)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        detection = {"type": "server_vad", "silence_duration_ms": silence_ms}
        input_audio = {"transcription": {"model": model}, "turn_detection": detection}
        await conn.session.update(session={"type": "transcription", "audio": {"input": input_audio}})

        async def receive() -> None:
            async for event in conn:
                now = time.perf_counter()
                if event.type == "error":
                    raise RuntimeError(f"server error: {event.error.message}")
                if event.type == "input_audio_buffer.speech_started":
                    turns[event.item_id] = Turn(start_ms=event.audio_start_ms)
                    settled.clear()
                    continue
                turn = turns.get(getattr(event, "item_id", None) or "")
                if turn is None:
                    continue
                if event.type == "input_audio_buffer.speech_stopped":
                    turn.stopped, turn.end_ms = now, event.audio_end_ms
                elif event.type == f"{TRANSCRIPTION}.delta":
                    turn.first_delta = turn.first_delta or now
                    turn.deltas.append(event.delta)
                elif event.type == f"{TRANSCRIPTION}.completed":
                    turn.completed, turn.transcript = now, event.transcript
                elif event.type == f"{TRANSCRIPTION}.failed":
                    turn.failed = True
                if all(t.done for t in turns.values()):
                    settled.set()
            raise ConnectionError("the server closed the connection")

        # The trailing silence lets the VAD end the last turn (silence_ms) with a second to spare.
        pieces = chunks(pcm24k(wav) + silence(silence_ms + 1000))
        async with asyncio.TaskGroup() as group:  # a server error stops the sending too
            receiver = group.create_task(receive())
            start = time.perf_counter()
            for k, piece in enumerate(pieces):
                await asyncio.sleep(max(0.0, start + k * CHUNK_S - time.perf_counter()))
                await conn.input_audio_buffer.append(audio=piece)
                sent.append(time.perf_counter())
            await asyncio.wait_for(settled.wait(), 120)
            receiver.cancel()

    rows = []
    for item_id, t in turns.items():
        # Computed here, not on receipt: speech_started may be read before the sender has stamped its chunk.
        onset = sent[min(t.start_ms // 100, len(sent) - 1)]
        stop_to_completed = t.completed - t.stopped if t.completed is not None and t.stopped is not None else None
        rows.append(
            {
                "item_id": item_id,
                "length_s": (t.end_ms - t.start_ms) / 1000 if t.end_ms is not None else None,
                "stop_to_completed_s": stop_to_completed,
                "onset_to_first_delta_s": t.first_delta - onset if t.first_delta is not None else None,
                "failed": t.failed,
                "deltas": len(t.deltas),
                "deltas_match": "".join(t.deltas) == t.transcript if t.deltas else None,
                "transcript": t.transcript,
            }
        )
    return rows


def p(values: list[float], q: float) -> float | None:
    """The q-th percentile, rounded; None (JSON null) when there is nothing to measure."""
    return round(percentile(values, q), 4) if values else None


def summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 of both latencies, p50 over turns up to 15 s, and the counts of missing deltas and mismatches."""
    short = [t for t in turns if t["length_s"] is not None and t["length_s"] <= SHORT_S]
    stats: dict[str, Any] = {"turns": len(turns), "turns_upto15s": len(short)}
    for key in ("stop_to_completed", "onset_to_first_delta"):
        values = [t[f"{key}_s"] for t in turns if t[f"{key}_s"] is not None]
        stats[f"{key}_p50_s"], stats[f"{key}_p95_s"] = p(values, 50), p(values, 95)
        stats[f"{key}_p50_upto15s_s"] = p([t[f"{key}_s"] for t in short if t[f"{key}_s"] is not None], 50)
    stats["failed"] = sum(t["failed"] for t in turns)
    stats["missing_deltas"] = sum(t["deltas"] == 0 and not t["failed"] for t in turns)
    stats["mismatches"] = sum(t["deltas_match"] is False for t in turns)
    return stats


def chart(results: list[dict[str, Any]], models: list[str], wavs: list[str], label: str | None) -> Any:
    """Bars of p50 stop -> completed per file, one colour per model, with p95 as a black tick above."""
    fig, axes = figure(f"Transcription: speech_stopped -> completed{f' ({label})' if label else ''}", "file", "seconds")
    width = 0.8 / len(models)
    for m, model in enumerate(models):
        rows = [r for r in results if r["model"] == model]
        p50, p95 = ([nan if r[k] is None else r[k] for r in rows] for k in STOP_TO_COMPLETED)  # nan: no bar
        xs = [wavs.index(r["file"]) + (m - (len(models) - 1) / 2) * width for r in rows]
        axes.bar(xs, p50, width, label=f"{model} p50")
        axes.scatter(xs, p95, marker="_", s=300, color="black")
    axes.scatter([], [], marker="_", s=300, color="black", label="p95")
    axes.set_xticks(range(len(wavs)), wavs)
    axes.legend()
    return fig


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--wavs", nargs="+", default=["jfk.wav", "lecture_60s.wav", "hello_world.wav"])
    parser.add_argument("--silence-ms", type=int, default=500, help="server VAD silence_duration_ms")
    parser.add_argument("--label", help='e.g. "before" or "after": in the results and the file name')
    args = parser.parse_args()

    results = []
    columns = ("turns", "stop->done p50", "p95", "onset->delta p50", "p95", "<=15s: stop", "onset")
    columns += ("missing", "mismatch")
    widths = [max(len(c), 6) + 2 for c in columns]
    print(f"{'model':<17}{'file':<17}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for model in args.models:
        await one_run(args.url, model, "hello_world.wav", args.silence_ms)  # loads the model; not counted
        for wav in args.wavs:
            turns: list[dict[str, Any]] = []
            for run in range(args.runs):
                turns += [{"run": run, **t} for t in await one_run(args.url, model, wav, args.silence_ms)]
            row = {"model": model, "file": wav, **summary(turns), "turns_detail": turns}
            results.append(row)
            cells = [row[k] for k in ("turns", *(f"{k}_s" for k in STATS), "missing_deltas", "mismatches")]
            text = ["-" if c is None else f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells]
            print(f"{model:<17}{wav:<17}" + "".join(f"{t:>{w}}" for t, w in zip(text, widths, strict=True)))
    name = f"transcription_latency_{args.label}" if args.label else "transcription_latency"
    fig = chart(results, args.models, args.wavs, args.label)
    save(name, results, fig, label=args.label, url=args.url, runs=args.runs, silence_duration_ms=args.silence_ms)


if __name__ == "__main__":
    asyncio.run(main())
