"""Memory soak: does the server's memory stay bounded through a long transcription session?

One transcription session (the official SDK, `?intent=transcription`, server VAD with OpenAI's defaults) streams
`--minutes` of speech (lecture_60s.wav over and over) at `--speed` x real time in 100 ms appends, then waits until
every turn has its transcript. Every `--sample-s` it samples the RSS of the server's process tree (`vocalis serve`
and its nats-server, also by process) and the transcripts completed so far. It reports the RSS at the start (after a
warm-up session has loaded the model), its peak and at the end, and the slope of its floor (the lowest sample of each
`--window-min` of audio) against the audio streamed over each half of the stream, in MiB per session-hour (per hour
of audio), and the same slope for each process after its first `--settle-min` of audio. The floor, because every
transcription takes and gives back tens of MiB of working memory, which would drown a leak in the raw samples;
sampled often, because at 10x two decodes rarely both pause. A floor that keeps rising in the second half as it did
in the first grows without bound; a warm-up that levels off leaves the second half flat. Short runs give noisy
slopes.

Drives a running `vocalis serve`, found by the port it listens on or given by `--server-pid`. Faster than real time
the transcriber may fall behind; the completed count in the samples shows whether it did. Prints a summary and
writes bench/results/memory_soak.json and .png.

    .venv/bin/python -m bench.memory_soak --url ws://127.0.0.1:8000/v1 --model whisper-base --minutes 30 --speed 10
"""

import argparse
import asyncio
import statistics
import time
from typing import Any

from bench.concurrency import ServerProcess, Session, sample_every, warm_up
from bench.report import figure, save
from tests.realtime_client import pcm24k, silence

HOUR_MIN = 60.0


def floor(samples: list[dict[str, Any]], window_min: float) -> list[dict[str, Any]]:
    """The lowest sample of each window of audio streamed: the RSS between transcriptions, which a leak raises."""
    lowest: dict[int, dict[str, Any]] = {}
    for s in samples:
        window = int(s["audio_min"] // window_min)
        if window not in lowest or s["rss_mib"] < lowest[window]["rss_mib"]:
            lowest[window] = s
    return list(lowest.values())


def slope_mib_per_h(samples: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of RSS against audio streamed, in MiB per hour of audio."""
    if len({s["audio_min"] for s in samples}) < 2:
        return None
    fit = statistics.linear_regression([s["audio_min"] for s in samples], [s["rss_mib"] for s in samples])
    return round(fit.slope * HOUR_MIN, 1)


def slopes_by_process(samples: list[dict[str, Any]], window_min: float, after_min: float) -> dict[str, float | None]:
    """Each process's floor slope after `after_min` of audio: a leak in one process is not hidden by the other."""
    slopes = {}
    for name in sorted({name for s in samples for name in s["by_name"]}):
        own = [{**s, "rss_mib": s["by_name"][name]} for s in samples if name in s["by_name"]]
        slopes[name] = slope_mib_per_h([s for s in floor(own, window_min) if s["audio_min"] >= after_min])
    return slopes


def speech(minutes: float, wav: str) -> bytes:
    """`minutes` of the file repeated, cut at a 100 ms chunk, then silence to close the last turn."""
    one = pcm24k(wav)
    size = round(minutes * 600) * 4800  # whole 100 ms chunks of 24 kHz pcm16
    return (one * (size // len(one) + 1))[:size] + silence(1500)


def plot(samples: list[dict[str, Any]], floors: list[dict[str, Any]], minutes: float, model: str) -> Any:
    fig, axes = figure(f"Server memory, one transcription session ({model})", "audio streamed (min)", "RSS (MiB)")
    x = [s["audio_min"] for s in samples]
    axes.plot(x, [s["rss_mib"] for s in samples], color="black", label="server tree")
    for name in sorted({n for s in samples for n in s["by_name"]}):
        axes.plot(x, [s["by_name"].get(name, 0.0) for s in samples], linewidth=1, label=name)
    axes.plot([s["audio_min"] for s in floors], [s["rss_mib"] for s in floors], "v", color="black", label="floor")
    axes.axvline(minutes / 2, color="grey", linestyle=":", label="second half")
    axes.set_ylim(bottom=0)
    axes.legend(loc="center right")
    return fig


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--server-pid", type=int, help="default: the process listening on the URL's port")
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--minutes", type=float, default=30, help="audio to stream")
    parser.add_argument("--speed", type=float, default=10, help="x real time")
    parser.add_argument("--wav", default="lecture_60s.wav")
    parser.add_argument("--drain-timeout-s", type=float, default=600, help="wait this long for the last transcripts")
    parser.add_argument("--window-min", type=float, default=1.0, help="audio minutes per floor sample")
    parser.add_argument("--sample-s", type=float, default=0.25, help="seconds between samples of the RSS")
    parser.add_argument("--settle-min", type=float, default=5, help="audio minutes before the slope of each process")
    parser.add_argument("--flat-mib-per-h", type=float, default=20, help="a second-half slope under this is flat")
    args = parser.parse_args()
    server = ServerProcess.find(args.url, args.server_pid)
    await warm_up(args.url, args.model)
    await asyncio.sleep(2)  # the warm-up's last records and jobs settle
    session = Session(args.url, args.model, speech(args.minutes, args.wav), speed=args.speed)
    samples: list[dict[str, Any]] = []
    began = time.monotonic()

    def sample() -> None:
        by_name = {name: round(mib, 1) for name, mib in server.rss_mib_by_name().items()}
        samples.append(
            {
                "t_s": round(time.monotonic() - began, 1),
                "audio_min": round(session.audio_s / 60, 3),
                "rss_mib": round(sum(by_name.values()), 1),
                "completed": session.completed,
                "by_name": by_name,
            }
        )

    sampler = asyncio.create_task(sample_every(args.sample_s, sample))
    await session.run(drain_timeout_s=args.drain_timeout_s)
    sampler.cancel()
    sample()  # the end: every transcript in (or the drain timed out)
    # the halves of the stream; samples while draining (all audio sent) would pile up at its last minute
    streaming = [s for s in samples if s["audio_min"] < args.minutes]
    floors = floor(streaming, args.window_min)
    first = slope_mib_per_h([s for s in floors if s["audio_min"] <= args.minutes / 2])
    second = slope_mib_per_h([s for s in floors if s["audio_min"] > args.minutes / 2])
    # a leak grows as fast in the second half as in the first; a warm-up or a cache filling up slows down
    grows = second is not None and second > args.flat_mib_per_h and (first is None or second >= first / 2)
    turns = list(session.turns.values())
    summary = {
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_peak_mib": max(s["rss_mib"] for s in samples),
        "rss_end_mib": samples[-1]["rss_mib"],
        "rss_start_by_name": samples[0]["by_name"],
        "rss_end_by_name": samples[-1]["by_name"],
        "floor_slope_first_half_mib_per_h": first,
        "floor_slope_second_half_mib_per_h": second,
        "grows_without_bound": grows,
        "floor_slope_by_process_mib_per_h": slopes_by_process(streaming, args.window_min, args.settle_min),
        "turns": len(turns),
        "completed": session.completed,
        "pending_at_end": sum(not t.done for t in turns),
        "errors": session.errors,
        "wall_s": samples[-1]["t_s"],
    }
    verdict = "grows without bound" if grows else "bounded"
    print(
        f"RSS MiB start {summary['rss_start_mib']:.0f}  peak {summary['rss_peak_mib']:.0f}  "
        f"end {summary['rss_end_mib']:.0f}; floor slope MiB/session-hour first half {first}, second half {second}: "
        f"{verdict}; {session.completed}/{len(turns)} turns transcribed in {summary['wall_s']:.0f} s; after "
        f"{args.settle_min:g} min, by process: {summary['floor_slope_by_process_mib_per_h']}"
    )
    save(
        "memory_soak",
        {**summary, "samples": samples},
        plot(samples, floors, args.minutes, args.model),
        model=args.model,
        wav=args.wav,
        minutes=args.minutes,
        speed=args.speed,
        window_min=args.window_min,
        sample_s=args.sample_s,
        settle_min=args.settle_min,
        flat_mib_per_h=args.flat_mib_per_h,
    )


if __name__ == "__main__":
    asyncio.run(main())
