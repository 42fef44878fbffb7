"""Overload: many more live transcription sessions than the machine can serve, and what each of them experienced.

`--sessions` sessions (default 50; the official SDK, `?intent=transcription`, server VAD, live partials on) start
`--stagger-s` apart and each streams `--wav` in real time, `--repeat` times over. A session the server refuses gets
HTTP 503 before the upgrade and is counted as refused. For every session that got in: its turns, how many were
transcribed or failed, and its latency (speech_stopped -> ...transcription.completed: p50, p95, max); then how
many jobs were still queued `--settle-s` after the streaming ended (the work left for nobody).

Drives a running `vocalis serve`. Prints one line per session and a summary, and writes bench/results/overload.json.

    .venv/bin/python -m bench.overload --url ws://127.0.0.1:8000/v1 --sessions 50
"""

import argparse
import asyncio
import time
from typing import Any

import nats

from bench.concurrency import Session, pct, show, warm_up
from bench.report import save
from tests.realtime_client import pcm24k, silence


class Visitor(Session):
    """A session that may be refused at the door."""

    refused: str | None = None

    async def visit(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            await self.run(drain_timeout_s=120)
        except Exception as error:  # the SDK's connect raises on an HTTP answer instead of the upgrade
            if "503" not in str(error):
                raise
            self.refused = str(error)

    def report(self) -> dict[str, Any]:
        turns = list(self.turns.values())
        latencies = [t.completed - t.stopped for t in turns if t.completed is not None and t.stopped is not None]
        return {
            "refused": self.refused is not None,
            "turns": len(turns),
            "transcribed": len(latencies),
            "failed": sum(t.failed for t in turns),
            "unanswered": sum(not t.done for t in turns),
            "p50_s": pct(latencies, 50),
            "p95_s": pct(latencies, 95),
            "max_s": pct(latencies, 100),
        }


async def queued_jobs(nats_url: str) -> dict[str, int]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        return {
            kind: (await js.consumer_info("VOCALIS_JOBS", kind)).num_pending or 0 for kind in ("stt", "stt-partial")
        }
    finally:
        await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--nats-url", help="the server's NATS (its data dir's nats.url), to count the jobs left")
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--stagger-s", type=float, default=0.2)
    parser.add_argument("--wav", default="lecture_60s.wav")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--settle-s", type=float, default=10.0)
    args = parser.parse_args()
    pcm = (pcm24k(args.wav) + silence(1500)) * args.repeat
    await warm_up(args.url, args.model)
    visitors = [Visitor(args.url, args.model, pcm) for _ in range(args.sessions)]
    started = time.monotonic()
    await asyncio.gather(*(v.visit(i * args.stagger_s) for i, v in enumerate(visitors)))
    wall_s = time.monotonic() - started
    await asyncio.sleep(args.settle_s)
    left = await queued_jobs(args.nats_url) if args.nats_url else None
    rows = [v.report() for v in visitors]
    print(f"{'#':>3}{'refused':>9}{'turns':>7}{'done':>6}{'failed':>8}{'open':>6}{'p50 s':>8}{'p95 s':>8}{'max s':>8}")
    for i, row in enumerate(rows):
        print(
            f"{i:>3}{'yes' if row['refused'] else '':>9}{row['turns']:>7}{row['transcribed']:>6}{row['failed']:>8}"
            f"{row['unanswered']:>6}{show(row['p50_s'], 8)}{show(row['p95_s'], 8)}{show(row['max_s'], 8)}"
        )
    admitted = [r for r in rows if not r["refused"]]
    all_p95 = [r["p95_s"] for r in admitted if r["p95_s"] is not None]
    summary = {
        "sessions": args.sessions,
        "refused": sum(r["refused"] for r in rows),
        "turns": sum(r["turns"] for r in admitted),
        "transcribed": sum(r["transcribed"] for r in admitted),
        "failed": sum(r["failed"] for r in admitted),
        "unanswered": sum(r["unanswered"] for r in admitted),
        "worst_session_p95_s": max(all_p95, default=None),
        "worst_turn_s": max((r["max_s"] for r in admitted if r["max_s"] is not None), default=None),
        "jobs_left_after_settle": left,
        "wall_s": round(wall_s, 1),
    }
    print(summary)
    save("overload", rows, None, summary=summary, model=args.model, wav=args.wav, repeat=args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
