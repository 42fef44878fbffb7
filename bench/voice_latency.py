"""Voice to voice: from `speech_stopped` to the first audio delta of the answer, split by stage.

Starts `vocalis serve` (its own data directory and NATS) once per LLM: the scripted fake LLM of the tests
(instant replies) and the bundled model. Streams jfk.wav in real time as one turn (silence_duration_ms 1500) and
reads the stages from the session's records on the log:

    transcription      speech_stopped -> the transcript the answer used (zero when it was ready before)
    first token        the transcript -> the LLM's first token (llm.delta)
    first clause       the first token -> the first clause's first audio (tts.audio)
    send               that audio -> the response.output_audio.delta on the log

    .venv/bin/python -m bench.voice_latency --runs 5
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from app.bus import Bus
from app.log_reader import read_session
from app.runner import free_port
from bench.report import figure, save
from tests.fake_llm import FakeLlm
from tests.realtime_client import chunks, pcm24k, silence

STAGES = (
    ("transcription_s", "transcription"),
    ("first_token_s", "first token"),
    ("first_clause_s", "first clause spoken"),
    ("send_s", "sent"),
)
ANSWER = "Sure. Kennedy asked what you can do for your country, not the other way round."


async def one_turn(url: str) -> tuple[str, float]:
    """A spoken turn; the session id and the client's time from speech_stopped to the first audio delta."""
    client = AsyncOpenAI(api_key="bench", base_url=url.replace("ws", "http", 1), websocket_base_url=url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        session_id = (await conn.recv()).session.id
        detection = {"type": "server_vad", "silence_duration_ms": 1500}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})

        async def send() -> None:
            for chunk in chunks(pcm24k("jfk.wav") + silence(2500)):
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        stopped = None
        async for event in conn:
            if event.type == "input_audio_buffer.speech_stopped":
                stopped = time.perf_counter()
            elif event.type == "response.output_audio.delta" and stopped is not None:
                first_audio = time.perf_counter() - stopped
                await conn.response.cancel()
                break
        sender.cancel()
    return session_id, first_audio


async def stages(bus: Bus, session_id: str) -> dict[str, float]:
    for _ in range(50):
        entries = (await read_session(bus, session_id)).entries
        at: dict[str, int] = {}
        transcripts: list[int] = []
        for entry in entries:
            kind = json.loads(entry.data).get("kind") or json.loads(entry.data).get("type")
            if kind in ("stt.completed", "stt.words"):  # a whole item's transcript, or a decode of a VAD turn
                transcripts.append(entry.at_ms)
            key = {
                "input_audio_buffer.speech_stopped": "stopped",
                "llm.delta": "token",
                "tts.audio": "audio",
                "response.output_audio.delta": "sent",
            }.get(kind)
            if key and key not in at:
                at[key] = entry.at_ms
        if len(at) == 4:
            # The transcript the answer used is the last decode before its first token; the closing decode starts
            # in the turn's silence and may be back before speech_stopped: then this stage is zero.
            used = max((t for t in transcripts if t <= at["token"]), default=at["stopped"])
            at["transcript"] = max(used, at["stopped"])
            return {
                "transcription_s": (at["transcript"] - at["stopped"]) / 1000,
                "first_token_s": (at["token"] - at["transcript"]) / 1000,
                "first_clause_s": (at["audio"] - at["token"]) / 1000,
                "send_s": (at["sent"] - at["audio"]) / 1000,
            }
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the log of {session_id} lacks a stage: {sorted(at)}")


async def measure(llm: str, runs: int, fake: FakeLlm | None) -> dict[str, object]:
    port, nats_port = free_port(), free_port()
    env = os.environ | {"VOCALIS_PORT": str(port), "VOCALIS_NATS_PORT": str(nats_port), "VOCALIS_LOG_FORMAT": "json"}
    if fake is not None:
        env["VOCALIS_LLM_BASE_URL"] = fake.base_url
    with tempfile.TemporaryDirectory() as data:
        env["VOCALIS_DATA_DIR"] = data
        env.setdefault("VOCALIS_MODEL_DIR", str(Path.home() / ".local/share/vocalis/models"))
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(1200):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/live")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            await asyncio.sleep(15 if fake is None else 3)  # the workers load their models
            bus = await Bus.connect((Path(data) / "nats.url").read_text(), "vocalis", "bench")  # with its password
            rows = []
            for _ in range(runs + 1):  # the first run warms up and is not counted
                if fake is not None:
                    fake.reply(ANSWER)
                session_id, total = await one_turn(f"ws://127.0.0.1:{port}/v1")
                rows.append({"total_s": total, **await stages(bus, session_id)})
            await bus.close()
        finally:
            server.send_signal(signal.SIGINT)
            await asyncio.wait_for(server.wait(), 60)
    rows = rows[1:]
    medians = {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
    return {"llm": llm, "runs": runs, "median": medians, "runs_detail": rows}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llms", nargs="+", default=["fake", "bundled"], choices=["fake", "bundled"])
    args = parser.parse_args()
    results = []
    for llm in args.llms:
        if llm == "fake":
            async with FakeLlm() as fake:
                results.append(await measure("fake (instant)", args.runs, fake))
        else:
            results.append(await measure("bundled qwen2.5-coder-1.5b", args.runs, None))
    print(f"{'LLM':<30}{'total':>8}{'stt':>8}{'token':>8}{'clause':>8}{'send':>8}   (medians, seconds)")
    for r in results:
        m = r["median"]
        print(
            f"{r['llm']:<30}{m['total_s']:>8.3f}{m['transcription_s']:>8.3f}{m['first_token_s']:>8.3f}"
            f"{m['first_clause_s']:>8.3f}{m['send_s']:>8.3f}"
        )
    save("voice_latency", results, plot(results), runs=args.runs)


def plot(results: list[dict[str, Any]]) -> Any:
    """One stacked bar per LLM: the median of each stage."""
    fig, axes = figure("Voice to voice: speech_stopped -> first audio delta (medians)", "", "seconds")
    names = [r["llm"] for r in results]
    bottom = [0.0] * len(results)
    for key, label in STAGES:
        values = [r["median"][key] for r in results]
        axes.bar(names, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.legend()
    return fig


if __name__ == "__main__":
    asyncio.run(main())
