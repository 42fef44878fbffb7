"""What every model worker shares: pulling its jobs one at a time, and hearing which responses were cancelled."""

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import nats.errors
import structlog
from nats.aio.msg import Msg

from vocalis.app.bus import Bus

log = structlog.get_logger(__name__)
MAX_CANCELLED = 10_000


async def serve_jobs(bus: Bus, kind: str, handle: Callable[[Msg], Awaitable[None]], stop: asyncio.Event) -> None:
    """Handle `kind` jobs from the work queue until `stop`; a job whose handler raises is left for redelivery."""
    subscription = await bus.job_subscription(kind)
    try:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(1, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                try:
                    await handle(message)
                except Exception:
                    log.exception("job.unhandled", kind=kind)
    finally:
        await subscription.unsubscribe()


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

    async def listen(self, bus: Bus, then: Callable[[str], None] | None = None) -> "nats.aio.subscription.Subscription":
        """Subscribe to the cancel signals; `then(response_id)` runs for each."""

        async def heard(message: Msg) -> None:
            response_id = message.subject.removeprefix(bus.subjects.cancel(""))
            if response_id:
                self.add(response_id)
                if then is not None:
                    then(response_id)

        return await bus.nc.subscribe(bus.subjects.cancel(">"), cb=heard)
