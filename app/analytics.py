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
from dataclasses import dataclass, field

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
# A live session's summary is written at most this often (an ended one at once). Each write stores the whole
# summary, which grows with the session: written at every change, a 2-minute session wrote it 329 times (91 now),
# a rate of about 10,000 writes per session-hour.
WRITE_EVERY_S = 1.0
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


@dataclass
class Unwritten:
    """A session's summary folded further than the store has it, and the log messages it waits to acknowledge."""

    summary: SessionSummary
    since: float  # loop time of its first change not yet written
    messages: list[Msg] = field(default_factory=list)


class AnalyticsWorker:
    def __init__(self, bus: Bus, cached: int = CACHED_SUMMARIES, write_every_s: float = WRITE_EVERY_S) -> None:
        self.bus = bus
        self.cache = SummaryCache(cached)
        self.write_every_s = write_every_s

    async def run(self, stop: asyncio.Event) -> None:
        store, rebuilt = await SummaryStore.open(self.bus, create=True)
        subscription = await self._subscribe(from_scratch=rebuilt)
        log.info("analytics.ready", rebuilding=rebuilt)
        unwritten: dict[str, Unwritten] = {}
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                # Back in time for the next write that falls due, and at least every second to see a stop.
                due = min((u.since + self.write_every_s for u in unwritten.values()), default=loop.time() + 1)
                try:
                    messages = await subscription.fetch(200, timeout=min(1.0, max(0.05, due - loop.time())))
                except TimeoutError:  # nats.errors.TimeoutError, or asyncio's when a batch times out
                    messages = []
                for message in messages:
                    await self._fold(message, store, unwritten, loop.time())
                for session_id, held in list(unwritten.items()):
                    if held.summary.ended_at_ms is not None or loop.time() - held.since >= self.write_every_s:
                        await self._write(store, unwritten.pop(session_id))
            for held in unwritten.values():  # stopping: store what was folded (on an error, the log delivers it again)
                await self._write(store, held)
        finally:
            await subscription.unsubscribe()

    async def _fold(self, message: Msg, store: SummaryStore, unwritten: dict[str, Unwritten], now: float) -> None:
        session_id = session_of(message.subject)
        held = unwritten.get(session_id)
        summary = held.summary if held else self.cache.get(session_id) or await store.get(session_id)
        folded = fold_entry(summary, entry_of(message))
        if folded is not None and folded is not summary:
            if held is None:
                held = unwritten[session_id] = Unwritten(folded, since=now)
            held.summary = folded
        if held is not None:
            held.messages.append(message)  # acknowledged only once the summary that holds it is stored
        else:
            await message.ack()  # it changed nothing

    async def _write(self, store: SummaryStore, held: Unwritten) -> None:
        await store.put(held.summary)
        self.cache.put(held.summary)
        for message in held.messages:
            await message.ack()

    async def _subscribe(self, from_scratch: bool) -> nats.js.JetStreamContext.PullSubscription:
        """The durable consumer, made anew from the first record a worker before this one did not acknowledge: the
        server would deliver those again only after the ack wait, behind newer records of their sessions, which would
        then be skipped as folded already. From the log's start when every summary is to be rebuilt."""
        s = self.bus.subjects
        acknowledged = 0  # stream sequence up to which every record was acknowledged
        with contextlib.suppress(nats.js.errors.NotFoundError):
            info = await self.bus.js.consumer_info(s.sessions_stream, DURABLE)
            await self.bus.js.delete_consumer(s.sessions_stream, DURABLE)
            if info.ack_floor and not from_scratch:
                acknowledged = info.ack_floor.stream_seq or 0
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
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=acknowledged + 1,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_ack_pending=10_000,
            ),
        )
        return await self.bus.js.pull_subscribe_bind(DURABLE, stream=s.sessions_stream)
