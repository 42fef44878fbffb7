"""What every model worker shares: taking its jobs one at a time (by priority) while it is alive, and knowing
which jobs nobody wants any more."""

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import structlog

from domain.jobs import Job
from handlers.ports import Delivery, JobQueue, Unsubscribe, WorkerBus, now_ms

log = structlog.get_logger(__name__)
REMEMBERED = 10_000  # cancelled responses and ended sessions a worker remembers
# While a job runs, its worker tells the queue every second that it is alive, so the queue's ack wait can be short
# (app.bus.ACK_WAIT_S): a worker that dies has its job taken over within seconds, one alive keeps it however long.
HEARTBEAT_S = 1.0
# A job handed back so that an earlier queue's job goes first comes back after this long (each hand-back is a
# delivery: without the pause, a worker behind on transcripts would hand a partial decode back many times a second).
PRIORITY_NAK_S = 0.2
DELIVERY_SETTLE_S = 0.005
T = TypeVar("T")
_DONE = object()


async def serve_jobs(
    bus: WorkerBus,
    kinds: Sequence[str],
    handle: Callable[[Delivery], Awaitable[None]],
    stop: asyncio.Event,
    at_once: int = 1,
) -> None:
    """Handle jobs from the work queues `kinds` until `stop`, up to `at_once` together, earlier queues first.

    Only a worker with a free slot asks for jobs, so a job never waits in a busy worker while another could start
    it: one that arrives as the worker fills its last slot is handed back at once. A job whose handler raises is
    left for redelivery. At `stop`, the jobs in hand are finished.
    """
    subscriptions = [await bus.job_queue(kind) for kind in kinds]
    arrived: asyncio.Queue[tuple[int, Delivery]] = asyncio.Queue()
    idle = asyncio.Event()
    idle.set()
    closing = asyncio.Event()

    async def fetch(index: int) -> None:
        # Stops on `closing` as well as on cancellation: nats-py waits with asyncio.wait_for, which on Python 3.11
        # can lose a cancellation that arrives as its message does.
        while not closing.is_set():
            await idle.wait()
            try:
                (message,) = await subscriptions[index].fetch(1, timeout=1)
            except TimeoutError:  # nats.errors.TimeoutError
                continue
            except Exception as error:  # NATS restarting, a cluster electing a leader: a fetcher never dies of it
                log.warning("job.fetch.failed", kind=kinds[index], error=repr(error))
                await asyncio.sleep(1)
                continue
            if idle.is_set() and not closing.is_set():
                arrived.put_nowait((index, message))
            else:
                await message.nak()

    running: set[asyncio.Task[None]] = set()

    async def run(message: Delivery, index: int) -> None:
        heartbeat = asyncio.create_task(_heartbeat(message))
        try:
            await handle(message)
        except Exception:
            log.exception("job.unhandled", kind=kinds[index])
        finally:
            heartbeat.cancel()
            if not closing.is_set():
                idle.set()

    fetchers = [asyncio.create_task(fetch(index)) for index in range(len(kinds))]
    try:
        while not stop.is_set():
            try:
                async with asyncio.timeout(1):
                    index, message = await arrived.get()
            except TimeoutError:
                continue
            # Still idle while it looks, so that a job of an earlier queue fetched meanwhile (often the very one it
            # finds waiting) joins the choice instead of being handed back: each hand-back counts as a delivery.
            if await _waiting_before(subscriptions[:index]):  # an earlier queue's job comes first
                await message.nak(delay=PRIORITY_NAK_S)
                continue
            if index > 0:  # a job of an earlier queue delivered before that answer takes a few more steps to arrive
                await asyncio.sleep(DELIVERY_SETTLE_S)
            idle.clear()
            (index, message), *later = sorted([(index, message), *_drain(arrived)], key=lambda delivery: delivery[0])
            for _, other in later:  # back to the queues, for whoever is free
                await other.nak()
            running.add(job := asyncio.create_task(run(message, index)))
            job.add_done_callback(running.discard)
            if len(running) < at_once:
                idle.set()
    finally:
        closing.set()
        for fetcher in fetchers:
            fetcher.cancel()
        await asyncio.gather(*fetchers, return_exceptions=True)
        try:
            await asyncio.gather(*running)  # cancelled with it, when the worker is
        finally:
            for _, message in _drain(arrived):
                await message.nak()
            for subscription in subscriptions:
                await subscription.unsubscribe()


async def _waiting_before(queues: Sequence[JobQueue]) -> bool:
    """Whether an earlier queue holds a job that no worker has taken yet (both queues' fetches race)."""
    for queue in queues:
        with contextlib.suppress(Exception):  # without an answer, go on with the job in hand
            if (await queue.consumer_info()).num_pending:
                return True
    return False


def _drain(queue: "asyncio.Queue[T]") -> list[T]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _heartbeat(message: Delivery) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        with contextlib.suppress(Exception):  # a missed beat only risks a redelivery; the next one may get through
            await message.in_progress()


class Unwanted:
    """The jobs nobody waits for any more: those of cancelled responses and of sessions that ended (or whose client
    left), as heard on core NATS, and those past their deadline."""

    def __init__(self, kind: str, limit: int = REMEMBERED) -> None:
        self.kind = kind  # the worker's queue ("stt", "llm" or "tts"): a session may drop some kinds only
        self._responses: OrderedDict[str, None] = OrderedDict()
        self._sessions: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def why(self, job: Job) -> str | None:
        """Why the job is not wanted: "cancelled", "dropped" (its session ended) or "expired"; None: it is."""
        if job.session_id in self._sessions:
            return "dropped"
        if getattr(job, "response_id", None) in self._responses:
            return "cancelled"
        if job.deadline_ms is not None and now_ms() > job.deadline_ms:
            return "expired"
        return None

    def stopped(self, job: Job) -> bool:
        """Whether a job in progress should stop (a deadline only decides whether a job starts)."""
        return self.why(job) in ("cancelled", "dropped")

    def cancel(self, response_id: str) -> None:
        _remember(self._responses, response_id, self._limit)

    def drop(self, session_id: str, kinds: Sequence[str]) -> None:
        if self.kind in kinds:
            _remember(self._sessions, session_id, self._limit)

    async def listen(self, bus: WorkerBus, then: Callable[[], None] | None = None) -> list[Unsubscribe]:
        """Hear cancels and dropped sessions from now on; `then()` runs after each."""

        def cancelled(response_id: str) -> None:
            self.cancel(response_id)
            if then is not None:
                then()

        def dropped(session_id: str, kinds: Sequence[str]) -> None:
            self.drop(session_id, kinds)
            if then is not None:
                then()

        return [await bus.on_cancel(cancelled), await bus.on_drop(dropped)]


def _remember(seen: "OrderedDict[str, None]", key: str, limit: int) -> None:
    seen[key] = None
    seen.move_to_end(key)
    while len(seen) > limit:
        seen.popitem(last=False)


async def in_thread(make: Callable[[], Iterator[T]]) -> AsyncGenerator[T, None]:
    """Run a blocking generator (model inference) in a thread and hand over each item as soon as it is made, so
    the event loop never waits on a model. When the consumer stops early, the thread stops after the item in hand."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    abandon = threading.Event()

    def produce() -> None:
        try:
            for item in make():
                if abandon.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except Exception as error:
            loop.call_soon_threadsafe(queue.put_nowait, error)
        loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    producer = loop.run_in_executor(None, produce)
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        abandon.set()
        await producer
