"""The REST audio API's cost over the models: jfk.wav transcribed through `/v1/audio/transcriptions` of a
`vocalis serve` (whisper-base; the upload decoded at the edge, the request and audio recorded, the job through the
work queue, the segments back through the log) against the same decode in this process, and the first byte and the
whole of a spoken sentence from `/v1/audio/speech`.

Starts its own `serve` (its own data directory and NATS; STT and TTS workers only). On this project's 2-core CPU
the two share the cores with whatever else runs, so compare medians of runs made back to back.

    .venv/bin/python -m bench.rest_audio [--runs 5]
"""

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from openai import AsyncOpenAI

from app import runner
from app.settings import Settings
from bench.report import save
from handlers.input_audio.decode import decode_file
from handlers.stt import FileOptions
from tests.server_process import until_answering

JFK = Path(__file__).resolve().parent.parent / "tests" / "data" / "jfk.wav"
MODEL = "whisper-base"
SENTENCE = "Ask not what your country can do for you, ask what you can do for your country."


def direct(runs: int) -> list[float]:
    """Seconds for whisper to decode jfk.wav in this process, as the STT worker decodes a REST request."""
    stt = runner.transcriber(Settings(stt_model=MODEL))
    audio = np.frombuffer(decode_file(JFK.read_bytes(), 60), dtype="<i2").astype(np.float32) / 32768
    times = []
    for _ in range(runs + 1):  # the first warms up
        started = time.perf_counter()
        segments, _language = stt.segments(audio, MODEL, FileOptions())
        "".join(segment.text for segment in segments)
        times.append(time.perf_counter() - started)
    return times[1:]


async def over_rest(port: int, runs: int) -> dict[str, list[float]]:
    client = AsyncOpenAI(api_key="bench", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    found: dict[str, list[float]] = {"transcription_s": [], "speech_first_byte_s": [], "speech_s": []}
    for run in range(runs + 1):
        started = time.perf_counter()
        await client.audio.transcriptions.create(model="whisper-1", file=JFK)
        if run:
            found["transcription_s"].append(time.perf_counter() - started)
    for run in range(runs + 1):
        started = time.perf_counter()
        first = None
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=SENTENCE, response_format="mp3"
        ) as response:
            async for chunk in response.iter_bytes():
                first = first or (time.perf_counter() - started if chunk else None)
        if run:
            found["speech_first_byte_s"].append(first or float("nan"))
            found["speech_s"].append(time.perf_counter() - started)
    return found


async def main(runs: int) -> None:
    row: dict[str, Any] = {"model": MODEL, "runs": runs, "direct_s": direct(runs)}
    port = runner.free_port()
    env = os.environ | {
        "VOCALIS_PORT": str(port),
        "VOCALIS_NATS_PORT": "0",
        "VOCALIS_LOG_FORMAT": "json",
        "VOCALIS_WORKERS": "stt,tts",
        "VOCALIS_STT_MODEL": MODEL,
    }
    with tempfile.TemporaryDirectory() as data:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve", "--data-dir", data, env=env, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            await until_answering(port, server, "/health")
            row |= await over_rest(port, runs)
        finally:
            server.send_signal(signal.SIGINT)
            await asyncio.wait_for(server.wait(), 60)
    row["medians"] = {key: round(statistics.median(row[key]), 3) for key in row if key.endswith("_s")}
    print(row["medians"])
    save("rest_audio", [row])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
