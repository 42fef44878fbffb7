"""Edge and bus overhead: the round trip of a client event that needs no model, measured by a client.

Drives a running Vocalis (`vocalis serve`) exactly as a client would: the official SDK, in transcription sessions
(no LLM). Every session sends `session.update` and `input_audio_buffer.clear` by turns, each after the reply to
the one before, and times each from the send to its reply (`session.updated`, `input_audio_buffer.cleared`): the
edge, the log on JetStream, the reducer and back, with no model in the way. Run at several numbers of concurrent
sessions; prints p50 and p99 per event type and writes bench/results/edge_overhead.json and .png.

    .venv/bin/python -m bench.edge_overhead --url ws://127.0.0.1:8000/v1 --sessions 1 10 50 --requests 200
"""

import argparse
import asyncio
import json
import time
from typing import Any

from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from bench.report import figure, percentile, save

REPLIES = {"session.update": "session.updated", "input_audio_buffer.clear": "input_audio_buffer.cleared"}
WARMUP = 5  # round trips per event type and session left out: the first ones pay for setting the session up
# Manual commits: nothing else (VAD, transcription) runs in the session while it is measured.
SESSION = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}


async def round_trip(conn: AsyncRealtimeConnection, event: dict[str, Any]) -> float:
    """Seconds from sending `event` to receiving its reply."""
    start = time.perf_counter()
    await conn.send(event)  # type: ignore[arg-type]  # a plain dict is sent as it is
    while True:
        # Raw bytes and json, not the SDK's pydantic models: the client's parsing is not what is measured.
        reply = json.loads(await conn.recv_bytes())
        if reply["type"] == REPLIES[event["type"]]:
            return time.perf_counter() - start
        if reply["type"] == "error":
            raise RuntimeError(f"{event['type']}: {reply['error']}")


async def one_session(url: str, requests: int, ready: asyncio.Barrier) -> dict[str, list[float]]:
    """Round trips of one session, per event type, after every session has connected."""
    client = AsyncOpenAI(api_key="bench", base_url=url.replace("ws", "http", 1), websocket_base_url=url)
    times: dict[str, list[float]] = {kind: [] for kind in REPLIES}
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv_bytes()  # session.created
        await ready.wait()  # so that the sessions really overlap
        for i in range(WARMUP + requests):
            for kind in REPLIES:
                body = {"session": SESSION} if kind == "session.update" else {}
                elapsed = await round_trip(conn, {"type": kind, "event_id": f"evt_{kind}_{i}", **body})
                if i >= WARMUP:
                    times[kind].append(elapsed)
    return times


async def run(url: str, sessions: int, requests: int) -> tuple[dict[str, list[float]], float]:
    """Every session's round trips pooled per event type, and the wall time of the whole run."""
    ready = asyncio.Barrier(sessions)
    start = time.perf_counter()
    per_session = await asyncio.gather(*(one_session(url, requests, ready) for _ in range(sessions)))
    return {kind: [t for s in per_session for t in s[kind]] for kind in REPLIES}, time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 50], help="concurrent sessions")
    parser.add_argument("--requests", type=int, default=200, help="round trips per event type and session")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    print(f"{'sessions':>8}  {'event':<26}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for sessions in args.sessions:
        times, wall_s = await run(args.url, sessions, args.requests)
        for kind, values in times.items():
            ms = [t * 1000 for t in values]
            row = {
                "sessions": sessions,
                "event": kind,
                "reply": REPLIES[kind],
                "round_trips": len(ms),
                "p50_ms": round(percentile(ms, 50), 3),
                "p99_ms": round(percentile(ms, 99), 3),
                "max_ms": round(max(ms), 3),
                "wall_s": round(wall_s, 2),  # the whole run, connecting included
            }
            results.append(row)
            stats = "".join(f"{row[k]:>9.2f}" for k in ("p50_ms", "p99_ms", "max_ms"))
            print(f"{sessions:>8}  {kind:<26}{len(ms):>7}{stats}")
    fig, axes = figure("Round trip of a client event that needs no model", "concurrent sessions", "ms")
    for kind, color in zip(REPLIES, ("tab:blue", "tab:orange"), strict=True):
        rows = [r for r in results if r["event"] == kind]
        for stat, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
            x, y = [r["sessions"] for r in rows], [r[stat] for r in rows]
            axes.plot(x, y, style, color=color, label=f"{kind} {stat[:3]}")
    axes.set_xscale("log")
    axes.set_yscale("log")  # from one session to fifty, the round trip grows by an order of magnitude
    axes.set_xticks(args.sessions, [str(n) for n in args.sessions])
    axes.legend()
    save("edge_overhead", results, fig, url=args.url, requests=args.requests, warmup=WARMUP)


if __name__ == "__main__":
    asyncio.run(main())
