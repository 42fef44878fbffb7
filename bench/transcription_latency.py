"""Transcription latency: from `speech_stopped` to `...transcription.completed`, measured by a client.

Drives a running Vocalis (`vocalis serve`) exactly as a client would: the official SDK, the shared speech paced
in real time in 100 ms appends. Prints a table and writes bench/results/transcription_latency_silence<N>ms.json.

    .venv/bin/python bench/transcription_latency.py --url ws://127.0.0.1:8000/v1 --runs 5
"""

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path

from openai import AsyncOpenAI

from tests.realtime_client import chunks, pcm24k, silence

RESULTS = Path(__file__).parent / "results"
COMPLETED = "conversation.item.input_audio_transcription.completed"


async def one_run(url: str, model: str, wav: str, silence_ms: int) -> list[dict[str, float]]:
    """Latencies of every turn of one streamed file."""
    client = AsyncOpenAI(api_key="bench", base_url=url.replace("ws", "http", 1), websocket_base_url=url)
    turns: dict[str, dict[str, float]] = {}
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session = {
            "type": "transcription",
            "audio": {
                "input": {
                    "transcription": {"model": model},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
                }
            },
        }
        await conn.session.update(session=session)

        async def send() -> None:
            for chunk in chunks(pcm24k(wav) + silence(silence_ms + 1000)):
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        while not (sender.done() and turns and all("completed" in t for t in turns.values())):
            try:
                event = await asyncio.wait_for(conn.recv(), 0.25)
            except TimeoutError:
                continue
            now = time.perf_counter()
            if event.type == "input_audio_buffer.speech_stopped":
                turns[event.item_id] = {"stopped": now}
            elif event.type == COMPLETED:
                turns[event.item_id]["completed"] = now
        await sender
    return [{"latency_s": t["completed"] - t["stopped"]} for t in turns.values()]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--wav", default="jfk.wav")
    parser.add_argument("--silence-ms", type=int, default=1500, help="1500 keeps jfk.wav one 11 s turn")
    args = parser.parse_args()
    results = []
    print(f"{'model':<18}{'file':<18}{'turns':>6}{'p50 s':>9}{'min s':>9}{'max s':>9}")
    for model in args.models:
        latencies: list[float] = []
        for _ in range(args.runs):
            latencies += [t["latency_s"] for t in await one_run(args.url, model, args.wav, args.silence_ms)]
        row = {
            "model": model,
            "file": args.wav,
            "runs": args.runs,
            "silence_duration_ms": args.silence_ms,
            "latencies_s": [round(x, 4) for x in latencies],
            "p50_s": round(statistics.median(latencies), 4),
        }
        results.append(row)
        print(
            f"{model:<18}{args.wav:<18}{len(latencies):>6}{row['p50_s']:>9.3f}{min(latencies):>9.3f}{max(latencies):>9.3f}"
        )
    out = RESULTS / f"transcription_latency_silence{args.silence_ms}ms.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "cpus": __import__("os").cpu_count()}
    out.write_text(
        json.dumps(
            {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine, "results": results},
            indent=2,
        )
    )
    print(f"saved {out}")


if __name__ == "__main__":
    asyncio.run(main())
