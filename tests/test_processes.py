"""The parts as separate processes: `vocalis serve` alone (all worker kinds, or some), and an edge with two STT
workers on one NATS."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from app import runner
from app.bus import Bus
from app.log_reader import read_session
from domain import records as rec
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL
from tests.realtime_client import Turns, events_until, pcm24k, sdk, silence, stream, words
from tests.server_process import stop_servers, until_answering

COMPLETED = "conversation.item.input_audio_transcription.completed"


def _vocalis(*args: str, log: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
    environment = (
        os.environ
        | {
            "VOCALIS_MODEL_DIR": str(MODEL_CACHE),
            "VOCALIS_STT_MODEL": TEST_STT_MODEL,
            "VOCALIS_LOG_FORMAT": "json",
            "VOCALIS_NATS_PORT": "0",
            "VOCALIS_LLM_MODEL": "qwen2.5-coder-0.5b",
        }
        | env
    )
    command = [sys.executable, "-m", "app", *args]
    if log is None:
        return subprocess.Popen(command, env=environment, stderr=subprocess.DEVNULL)
    with log.open("wb") as stderr:
        return subprocess.Popen(command, env=environment, stderr=stderr)


def _logged(log: Path) -> list[str]:
    """The events of a JSON log so far (llama.cpp's own lines are not JSON)."""
    lines = log.read_text(errors="replace").splitlines()
    return [json.loads(line)["event"] for line in lines if line.startswith("{")]


def _rss_mib(process: subprocess.Popen[bytes]) -> float:
    """Of the process and its children (nats-server, the bundled LLM's server)."""
    root = psutil.Process(process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def _nats_servers_using(config: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True)
    return found.stdout.split()


async def _transcribe_hello_world(port: int) -> str:
    async with sdk(f"ws://127.0.0.1:{port}/v1").realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await stream(conn, pcm24k("hello_world.wav"))
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, lambda e: e.type == COMPLETED)
    return words(events[-1].transcript)


@pytest.mark.slow
async def test_serve_runs_everything_loads_the_llm_and_kokoro_for_the_first_conversation_and_ctrl_c_stops_it(
    tmp_path: Path,
):
    port = runner.free_port()
    log = tmp_path / "serve.log"
    server = _vocalis("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), log=log)
    try:
        await until_answering(port, server, "/ready")
        assert _nats_servers_using(tmp_path / "data" / "nats.conf"), "an embedded nats-server runs"
        assert (tmp_path / "data" / "jetstream").is_dir()
        assert await _transcribe_hello_world(port) == "hello world"
        assert "llm.server.ready" not in _logged(log) and "tts.model.loading" not in _logged(log), "not loaded yet"
        async with sdk(f"ws://127.0.0.1:{port}/v1").realtime.connect(model="gpt-realtime") as conn:
            manual = {"type": "realtime", "max_output_tokens": 20, "audio": {"input": {"turn_detection": None}}}
            await conn.session.update(session=manual)
            await stream(conn, pcm24k("hello_world.wav"))
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            events = await events_until(conn, lambda e: e.type == "response.done", timeout=180)
        assert events[-1].response.status in ("completed", "incomplete"), events[-1].response
        assert any(e.type == "response.output_audio.delta" for e in events), "Kokoro spoke the answer"
        assert {"llm.server.ready", "tts.model.loading"} <= set(_logged(log))
        children = psutil.Process(server.pid).children(recursive=True)
    finally:
        stop_servers(server)
    assert server.returncode == 0
    assert not any(child.is_running() for child in children), "Ctrl-C stops nats-server and the LLM's process too"


@pytest.mark.slow
async def test_serve_that_only_transcribes_never_loads_the_llm_or_kokoro(tmp_path: Path):
    port = runner.free_port()
    log = tmp_path / "serve.log"
    server = _vocalis(
        "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), log=log, VOCALIS_WORKERS="stt"
    )
    try:
        await until_answering(port, server, "/ready")
        for _ in range(50):  # the `ready` line follows within a look at the workers
            if "ready" in _logged(log):
                break
            await asyncio.sleep(0.1)
        assert "ready" in _logged(log), "the ready line waits for the STT worker only"
        assert await _transcribe_hello_world(port) == "hello world"
        async with sdk(f"ws://127.0.0.1:{port}/v1").realtime.connect(model="gpt-realtime") as conn:
            refused = await conn.recv()
        assert (refused.type, refused.error.code, refused.error.param) == ("error", "invalid_value", "intent")
        assert "?intent=transcription" in refused.error.message
        assert _rss_mib(server) < 1024, "whisper and nats-server, without the 1.5B LLM (1.1 GiB)"
        assert not {"llm.server.ready", "tts.model.loading", "models.loading"} & set(_logged(log))
    finally:
        stop_servers(server)
    assert server.returncode == 0


@pytest.mark.slow
async def test_sigterm_stops_serve_and_its_nats_server(tmp_path: Path):
    port = runner.free_port()
    server = _vocalis("serve", "--port", str(port), "--data-dir", str(tmp_path))
    try:
        await until_answering(port, server)
        assert _nats_servers_using(tmp_path / "nats.conf")
    finally:
        stop_servers(server, signum=signal.SIGTERM)  # as a service manager stops it
    assert server.returncode == 0
    assert not _nats_servers_using(tmp_path / "nats.conf"), "SIGTERM stops the embedded nats-server too"


async def test_the_embedded_nats_server_gets_a_soft_memory_limit_unless_its_environment_sets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for given, expected in ((None, runner.NATS_MEMORY_LIMIT), ("1GiB", "1GiB")):
        if given is not None:
            monkeypatch.setenv("GOMEMLIMIT", given)
        data_dir = tmp_path / str(given)
        async with runner.embedded_nats(data_dir / "jetstream"):
            (pid,) = _nats_servers_using(data_dir / "nats.conf")
            assert psutil.Process(int(pid)).environ()["GOMEMLIMIT"] == expected


ARENAS_USED = """
import ctypes, os, sys, tempfile, threading
from app.entry import fewer_malloc_arenas
if sys.argv[1] == "capped":
    fewer_malloc_arenas()
barrier = threading.Barrier(8)
def allocate():
    barrier.wait()  # all at once: glibc hands a thread that finds the arenas locked a new one
    kept = [bytearray(200) for _ in range(20_000)]
    barrier.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream)); libc.fclose(ctypes.c_void_p(stream))
print(open(path).read().count("<heap nr="))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc arenas")
def test_vocalis_keeps_to_two_malloc_arenas_however_many_threads_allocate():
    def arenas(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        done = subprocess.run([sys.executable, "-c", ARENAS_USED, mode], env=env, capture_output=True, text=True)
        return int(done.stdout)

    assert arenas("capped") <= 2 < arenas("glibc's own")


BLAS_THREADS = """
import ctypes, sys
from app.entry import one_blas_thread
if sys.argv[1] == "one":
    one_blas_thread()
import numpy
(path,) = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line}
library = ctypes.CDLL(path)
# the name numpy's own OpenBLAS builds give it, as of numpy 2 and before
names = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads")
print(getattr(library, next(name for name in names if hasattr(library, name)))())
"""


@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2, reason="/proc; one thread per core")
def test_vocalis_gives_numpy_one_blas_thread_unless_told_otherwise():
    def blas_threads(mode: str, given: str | None = None) -> int:
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
        env |= {"OPENBLAS_NUM_THREADS": given} if given else {}
        done = subprocess.run([sys.executable, "-c", BLAS_THREADS, mode], env=env, capture_output=True, text=True)
        return int(done.stdout)

    assert blas_threads("one") == 1 < blas_threads("numpy's own")
    assert blas_threads("one", given="2") == 2


async def test_serve_joins_an_existing_nats(nats_url: str, tmp_path: Path):
    port = runner.free_port()
    data_dir = tmp_path / "serve-data"
    server = _vocalis("serve", "--port", str(port), "--data-dir", str(data_dir), VOCALIS_NATS_URL=nats_url)
    try:
        await until_answering(port, server)
        assert not (data_dir / "nats.conf").exists() and not (data_dir / "jetstream").exists(), "no embedded NATS"
        bus = await Bus.connect(nats_url, "vocalis", "test-observer")
        try:
            assert (await bus.js.stream_info("VOCALIS_SESSIONS")).config.allow_msg_ttl
        finally:
            await bus.close()
    finally:
        stop_servers(server)
    assert server.returncode == 0


async def test_an_edge_is_unhealthy_naming_stt_until_an_stt_worker_runs(nats_url: str, tmp_path: Path):
    port = runner.free_port()
    env = {"VOCALIS_NATS_URL": nats_url, "VOCALIS_DATA_DIR": str(tmp_path), "VOCALIS_WORKERS": "stt"}
    edge = _vocalis("edge", "--port", str(port), **env)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await until_answering(port, edge)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            unhealthy = await client.get("/health")
            assert unhealthy.status_code == 503, unhealthy.text
            assert (unhealthy.json()["missing"], unhealthy.json()["workers"]) == (["stt"], {"stt": 0})
            error = unhealthy.json()["error"]
            assert (error["type"], error["code"], error["param"]) == ("server_error", "workers_unavailable", None)
            assert "stt" in error["message"]
            workers.append(_vocalis("worker", "stt", **env))
            for _ in range(600):  # the worker loads whisper, then waits for jobs
                assert workers[0].poll() is None, "the worker exited"
                if (healthy := await client.get("/health")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["missing"] == [] and healthy.json()["workers"]["stt"] >= 1
    finally:
        stop_servers(edge, *workers)


@pytest.mark.slow
async def test_edge_and_two_stt_workers_share_the_turns(nats_url: str, tmp_path: Path):
    port = runner.free_port()
    env = {"VOCALIS_NATS_URL": nats_url, "VOCALIS_DATA_DIR": str(tmp_path)}
    edge = _vocalis("edge", "--port", str(port), **env)
    workers = [_vocalis("worker", "stt", VOCALIS_WORKER_NAME=f"w{i}", **env) for i in (1, 2)]
    bus = await Bus.connect(nats_url, "vocalis", "test-observer")
    try:
        await until_answering(port, edge)
        for _ in range(600):  # both workers are waiting for jobs
            info = await bus.js.consumer_info(bus.subjects.jobs_stream, "stt")
            if info.num_waiting >= 2:
                break
            await asyncio.sleep(0.1)
        async with sdk(f"ws://127.0.0.1:{port}/v1").realtime.connect(extra_query={"intent": "transcription"}) as conn:
            created = await conn.recv()
            await stream(conn, pcm24k("lecture_60s.wav") + silence(1000))
            turns = Turns(at_least=4)
            await events_until(conn, turns, timeout=120)
        assert len(turns.completed) == len(set(turns.completed)), "each turn completed once"
        results = [
            r for _, r in (await read_session(bus, created.session.id)).inputs if isinstance(r, rec.WordsDecoded)
        ]
        # Every decode is done once, by one worker; a turn has several (while it is spoken, and when its silence
        # begins), but it gets exactly one transcript (the client saw one completed each).
        assert len({r.job_id for r in results}) == len(results), "each job transcribed exactly once"
        # Every committed turn was decoded; a later turn may be in progress (decoded, not yet committed) by now.
        assert turns.committed <= {r.item_id for r in results}
        assert {r.worker for r in results} == {"w1", "w2"}, "the turns are shared between the workers"
    finally:
        await bus.close()
        stop_servers(edge, *workers)
