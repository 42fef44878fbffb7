"""A server that is safe to start and stop: its nats-server dies with it, a port or data directory in use is a clear
error (never a server shared by accident), and tools that cannot reach NATS say so and exit."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import psutil
import pytest

from app import runner
from app.bus import Bus
from app.settings import Settings
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL

ROOT = Path(__file__).resolve().parent.parent


def _vocalis(data_dir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    inherited = {k: v for k, v in os.environ.items() if k != "VOCALIS_NATS_URL"}
    environment = inherited | {"VOCALIS_DATA_DIR": str(data_dir), "VOCALIS_NATS_PORT": "0"} | env
    return subprocess.Popen(
        [sys.executable, "-m", "app", *args],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _nats_child(process: subprocess.Popen[str]) -> psutil.Process | None:
    children = psutil.Process(process.pid).children()
    return next((c for c in children if "nats-server" in c.name()), None)


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def test_the_embedded_nats_server_dies_with_a_killed_serve(tmp_path: Path) -> None:
    serve = _vocalis(tmp_path, "serve")
    try:
        nats = _wait_for(lambda: _nats_child(serve))
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=10)
        _wait_for(lambda: not nats.is_running() or nats.status() == psutil.STATUS_ZOMBIE, seconds=10)
    finally:
        _kill(serve)


def test_an_embedded_nats_port_in_use_is_an_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = _vocalis(tmp_path, "serve", VOCALIS_NATS_PORT=str(port))
        try:
            _, err = serve.communicate(timeout=60)
        finally:
            _kill(serve)
    assert serve.returncode == 1
    assert f"port {port} is in use" in err and "Traceback" not in err


def test_an_http_port_in_use_is_found_before_any_model_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = _vocalis(tmp_path, "serve", VOCALIS_PORT=str(port), VOCALIS_LOG_FORMAT="json")
        try:
            _, err = serve.communicate(timeout=60)
        finally:
            _kill(serve)
    assert serve.returncode == 1
    assert f"the HTTP port {port} is in use" in err and "VOCALIS_PORT" in err
    assert "model" not in err and "nats.started" not in err, "it stopped before starting anything"


def test_a_data_dir_is_held_by_the_serve_that_uses_it(tmp_path: Path) -> None:
    first = _vocalis(tmp_path, "serve")
    try:
        _wait_for(lambda: (tmp_path / "nats.url").exists())
        url = (tmp_path / "nats.url").read_text()
        second = _vocalis(tmp_path, "serve", VOCALIS_PORT=str(runner.free_port()))  # not the first one's port
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"the data directory {tmp_path} is in use by vocalis serve (pid {first.pid})" in err
        # The log tools find the first one's embedded server through the data directory (its port was chosen freely).
        sessions = _vocalis(tmp_path, "sessions")
        listed, err = sessions.communicate(timeout=60)
        assert sessions.returncode == 0, err
        assert listed.split() == ["session", "started", "(UTC)", "mode", "duration", "turns", "state"], listed
        assert url.startswith("nats://vocalis:") and oct((tmp_path / "nats.url").stat().st_mode)[-3:] == "600"
    finally:
        _kill(first)


def test_log_tools_that_cannot_reach_nats_say_so_and_exit(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{runner.free_port()}"
    started = time.monotonic()
    tool = _vocalis(tmp_path, "sessions", VOCALIS_NATS_URL=url)
    _, err = tool.communicate(timeout=60)
    assert tool.returncode == 1
    assert err.strip() == f"cannot reach NATS at {url}: connection refused"
    assert time.monotonic() - started < 15


async def test_a_comma_separated_url_lists_servers_and_any_live_one_serves(nats_url: str) -> None:
    dead = f"nats://127.0.0.1:{runner.free_port()}"
    bus = await Bus.connect(f"{dead}, {nats_url}", "vocalis", "test-comma", attempts=1)
    try:
        assert bus.nc.is_connected
    finally:
        await bus.close()


def test_a_worker_waits_for_nats_with_one_line_per_attempt(tmp_path: Path) -> None:
    port = runner.free_port()
    log = tmp_path / "worker.log"
    with log.open("w") as written:
        environment = {k: v for k, v in os.environ.items() if k != "VOCALIS_NATS_URL"} | {
            "VOCALIS_NATS_URL": f"nats://127.0.0.1:{port}",
            "VOCALIS_LOG_FORMAT": "json",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "analytics"], env=environment, cwd=ROOT, stderr=written, text=True
        )

    def attempts() -> list[str]:
        return [line for line in log.read_text().splitlines() if "nats.unreachable" in line]

    try:
        _wait_for(lambda: len(attempts()) >= 2, 60)  # a loaded machine may take seconds to start Python
        assert worker.poll() is None, "a worker keeps trying"
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=30)
    assert len(attempts()) >= 2 and "Traceback" not in log.read_text()
    assert all("connection refused" in line for line in attempts())


async def test_serve_says_ready_once_its_workers_are_up_and_logs_only_json(tmp_path: Path) -> None:
    port = runner.free_port()
    env = os.environ | {
        "VOCALIS_DATA_DIR": str(tmp_path),
        "VOCALIS_NATS_PORT": "0",
        "VOCALIS_PORT": str(port),
        "VOCALIS_LOG_FORMAT": "json",
        "VOCALIS_MODEL_DIR": str(MODEL_CACHE),
        "VOCALIS_STT_MODEL": TEST_STT_MODEL,
        "VOCALIS_LLM_MODEL": "qwen2.5-coder-0.5b",
    }
    env.pop("VOCALIS_NATS_URL", None)
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "serve", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(240):
            assert serve.stderr is not None
            while not any('"event": "ready"' in line for line in lines):
                line = (await serve.stderr.readline()).decode()
                assert line, f"serve exited before it was ready: {lines[-5:]}"
                lines.append(line)
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{port}/ready")
        assert ready.status_code == 200 and all(n >= 1 for n in ready.json()["workers"].values()), ready.text
        announced = json.loads(lines[-1])
        assert announced["url"] == f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        serve.send_signal(signal.SIGINT)
        _, rest = await serve.communicate()
    lines += rest.decode().splitlines()
    for line in filter(str.strip, lines):
        json.loads(line)  # every line, uvicorn's and the libraries' included
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize("after_s", [0.2, 0.6, 2.0])  # while importing, while starting NATS, while loading models
def test_ctrl_c_at_any_moment_of_the_start_leaves_quietly(tmp_path: Path, after_s: float) -> None:
    serve = _vocalis(tmp_path, "serve", VOCALIS_LOG_FORMAT="json")
    time.sleep(after_s)
    serve.send_signal(signal.SIGINT)
    out, err = serve.communicate(timeout=120)
    assert "Traceback" not in out + err, err[-3000:]
    assert serve.returncode in (0, 130, -signal.SIGINT)


async def test_an_edge_that_lost_the_cancellation_of_a_ctrl_c_while_starting_stops_instead_of_serving(
    nats_url: str,
) -> None:
    async def start() -> None:
        asyncio.current_task().cancel()  # what asyncio.run's Ctrl-C handler does
        with contextlib.suppress(asyncio.CancelledError):  # lost, as Python 3.11's wait_for loses one at times
            await asyncio.sleep(0)
        await runner.run_edge(Settings(port=runner.free_port()), nats_url)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(start())


async def test_the_embedded_nats_refuses_a_client_without_its_password(nats_url: str) -> None:
    assert nats_url.startswith("nats://vocalis:")
    bare = "nats://" + nats_url.split("@", 1)[1]
    with pytest.raises(Exception, match=r"(?i)authoriz"):
        await nats.connect(bare, allow_reconnect=False, connect_timeout=5)
    bus = await Bus.connect(nats_url, "vocalis", "test-with-password", attempts=1)
    await bus.close()
