"""What every model worker shares: pulling its jobs one at a time (by priority), and hearing which responses were
cancelled."""

import asyncio
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import structlog

from handlers.ports import Delivery, Unsubscribe, WorkerBus

log = structlog.get_logger(__name__)
MAX_CANCELLED = 10_000
T = TypeVar("T")
_DONE = object()


async def serve_jobs(
    bus: WorkerBus, kinds: Sequence[str], handle: Callable[[Delivery], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Handle jobs from the work queues `kinds` until `stop`, one at a time, earlier queues first.

    Each queue has at most one job fetched and waiting here, so a job of the first queue waits at most for the job
    in hand, and the jobs this worker cannot start yet stay in the stream for the other workers. A job whose
    handler raises is left for redelivery; jobs still waiting at `stop` are handed back at once.
    """
    subscriptions = [await bus.job_queue(kind) for kind in kinds]
    waiting: list[Delivery | None] = [None] * len(kinds)
    arrived = asyncio.Event()
    taken = [asyncio.Event() for _ in kinds]

    closing = asyncio.Event()

    async def fetch(index: int) -> None:
        # Stops on `closing` as well as on cancellation: nats-py waits with asyncio.wait_for, which on Python 3.11
        # can lose a cancellation that arrives as its message does.
        while not closing.is_set():
            if waiting[index] is not None:
                await taken[index].wait()
                taken[index].clear()
                continue
            try:
                (waiting[index],) = await subscriptions[index].fetch(1, timeout=1)
            except TimeoutError:  # nats.errors.TimeoutError
                continue
            arrived.set()

    fetchers = [asyncio.create_task(fetch(index)) for index in range(len(kinds))]
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 1)
            arrived.clear()
            while not stop.is_set() and (index := _first_waiting(waiting)) is not None:
                message = waiting[index]
                assert message is not None
                waiting[index] = None
                taken[index].set()
                try:
                    await handle(message)
                except Exception:
                    log.exception("job.unhandled", kind=kinds[index])
    finally:
        closing.set()
        for fetcher in fetchers:
            fetcher.cancel()
        await asyncio.gather(*fetchers, return_exceptions=True)
        for message in waiting:
            if message is not None:
                await message.nak()
        for subscription in subscriptions:
            await subscription.unsubscribe()


def _first_waiting(waiting: Sequence[Delivery | None]) -> int | None:
    return next((index for index, message in enumerate(waiting) if message is not None), None)


class CancelledResponses:
    """The most recent cancelled response ids, as heard on `<prefix>.cancel.<response id>` (core NATS)."""

    def __init__(self, limit: int = MAX_CANCELLED) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, response_id: str) -> None:
        self._ids[response_id] = None
        self._ids.move_to_end(response_id)
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    async def listen(self, bus: WorkerBus, then: Callable[[str], None] | None = None) -> Unsubscribe:
        """Subscribe to the cancel signals; `then(response_id)` runs for each."""

        def heard(response_id: str) -> None:
            self.add(response_id)
            if then is not None:
                then(response_id)

        return await bus.on_cancel(heard)


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
