"""Fixtures: a real nats-server per test (free port, temporary store) and the Vocalis stack on top of it,
with the real silero VAD and faster-whisper (tiny.en, loaded once per test run)."""

import asyncio
import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings

from app import runner
from app.analytics import AnalyticsWorker
from app.bus import Bus
from app.realtime.connection import EdgeServices
from app.settings import Settings
from handlers.llm import ChatClient
from handlers.llm_worker import LlmWorker
from handlers.stt import Transcriber
from handlers.stt_worker import SttWorker
from handlers.tts import KokoroSynthesizer
from handlers.tts_worker import TtsWorker
from tests.fake_llm import FakeLlm

MODEL_CACHE = Settings.from_env().models_path

# CI runs the same examples every time (a failure there is reproducible); locally, hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
TEST_STT_MODEL = "whisper-tiny.en"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vocalis_settings(**fields): settings of the `stack` fixture")


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with runner.embedded_nats(tmp_path / "jetstream") as url:
        yield url


@pytest.fixture(scope="session")
def transcriber() -> Transcriber:
    settings = Settings(model_dir=MODEL_CACHE, stt_model=TEST_STT_MODEL)  # serve's lanes: two decodes at once on a CPU
    return runner.transcriber(settings)


@pytest.fixture(scope="session")
def synthesizer() -> KokoroSynthesizer:
    return KokoroSynthesizer(MODEL_CACHE)


@dataclasses.dataclass
class Stack:
    """The running edge and STT worker; `start_analytics()` adds the analytics subscriber."""

    settings: Settings
    bus: Bus
    nats_url: str
    services: EdgeServices

    analytics: "asyncio.Task[None] | None" = None

    def start_analytics(self) -> "asyncio.Task[None]":
        self.analytics_stop = asyncio.Event()
        self.analytics = asyncio.create_task(AnalyticsWorker(self.bus).run(self.analytics_stop))
        return self.analytics

    async def stop_analytics(self) -> None:
        if self.analytics is not None:
            self.analytics_stop.set()
            await asyncio.gather(self.analytics, return_exceptions=True)
            self.analytics = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/v1"


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest, nats_url: str, transcriber: Transcriber, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The edge and one STT worker, in this process, on a fresh nats-server."""
    marker = request.node.get_closest_marker("vocalis_settings")
    overrides = marker.kwargs if marker else {}
    settings = Settings(
        data_dir=tmp_path, model_dir=MODEL_CACHE, stt_model=TEST_STT_MODEL, port=runner.free_port(), **overrides
    )
    bus = await runner.connect(settings, nats_url, "vocalis-test")
    services = runner.edge_services(settings, bus)
    server = runner.http_server(settings, services)
    serving = asyncio.create_task(server.serve())
    stop = asyncio.Event()
    worker = asyncio.create_task(SttWorker(bus, transcriber, "test-worker", runner.stt_batch(settings)).run(stop))
    while not server.started:
        await asyncio.sleep(0.01)
    stack = Stack(settings, bus, nats_url, services)
    try:
        yield stack
    finally:
        await stack.stop_analytics()
        server.should_exit = True
        stop.set()
        await asyncio.gather(serving, worker, return_exceptions=True)
        await bus.close()


@dataclasses.dataclass
class Conversation:
    stack: Stack
    llm: FakeLlm

    @property
    def ws_url(self) -> str:
        return self.stack.ws_url


@pytest.fixture
async def conversation(stack: Stack, synthesizer: KokoroSynthesizer) -> AsyncIterator[Conversation]:
    """The stack plus an LLM worker on a scripted fake LLM and a TTS worker on the real Kokoro."""
    async with FakeLlm() as llm:
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(LlmWorker(stack.bus, ChatClient(llm.base_url), "test-llm").run(stop)),
            asyncio.create_task(TtsWorker(stack.bus, synthesizer, "test-tts").run(stop)),
        ]
        try:
            yield Conversation(stack, llm)
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM), for wss:// clients."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
