"""Writing a session to the log, on a real nats-server: the jobs a session withdraws leave the queue."""

import asyncio
import contextlib

import msgspec
import nats.js.errors

from app.bus import Bus, decode_record
from app.realtime.session_log import SessionLog
from domain import records as rec
from domain.jobs import TranscribeJob
from domain.state import WithdrawJob


def decode(job_id: str) -> TranscribeJob:
    return TranscribeJob(job_id, "sess_1", "item_1", 1, 1, 0, 0, 16000, "whisper-tiny.en", words=True)


async def test_a_job_withdrawn_before_the_queue_acknowledged_it_leaves_the_queue_too(nats_url: str):
    # Speech that resumes one frame after a pause withdraws the closing decode that pause asked for, often before
    # the queue has acknowledged it (under load, by tens of milliseconds): it must not stay and run.
    bus = await Bus.connect(nats_url, "vocalis", "test-session-log")
    await bus.ensure_streams(3600, -1)
    session_log = SessionLog(bus, "sess_1", 3600, lambda kind: None)
    at_once, later, kept = decode("job_at_once"), decode("job_later"), decode("job_kept")
    try:
        await session_log.ask(at_once)
        await session_log.ask(WithdrawJob(at_once.job_id))
        await session_log.ask(later)
        await session_log.ask(kept)
        await asyncio.sleep(0.5)  # their acknowledgements are in
        await session_log.ask(WithdrawJob(later.job_id))
        results = await bus.subscribe_results("sess_1", "stt")
        failed: list[str] = []
        async with asyncio.timeout(10):
            async for message in results.messages:
                record = decode_record(message.data)
                assert isinstance(record, rec.TranscriptionFailed)
                failed.append(record.job_id)
                if len(failed) == 2:
                    break
        await results.unsubscribe()
        left = []
        for seq in range(1, 4):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                queued = await bus.js.get_msg(bus.subjects.jobs_stream, seq)
                left.append(msgspec.json.decode(queued.data, type=TranscribeJob))
    finally:
        await bus.close()
    assert sorted(failed) == ["job_at_once", "job_later"], "each withdrawn job is recorded as failed, for its turn"
    assert left == [kept]
