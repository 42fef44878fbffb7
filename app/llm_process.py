"""The bundled LLM's llama.cpp server in a child process of the LLM worker.

Loading it holds the GIL for the whole load (xllamacpp, about 10 s for the 1.5B model on two cores): in `serve`'s
process, where it loads when the first conversation needs it, that would stall every live session. The child gets
its parameters on stdin, answers with its URL and API key on stdout (a pipe: the key stays private), and exits when
its stdin closes, which is also what happens when the worker dies.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from app.children import die_with_parent
from app.logging import configure
from app.settings import Settings
from domain.jobs import GenerateJob
from handlers.llm import BundledLlmServer, ChatClient, Delta

log = structlog.get_logger(__name__)

STOP_S = 10.0


class BundledLlmProcess:
    """Start the child and wait until its model is loaded (seconds: call it in a thread from async code)."""

    def __init__(self, name: str, cache_dir: Path, *, n_ctx: int, threads: int, gpu_layers: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "app.llm_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches `serve`, which stops it in order
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        request = {"name": name, "cache_dir": str(cache_dir), "n_ctx": n_ctx, "threads": threads, "gpu": gpu_layers}
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            self._process.wait()
            raise RuntimeError(f"the bundled LLM's process exited with {self._process.returncode} (its log says why)")
        started = json.loads(answer)
        self.base_url: str = started["base_url"]
        self.api_key: str = started["api_key"]

    def stop(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class BundledChat:
    """The bundled model as a chat endpoint: its process starts at `start()` or at the first job, once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._starting: asyncio.Future[BundledLlmProcess] | None = None

    def start(self) -> "asyncio.Future[BundledLlmProcess]":
        if self._starting is None:
            s = self.settings
            self._starting = asyncio.ensure_future(
                asyncio.to_thread(
                    BundledLlmProcess,
                    s.llm_model,
                    s.models_path,
                    n_ctx=s.llm_context,
                    threads=s.llm_threads,
                    gpu_layers=s.llm_gpu_layers,
                )
            )
            self._starting.add_done_callback(self._started)
        return self._starting

    def _started(self, starting: "asyncio.Future[BundledLlmProcess]") -> None:
        if not starting.cancelled() and (error := starting.exception()) is not None:
            log.error("llm.server.failed", error=str(error))
            self._starting = None  # the next job tries again, and fails its response with the reason meanwhile

    async def stream(self, job: GenerateJob) -> AsyncIterator[Delta]:
        process = await asyncio.shield(self.start())  # a cancelled answer leaves the start to the next one
        async for delta in ChatClient(process.base_url, process.api_key).stream(job):
            yield delta

    def stop(self) -> None:
        """Stop the process, if it started; one still starting ends with this one (its stdin closes)."""
        starting = self._starting
        if starting is not None and starting.done() and not starting.cancelled() and starting.exception() is None:
            starting.result().stop()


def main() -> None:
    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format)
    request = json.loads(sys.stdin.readline())
    server = BundledLlmServer(
        request["name"],
        Path(request["cache_dir"]),
        n_ctx=request["n_ctx"],
        threads=request["threads"],
        gpu_layers=request["gpu"],
    )
    print(json.dumps({"base_url": server.base_url, "api_key": server.api_key}), flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nobody reads the pipe now: a full one would block llama.cpp
    sys.stdin.read()  # until the worker closes it, or dies
    server.stop()


if __name__ == "__main__":
    main()
