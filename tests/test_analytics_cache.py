"""The analytics worker keeps the summaries of the latest sessions in memory, not of every session it has seen."""

import asyncio

from app import runner
from app.analytics import AnalyticsWorker, SummaryCache, SummaryStore
from app.settings import Settings
from domain import records as rec
from domain.analytics import open_summary


def opened(session_id: str, at_ms: int = 1_000) -> rec.SessionOpened:
    return rec.SessionOpened(
        at_ms=at_ms,
        session_id=session_id,
        session_type="transcription",
        dialect="ga",
        default_stt_model="m",
        max_duration_s=60,
    )


def test_the_cache_keeps_the_sessions_folded_last():
    cache = SummaryCache(limit=2)
    for name in ("a", "b"):
        cache.put(open_summary(opened(name), seq=1))
    assert cache.get("a") is not None  # used now: "b" is the oldest
    cache.put(open_summary(opened("c"), seq=2))
    assert len(cache) == 2
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None


async def test_the_worker_holds_at_most_its_limit_and_stores_every_summary(nats_url, tmp_path):
    bus = await runner.connect(Settings(data_dir=tmp_path), nats_url, "test-analytics")
    stop = asyncio.Event()
    worker = AnalyticsWorker(bus, cached=3)
    running = asyncio.create_task(worker.run(stop))
    try:
        sessions = [f"sess_{n:020d}" for n in range(10)]
        for n, session_id in enumerate(sessions):
            await bus.publish_record(session_id, "edge", opened(session_id, at_ms=1_000 + n), f"{session_id}.opened")
        for _ in range(100):
            stored = await (await SummaryStore.open(bus, create=True))[0].all()
            if len(stored) == len(sessions):
                break
            await asyncio.sleep(0.1)
        assert sorted(s.session_id for s in stored) == sessions
        assert len(worker.cache) == 3
    finally:
        stop.set()
        await asyncio.gather(running, return_exceptions=True)
        await bus.close()
