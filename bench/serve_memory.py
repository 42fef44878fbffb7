"""What `vocalis serve` holds by VOCALIS_WORKERS, and its first answer with the models loaded on demand.

Starts `serve` (its own data directory and NATS) once per configuration and samples the RSS of its process tree
(nats-server and the bundled LLM's process included) every 0.2 s: the peak until `/ready` and a few idle seconds
after it, then, for a configuration that converses, through two spoken turns (jfk.wav in real time, as in
bench.voice_latency): the first answer waits for the LLM and Kokoro that its session's opening started loading.

    .venv/bin/python -m bench.serve_memory
"""

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.runner import free_port
from bench.concurrency import ServerProcess, sample_every
from bench.report import save
from bench.voice_latency import one_turn
from tests.server_process import until_answering

CONFIGURATIONS = (("stt,llm,tts,analytics", True), ("stt", False))


async def measure(workers: str, converse: bool) -> dict[str, Any]:
    port = free_port()
    env = os.environ | {
        "VOCALIS_PORT": str(port),
        "VOCALIS_NATS_PORT": "0",
        "VOCALIS_LOG_FORMAT": "json",
        "VOCALIS_WORKERS": workers,
    }
    env.setdefault("VOCALIS_MODEL_DIR", str(Path.home() / ".local/share/vocalis/models"))
    with tempfile.TemporaryDirectory() as data:
        started = time.monotonic()
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve", "--data-dir", data, env=env, stderr=asyncio.subprocess.DEVNULL
        )
        tree = ServerProcess(server.pid)
        peak = 0.0

        def track() -> None:
            nonlocal peak
            peak = max(peak, tree.rss_mib())

        sampler = asyncio.create_task(sample_every(0.2, track))
        row: dict[str, Any] = {"workers": workers}
        try:
            await until_answering(port, server, "/ready")
            row["ready_s"] = round(time.monotonic() - started, 1)
            await asyncio.sleep(5)
            row |= {"ready_mib": round(tree.rss_mib()), "ready_peak_mib": round(peak)}
            if converse:
                url = f"ws://127.0.0.1:{port}/v1"
                _, first = await one_turn(url, "server_vad")
                _, second = await one_turn(url, "server_vad")
                await asyncio.sleep(2)
                row |= {
                    "first_answer_s": round(first, 2),
                    "second_answer_s": round(second, 2),
                    "conversed_mib": round(tree.rss_mib()),
                    "conversed_peak_mib": round(peak),
                    "by_process_mib": {name: round(mib) for name, mib in tree.rss_mib_by_name().items()},
                }
        finally:
            sampler.cancel()
            server.send_signal(signal.SIGINT)
            await asyncio.wait_for(server.wait(), 60)
    return row


async def main() -> None:
    rows = [await measure(workers, converse) for workers, converse in CONFIGURATIONS]
    for row in rows:
        print(row)
    save("serve_memory", rows)


if __name__ == "__main__":
    asyncio.run(main())
