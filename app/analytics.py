"""The meeting-analytics subscriber: a durable JetStream consumer over every session's lifecycle records and
server events, folding them into per-session summaries kept in a KV bucket.

Resuming is exact: a summary stores the last log sequence folded into it, so records redelivered after a crash
are skipped. If the bucket is lost, the consumer is recreated from the start of the log and the summaries are
rebuilt.
"""

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KeyValue

from app.bus import Bus, decode_record
from domain import records as rec
from domain.analytics import LoggedEvent, SessionSummary, fold_event, fold_record, open_summary

log = structlog.get_logger(__name__)
DURABLE = "analytics"
CACHED_SUMMARIES = 1_000  # the sessions whose summaries are kept in memory: the latest ones, live sessions first
_events = msgspec.json.Decoder(LoggedEvent)
_summaries = msgspec.json.Decoder(SessionSummary)


@dataclass(frozen=True)
class LogEntry:
    seq: int
    subject: str
    at_ms: int
    data: bytes


def session_of(subject: str) -> str:
    return subject.split(".")[2]  # <prefix>.session.<sid>.…


def fold_entry(summary: SessionSummary | None, entry: LogEntry) -> SessionSummary | None:
    """Fold one log entry (an `in.edge` or `in.stt` record, or an `out.` event) into its session's summary."""
    if ".in." in entry.subject:
        record = decode_record(entry.data)
        if isinstance(record, rec.SessionOpened):
            return summary if summary is not None else open_summary(record, entry.seq)
        return None if summary is None else fold_record(summary, record, entry.seq)
    if summary is None:  # events of a session whose opening has expired from the log
        return None
    return fold_event(summary, _events.decode(entry.data), entry.at_ms, entry.seq)


def summarize(entries: Iterable[LogEntry]) -> SessionSummary | None:
    summary = None
    for entry in entries:
        summary = fold_entry(summary, entry)
    return summary


def entry_of(message: Msg) -> LogEntry:
    return LogEntry(
        seq=message.metadata.sequence.stream,
        subject=message.subject,
        at_ms=int(message.metadata.timestamp.timestamp() * 1000),
        data=message.data,
    )


class SummaryStore:
    """Summaries by session id, in the `<PREFIX>_ANALYTICS` KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, bus: Bus, create: bool = False) -> "tuple[SummaryStore, bool]":
        """The store, and whether it had to be created (then every summary must be rebuilt)."""
        bucket = f"{bus.subjects.prefix.upper()}_ANALYTICS"
        try:
            return cls(await bus.js.key_value(bucket)), False
        except nats.js.errors.BucketNotFoundError:
            if not create:
                raise
        return cls(await bus.js.create_key_value(api.KeyValueConfig(bucket=bucket, history=1))), True

    async def get(self, session_id: str) -> SessionSummary | None:
        try:
            entry = await self.kv.get(session_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return _summaries.decode(entry.value) if entry.value else None

    async def put(self, summary: SessionSummary) -> None:
        await self.kv.put(summary.session_id, msgspec.json.encode(summary))

    async def all(self) -> list[SessionSummary]:
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        found = [await self.get(key) for key in keys]
        return sorted((s for s in found if s is not None), key=lambda s: s.started_at_ms, reverse=True)


class SummaryCache:
    """The summaries of the sessions folded most recently, at most `limit`: the store has every one, and a session
    that comes back after its summary left the cache is read from there."""

    def __init__(self, limit: int = CACHED_SUMMARIES) -> None:
        self.limit = limit
        self._summaries: OrderedDict[str, SessionSummary] = OrderedDict()

    def __len__(self) -> int:
        return len(self._summaries)

    def get(self, session_id: str) -> SessionSummary | None:
        summary = self._summaries.get(session_id)
        if summary is not None:
            self._summaries.move_to_end(session_id)
        return summary

    def put(self, summary: SessionSummary) -> None:
        self._summaries[summary.session_id] = summary
        self._summaries.move_to_end(summary.session_id)
        while len(self._summaries) > self.limit:
            self._summaries.popitem(last=False)


class AnalyticsWorker:
    def __init__(self, bus: Bus, cached: int = CACHED_SUMMARIES) -> None:
        self.bus = bus
        self.cache = SummaryCache(cached)

    async def run(self, stop: asyncio.Event) -> None:
        store, rebuilt = await SummaryStore.open(self.bus, create=True)
        subscription = await self._subscribe(from_scratch=rebuilt)
        log.info("analytics.ready", rebuilding=rebuilt)
        try:
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(200, timeout=1)
                except TimeoutError:  # nats.errors.TimeoutError, or asyncio's when a batch times out
                    continue
                changed: dict[str, SessionSummary] = {}
                for message in messages:
                    session_id = session_of(message.subject)
                    summary = changed.get(session_id) or self.cache.get(session_id) or await store.get(session_id)
                    folded = fold_entry(summary, entry_of(message))
                    if folded is not None and folded is not summary:
                        changed[session_id] = folded
                for summary in changed.values():
                    await store.put(summary)
                    self.cache.put(summary)
                for message in messages:  # acked only once their effect is stored
                    await message.ack()
        finally:
            await subscription.unsubscribe()

    async def _subscribe(self, from_scratch: bool) -> nats.js.JetStreamContext.PullSubscription:
        s = self.bus.subjects
        if from_scratch:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.bus.js.delete_consumer(s.sessions_stream, DURABLE)
        await self.bus.js.add_consumer(
            s.sessions_stream,
            api.ConsumerConfig(
                durable_name=DURABLE,
                # in.stt: the transcripts of a conversation's user turns, which its client may not have asked for
                filter_subjects=[
                    f"{s.prefix}.session.*.in.edge",
                    f"{s.prefix}.session.*.in.stt",
                    f"{s.prefix}.session.*.out.>",
                ],
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_ack_pending=10_000,
            ),
        )
        return await self.bus.js.pull_subscribe_bind(DURABLE, stream=s.sessions_stream)
