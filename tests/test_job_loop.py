"""The workers' job loop on a real nats-server: one job at a time, a session's transcripts before files' and both
before partial decodes."""

import asyncio
import contextlib

import nats.js.errors
from nats.aio.msg import Msg

from app.bus import Bus
from handlers.job_loop import serve_jobs
from handlers.stt_worker import STT_QUEUES


async def test_a_transcript_due_goes_before_the_file_and_the_partial_decodes_queued_earlier(nats_url: str):
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
        if len(order) == 5:
            finished.set()

    async def job(kind: str, name: str) -> None:
        await bus.publish(bus.subjects.jobs(kind, "sess_1"), name.encode(), name)

    stop = asyncio.Event()
    await job("stt-partial", "partial 1")
    worker = asyncio.create_task(serve_jobs(bus, STT_QUEUES, handle, stop))
    try:
        await asyncio.wait_for(in_hand.wait(), 10)
        await job("stt-partial", "partial 2")
        await job("stt-file", "file")
        await job("stt-partial", "partial 3")
        await job("stt", "transcript")
        release.set()
        await asyncio.wait_for(finished.wait(), 10)
    finally:
        release.set()
        stop.set()
        await worker
        await bus.close()
    # The partial decodes' own order is not kept: one handed back so that the transcript could go first comes back
    # after a pause (PRIORITY_NAK_S), and the other may be taken meanwhile.
    assert order[:3] == ["partial 1", "transcript", "file"] and sorted(order[3:]) == ["partial 2", "partial 3"]


async def test_with_two_slots_partial_decodes_take_both_and_a_transcript_due_takes_the_first_freed(nats_url: str):
    """Two slots: two partial decodes run together; a transcript that falls due meanwhile starts in the first slot
    freed, before the partial decode queued earlier."""
    bus = await Bus.connect(nats_url, "vocalis", "test-job-loop")
    await bus.ensure_streams(3600, -1)
    started: list[str] = []
    releases = {f"partial {n}": asyncio.Event() for n in (1, 2, 3)}

    async def handle(message: Msg) -> None:
        name = message.data.decode()
        started.append(name)
        if name in releases:
            await releases[name].wait()
        await message.ack()

    async def job(kind: str, name: str) -> None:
        await bus.publish(bus.subjects.jobs(kind, "sess_1"), name.encode(), name)

    async def until_started(count: int) -> None:
        for _ in range(100):
            if len(started) >= count:
                return
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    for n in (1, 2, 3):
        await job("stt-partial", f"partial {n}")
    worker = asyncio.create_task(serve_jobs(bus, STT_QUEUES, handle, stop, 2))
    try:
        await until_started(2)
        await job("stt", "transcript")
        await asyncio.sleep(1)
        assert started == ["partial 1", "partial 2"], "both slots, and no more"
        releases["partial 1"].set()
        await until_started(3)
        assert started[2] == "transcript"
        releases["partial 2"].set()
        releases["partial 3"].set()
        await until_started(4)
        assert started == ["partial 1", "partial 2", "transcript", "partial 3"]
    finally:
        for release in releases.values():
            release.set()
        stop.set()
        await worker
        await bus.close()


async def test_a_busy_worker_leaves_the_jobs_it_cannot_start_to_an_idle_one(nats_url: str):
    bus = await Bus.connect(nats_url, "vocalis", "test-job-loop")
    await bus.ensure_streams(3600, -1)
    handled: dict[str, list[str]] = {"busy": [], "idle": []}
    release = asyncio.Event()

    def worker(name: str):
        async def handle(message: Msg) -> None:
            handled[name].append(message.data.decode())
            if name == "busy":
                await release.wait()
            await message.ack()

        return handle

    stops = asyncio.Event(), asyncio.Event()
    busy = asyncio.create_task(serve_jobs(bus, ("stt",), worker("busy"), stops[0]))
    await bus.publish(bus.subjects.jobs("stt", "sess_1"), b"first", "first")
    while not handled["busy"]:
        await asyncio.sleep(0.05)
    for name in ("second", "third"):  # while the busy worker's fetches from when it was idle still wait
        await bus.publish(bus.subjects.jobs("stt", "sess_1"), name.encode(), name)
    await asyncio.sleep(1.5)
    idle = asyncio.create_task(serve_jobs(bus, ("stt",), worker("idle"), stops[1]))
    try:
        for _ in range(60):
            if len(handled["idle"]) == 2:
                break
            await asyncio.sleep(0.05)
        assert handled == {"busy": ["first"], "idle": ["second", "third"]}
    finally:
        release.set()
        for stop in stops:
            stop.set()
        await asyncio.gather(busy, idle)
        await bus.close()


async def test_a_long_job_stays_with_its_live_worker_and_moves_on_when_the_worker_dies(nats_url: str):
    """The queue's ack wait is short (5 s), but a worker alive beats for its job: no other worker gets it. Once the
    worker stops beating (as if killed), another worker has the job within the ack wait."""
    bus = await Bus.connect(nats_url, "vocalis", "test-job-loop")
    await bus.ensure_streams(3600, -1)
    taken: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def first_worker(message: Msg) -> None:
        taken.append(("first", loop.time()))
        await asyncio.sleep(8)  # longer than the ack wait; ends by being cancelled below

    async def second_worker(message: Msg) -> None:
        taken.append(("second", loop.time()))
        await message.ack()

    stops = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(serve_jobs(bus, ("llm",), first_worker, stops[0]))
    await bus.publish(bus.subjects.jobs("llm", "sess_1"), b"long", "long")
    for _ in range(100):
        if taken:
            break
        await asyncio.sleep(0.05)
    second = asyncio.create_task(serve_jobs(bus, ("llm",), second_worker, stops[1]))
    try:
        await asyncio.sleep(7)
        assert [who for who, _ in taken] == ["first"], "redelivered while its worker was alive"
        first.cancel()  # the worker dies: no more beats, no nak
        died = loop.time()
        for _ in range(200):
            if len(taken) == 2:
                break
            await asyncio.sleep(0.05)
        assert [who for who, _ in taken] == ["first", "second"]
        assert taken[1][1] - died < 7, "taken over within about the ack wait"
    finally:
        stops[1].set()
        await asyncio.gather(first, second, return_exceptions=True)
        await bus.close()


async def test_a_session_s_dropped_jobs_leave_the_queue_and_everyone_else_s_stay(nats_url: str):
    bus = await Bus.connect(nats_url, "vocalis", "test-job-loop")
    await bus.ensure_streams(3600, -1)
    queued = [("stt", "sess_1"), ("stt-partial", "sess_1"), ("llm", "sess_1"), ("stt", "sess_2"), ("stt", "sess_1")]
    try:
        for n, (kind, session_id) in enumerate(queued):
            await bus.publish(bus.subjects.jobs(kind, session_id), f"{kind} {session_id}".encode(), f"job-{n}")
        await bus.drop_jobs("sess_1", ("stt", "stt-partial"))
        await bus.drop_jobs("sess_3", ("stt",))  # nothing queued: nothing to do
        left = []
        for seq in range(1, len(queued) + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                left.append((await bus.js.get_msg(bus.subjects.jobs_stream, seq)).data.decode())
    finally:
        await bus.close()
    assert left == ["llm sess_1", "stt sess_2"]
