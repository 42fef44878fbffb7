"""Faults the client is told about: NATS going away mid-session (a real nats-server, killed and started again on its
port and store), and an edge killed mid-session (a real `vocalis edge` process, SIGKILLed) whose session another edge
closes in the log."""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import psutil
import pytest
import websockets

from app import runner
from app.bus import LOG_OUTAGE_S, Bus
from app.log_reader import read_session
from app.log_tools import load_fixture, replay_recorded
from domain import records as rec
from domain.replay import compare, replay
from handlers.stt import Transcriber
from handlers.stt_worker import SttWorker
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL
from tests.realtime_client import RawClient, chunks, pcm24k, raw_connect, silence
from tests.server_process import stop_servers, until_answering

FIXTURE = Path(__file__).parent / "sessions" / "hello_world_vad.jsonl"
MANUAL_TURNS = {
    "type": "session.update",
    "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
}


class RestartableNats:
    """The embedded nats-server, that a test can kill and start again on the same port and store."""

    def __init__(self, data_dir: Path) -> None:
        self.store = data_dir / "jetstream"
        self.port = runner.free_port()
        self._life: contextlib.AbstractAsyncContextManager[str] | None = None

    async def start(self) -> str:
        self._life = runner.embedded_nats(self.store, self.port)
        return await self._life.__aenter__()

    async def kill(self) -> None:
        config = str(self.store.parent / "nats.conf")
        for child in psutil.Process().children():
            if "nats-server" in child.name() and config in child.cmdline():
                child.kill()
        await self.stop()

    async def stop(self) -> None:
        if self._life is not None:
            await self._life.__aexit__(None, None, None)
            self._life = None


def _edge(port: int, nats_url: str, logs: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "VOCALIS_NATS_URL": nats_url,
        "VOCALIS_DATA_DIR": str(logs.parent),
        "VOCALIS_MODEL_DIR": str(MODEL_CACHE),
        "VOCALIS_STT_MODEL": TEST_STT_MODEL,
        "VOCALIS_LOG_FORMAT": "json",
    }
    with logs.open("wb") as log:  # the edge's own lines, for a failure's diagnosis
        return subprocess.Popen([sys.executable, "-m", "app", "edge", "--port", str(port)], env=env, stderr=log)


@contextlib.asynccontextmanager
async def _edge_on_nats_that_fails(tmp_path: Path) -> AsyncIterator[tuple[RestartableNats, str, int]]:
    """A `vocalis edge` process, up, on a nats-server the test kills and starts again; its NATS URL and port."""
    nats = RestartableNats(tmp_path)
    url = await nats.start()
    port = runner.free_port()
    edge = _edge(port, url, tmp_path / "edge.log")
    try:
        await until_answering(port, edge)
        yield nats, url, port
    finally:
        stop_servers(edge)
        await nats.stop()


async def _append(client: RawClient, pcm: bytes) -> None:
    for chunk in chunks(pcm):
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})


async def _closes(bus: Bus, session_id: str) -> list[rec.SessionClosed]:
    return [r for _, r in (await read_session(bus, session_id)).inputs if isinstance(r, rec.SessionClosed)]


async def _vocalis(nats_url: str, *args: str) -> tuple[int, str]:
    env = os.environ | {"VOCALIS_NATS_URL": nats_url, "VOCALIS_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


def test_a_session_cut_off_at_its_edge_replays_as_far_as_it_was_recorded():
    inputs, expected = load_fixture(FIXTURE)
    *records, (seq, closed) = inputs
    assert isinstance(closed, rec.SessionClosed)
    cut = [*records, (seq, msgspec.structs.replace(closed, reason=rec.EDGE_LOST))]
    # The edge died having recorded some events only; the log holds records it never reduced.
    assert replay_recorded(cut, expected[:3]) is None
    assert replay_recorded(cut, expected) is None
    divergence = replay_recorded(inputs, expected[:3])
    assert divergence is not None and divergence.index == 3, "a session closed by its edge is compared in full"
    changed = [*expected[:2], msgspec.structs.replace(expected[2], event_id="event_other")]
    assert replay_recorded(cut, changed) is not None, "what was recorded must still match"


async def test_a_session_closed_in_the_log_by_another_edge_ends_its_connection(stack):
    async with raw_connect(stack.ws_url) as client:
        session_id = (await client.next_of("session.created"))["session"]["id"]
        closed = rec.SessionClosed(at_ms=0, reason=rec.EDGE_LOST)  # as a reaper writes it
        await stack.bus.publish_record(session_id, "edge", closed, f"{session_id}.{rec.EDGE_LOST}")
        error = (await client.next_of("error"))["error"]
        assert (error["type"], error["code"]) == ("server_error", "session_closed")
        with pytest.raises(websockets.ConnectionClosed) as ended:
            await client.next()
    assert ended.value.rcvd is not None and ended.value.rcvd.code == 1011


@pytest.mark.slow
async def test_a_nats_outage_is_told_and_the_session_goes_on_when_it_is_back(tmp_path: Path):
    async with _edge_on_nats_that_fails(tmp_path) as (nats, url, port):
        async with raw_connect(f"ws://127.0.0.1:{port}/v1") as client:
            session_id = (await client.next_of("session.created"))["session"]["id"]
            await client.send(MANUAL_TURNS)
            await client.next_of("session.updated")

            await nats.kill()
            lost = time.monotonic()
            error = (await client.next_of("error", timeout=5))["error"]
            told_s = time.monotonic() - lost
            assert (error["type"], error["code"]) == ("server_error", "log_unavailable"), error
            await _append(client, silence(1000))  # held by the edge while NATS is away
            await asyncio.sleep(5 - told_s)

            await nats.start()
            back = time.monotonic()
            await client.send(MANUAL_TURNS)
            await client.next_of("session.updated", timeout=10)
            answered_s = time.monotonic() - back
        print(f"told after {told_s:.2f} s; after NATS was back, session.update answered in {answered_s:.2f} s")
        assert told_s < 2
        assert answered_s < 3, "the session's inputs flow again as soon as the edge is reconnected"
        bus = await Bus.connect(url, "vocalis", "test-observer")
        try:
            inputs = (await read_session(bus, session_id)).inputs
        finally:
            await bus.close()
        held = sum(r.ticks for _, r in inputs if isinstance(r, rec.AudioReceived))
        assert held == 48_000, "the second of audio appended while NATS was away reached the log"


@pytest.mark.slow
async def test_a_nats_outage_past_the_bound_ends_the_session_with_1011(tmp_path: Path):
    async with _edge_on_nats_that_fails(tmp_path) as (nats, url, port):
        async with raw_connect(f"ws://127.0.0.1:{port}/v1") as client:
            session_id = (await client.next_of("session.created"))["session"]["id"]
            await nats.kill()
            lost = time.monotonic()
            assert (await client.next_of("error", timeout=5))["error"]["code"] == "log_unavailable"
            ended = (await client.next_of("error", timeout=LOG_OUTAGE_S + 5))["error"]
            ended_s = time.monotonic() - lost
            assert (ended["type"], ended["code"]) == ("server_error", "log_unavailable")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        print(f"ended and closed {ended_s:.2f} s after NATS went away")
        assert LOG_OUTAGE_S <= ended_s < LOG_OUTAGE_S + 2
        async with raw_connect(f"ws://127.0.0.1:{port}/v1") as late:  # a client that comes while NATS is away
            assert (await late.next_of("error", timeout=10))["error"]["code"] == "log_unavailable"
            with pytest.raises(websockets.ConnectionClosed) as refused:
                await late.next()
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 1011

        await nats.start()  # the close the edge held back reaches the log once NATS is back
        bus = await Bus.connect(url, "vocalis", "test-observer")
        try:
            for _ in range(100):
                closes = await _closes(bus, session_id)
                if closes:
                    break
                await asyncio.sleep(0.1)
            assert [c.reason for c in closes] == ["log_unavailable"]
        finally:
            await bus.close()


@pytest.mark.slow
async def test_a_session_whose_edge_is_killed_is_closed_by_another_edge(
    nats_url: str, tmp_path: Path, transcriber: Transcriber
):
    ports = runner.free_port(), runner.free_port()
    doomed, survivor = (_edge(port, nats_url, tmp_path / f"edge-{port}.log") for port in ports)
    bus = await Bus.connect(nats_url, "vocalis", "test-observer")
    stop = asyncio.Event()
    worker: asyncio.Task[None] | None = None
    try:
        await until_answering(ports[0], doomed)
        await until_answering(ports[1], survivor)
        async with raw_connect(f"ws://127.0.0.1:{ports[0]}/v1") as client:
            session_id = (await client.next_of("session.created"))["session"]["id"]
            await client.send(MANUAL_TURNS)
            await _append(client, pcm24k("hello_world.wav"))
            await client.send({"type": "input_audio_buffer.commit"})
            await client.next_of("input_audio_buffer.committed")
            for _ in range(100):  # the turn's transcription job is queued; no worker has taken it yet
                if (await bus.js.stream_info(bus.subjects.jobs_stream)).state.messages:
                    break
                await asyncio.sleep(0.05)
            doomed.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed):
                await client.next_of("never")
        doomed.wait(timeout=10)
        # A worker records the transcript after the edge died: the log holds records the edge never reduced.
        worker = asyncio.create_task(SttWorker(bus, transcriber, "test-worker").run(stop))

        closes: list[rec.SessionClosed] = []
        while not closes and time.monotonic() - killed < 25:
            await asyncio.sleep(0.5)
            closes = await _closes(bus, session_id)
        closed_s = time.monotonic() - killed
        print(f"closed in the log {closed_s:.1f} s after the kill")
        assert [c.reason for c in closes] == [rec.EDGE_LOST]
        assert closed_s < 20

        recorded = await read_session(bus, session_id)
        assert any(isinstance(r, rec.TranscriptionCompleted) for _, r in recorded.inputs)
        assert compare(recorded.outputs, replay(recorded.inputs)) is not None, "compared in full, it would diverge"
        code, listed = await _vocalis(nats_url, "sessions")
        [row] = [line for line in listed.splitlines() if session_id in line]
        assert code == 0 and row.split()[-1] == "ended", listed
        code, replayed = await _vocalis(nats_url, "replay", session_id)
        assert code == 0 and "cut off" in replayed, replayed
    finally:
        stop.set()
        if worker is not None:
            await worker
        await bus.close()
        stop_servers(doomed, survivor)
