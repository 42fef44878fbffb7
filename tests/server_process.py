"""A Vocalis server process (`vocalis serve` or `edge`) started by a test or a bench: waiting until it answers, and
stopping it as Ctrl-C does."""

import asyncio
import signal
import subprocess

import httpx


async def until_answering(
    port: int, process: subprocess.Popen[bytes] | asyncio.subprocess.Process, path: str = "/live"
) -> None:
    """Until GET `path` answers 200 (/live: it listens; /health: every worker kind is up); an error if it exits."""
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            exited = process.poll() if isinstance(process, subprocess.Popen) else process.returncode
            assert exited is None, "the server exited"
            try:
                if (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the server did not answer {path}")


def stop_servers(*processes: subprocess.Popen[bytes], signum: int = signal.SIGINT) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
