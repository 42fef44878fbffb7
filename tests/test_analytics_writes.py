"""The analytics worker writes a live session's summary at most once per `write_every_s`, not at every change: each
write stores the whole summary, which grows with the session. An ended session's summary is written at once, and a
stopping worker stores what it folded."""

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec
import nats.js.errors
import pytest

from app import runner
from app.analytics import DURABLE, AnalyticsWorker, SummaryStore
from app.bus import Bus
from app.settings import Settings
from domain import records as rec
from domain.analytics import SessionSummary
from tests.test_analytics_cache import opened

SESSION = "sess_00000000000000000001"


@pytest.fixture
async def bus(nats_url: str, tmp_path) -> AsyncIterator[Bus]:
    bus = await runner.connect(Settings(data_dir=tmp_path), nats_url, "test-analytics-writes")
    yield bus
    await bus.close()


async def run_worker(bus: Bus, write_every_s: float) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(AnalyticsWorker(bus, write_every_s=write_every_s).run(stop))


async def speech_started(bus: Bus, n: int) -> None:
    event = {"type": "input_audio_buffer.speech_started", "item_id": f"item_{n}", "audio_start_ms": n * 100}
    subject = bus.subjects.session_output(SESSION, "input_audio_buffer.speech_started")
    await bus.publish(subject, msgspec.json.encode(event), f"{SESSION}.started.{n}")


async def stored_when(bus: Bus, done: Callable[[SessionSummary], bool], seconds: float) -> SessionSummary:
    store, _ = await SummaryStore.open(bus, create=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (summary := await store.get(SESSION)) is None or not done(summary):
        assert loop.time() < deadline, f"not stored within {seconds} s: {summary}"
        await asyncio.sleep(0.05)
    return summary


async def unacknowledged(bus: Bus) -> int:
    """Records the worker took and has not acknowledged (0 until it has made its consumer)."""
    try:
        return int((await bus.js.consumer_info(bus.subjects.sessions_stream, DURABLE)).num_ack_pending)
    except nats.js.errors.NotFoundError:
        return 0


async def writes(bus: Bus) -> int:
    """Summaries written to the store so far (its stream's last sequence: one message a write)."""
    info = await bus.js.stream_info(f"KV_{bus.subjects.prefix.upper()}_ANALYTICS")
    return int(info.state.last_seq)


async def test_a_live_sessions_summary_is_written_once_a_second_not_at_every_change(bus):
    stop, running = await run_worker(bus, write_every_s=1.0)
    try:
        await bus.publish_record(SESSION, "edge", opened(SESSION), f"{SESSION}.opened")
        for n in range(40):  # 2 s of changes, spaced as a live session makes them
            await speech_started(bus, n)
            await asyncio.sleep(0.05)
        summary = await stored_when(bus, lambda s: len(s.utterances) == 40, seconds=10)
        assert [u.item_id for u in summary.utterances] == [f"item_{n}" for n in range(40)]
        assert await writes(bus) <= 5  # 41 changes
    finally:
        stop.set()
        await running


async def test_an_ended_session_is_written_at_once(bus):
    stop, running = await run_worker(bus, write_every_s=60)
    try:
        await bus.publish_record(SESSION, "edge", opened(SESSION), f"{SESSION}.opened")
        await speech_started(bus, 0)
        await bus.publish_record(SESSION, "edge", rec.SessionClosed(at_ms=5_000, reason="client"), f"{SESSION}.closed")
        summary = await stored_when(bus, lambda s: s.ended_at_ms is not None, seconds=10)  # not after 60 s
        assert [u.item_id for u in summary.utterances] == ["item_0"]
    finally:
        stop.set()
        await running


async def test_a_stopping_worker_stores_what_it_folded_and_held_unacknowledged(bus):
    stop, running = await run_worker(bus, write_every_s=60)
    await bus.publish_record(SESSION, "edge", opened(SESSION), f"{SESSION}.opened")
    await speech_started(bus, 0)
    deadline = asyncio.get_running_loop().time() + 10
    while await unacknowledged(bus) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the worker did not take the records"
        await asyncio.sleep(0.05)
    store, _ = await SummaryStore.open(bus, create=True)
    assert await store.get(SESSION) is None  # folded, held for its write; a crash now: the log delivers them again

    stop.set()
    await running
    summary = await stored_when(bus, lambda s: len(s.utterances) == 1, seconds=1)
    assert summary.ended_at_ms is None
