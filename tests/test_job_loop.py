"""The workers' job loop on a real nats-server: one job at a time, transcripts before partial decodes."""

import asyncio

from nats.aio.msg import Msg

from app.bus import Bus
from handlers.job_loop import serve_jobs


async def fetched(bus: Bus, kind: str, count: int) -> None:
    """Wait until the worker holds `count` jobs of `kind` (delivered, not yet acked)."""
    for _ in range(100):
        info = await bus.js.consumer_info(bus.subjects.jobs_stream, kind)
        if info.num_ack_pending >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {kind} job fetched")


async def test_a_transcript_due_goes_before_the_partial_decodes_queued_earlier(nats_url: str):
    bus = await Bus.connect(nats_url, "vocalis", "test-job-loop")
    await bus.ensure_streams(3600, -1)
    order: list[str] = []
    in_hand, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handle(message: Msg) -> None:
        order.append(message.data.decode())
        if len(order) == 1:
            in_hand.set()
            await release.wait()
        await message.ack()
        if len(order) == 4:
            finished.set()

    async def job(kind: str, name: str) -> None:
        await bus.publish(bus.subjects.jobs(kind), name.encode(), name)

    stop = asyncio.Event()
    await job("stt-partial", "partial 1")
    worker = asyncio.create_task(serve_jobs(bus, ("stt", "stt-partial"), handle, stop))
    try:
        await asyncio.wait_for(in_hand.wait(), 10)
        await job("stt-partial", "partial 2")
        await job("stt-partial", "partial 3")
        await job("stt", "transcript")
        await fetched(bus, "stt", 1)
        await fetched(bus, "stt-partial", 2)  # the one in hand and the next; the third stays in the stream
        info = await bus.js.consumer_info(bus.subjects.jobs_stream, "stt-partial")
        assert info.num_pending == 1, "a worker holds at most one waiting job per queue"
        release.set()
        await asyncio.wait_for(finished.wait(), 10)
    finally:
        stop.set()
        await worker
        await bus.close()
    assert order == ["partial 1", "transcript", "partial 2", "partial 3"]
