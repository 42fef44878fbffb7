"""What the handlers need from the outside world, as interfaces the shell implements and hands in: the bus a worker
takes jobs from and writes records to, and the wall clock that stamps those records.

Workers depend on these, never on `app/`, so the dependency arrows point down (app -> handlers -> domain) and a
worker's logic can be driven by any implementation of `WorkerBus`.
"""

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from domain.records import AudioReceived, ItemAudioReceived, Record


def now_ms() -> int:
    """Wall-clock epoch milliseconds: the time stamped on every record written."""
    return time.time_ns() // 1_000_000


class DeliveryCount(Protocol):
    @property
    def num_delivered(self) -> int:
        """1 the first time a job is delivered; more when it was taken over from a worker that stopped."""


class Delivery(Protocol):
    """One job as the queue delivered it. Settle it once: `ack` (done), or `nak` (hand it back)."""

    @property
    def data(self) -> bytes: ...

    @property
    def metadata(self) -> DeliveryCount: ...

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def in_progress(self) -> None:
        """Tell the queue the job is still being worked on, so it is not handed to another worker."""


class JobQueue(Protocol):
    """A work queue of one kind, shared by competing workers."""

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> Sequence[Delivery]:  # noqa: ASYNC109 (nats-py's)
        """Up to `batch` jobs; raises TimeoutError when none came within `timeout` seconds."""

    async def consumer_info(self) -> "QueueInfo":
        """How the queue stands now."""

    async def unsubscribe(self) -> None: ...


class QueueInfo(Protocol):
    @property
    def num_pending(self) -> int | None:
        """Jobs not yet delivered to any worker."""


class Unsubscribe(Protocol):
    async def unsubscribe(self) -> None: ...


class WorkerBus(Protocol):
    async def job_queue(self, kind: str) -> JobQueue: ...

    async def publish_record(self, session_id: str, source: str, record: Record, msg_id: str) -> None:
        """Append `record` to the session's inputs from `source` (the worker kind), once per `msg_id`."""

    async def read_audio(
        self, session_id: str, first_seq: int, last_seq: int
    ) -> list[AudioReceived | ItemAudioReceived]:
        """The session's audio records with stream sequences first_seq..last_seq."""

    async def on_cancel(self, heard: Callable[[str], None]) -> Unsubscribe:
        """Call `heard(response_id)` for every response cancelled from now on."""

    async def on_drop(self, heard: Callable[[str, Sequence[str]], None]) -> Unsubscribe:
        """Call `heard(session_id, kinds)` whenever a session no longer wants jobs of those kinds (its client left,
        or it ended)."""
