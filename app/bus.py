"""The NATS JetStream bus: subjects, streams, and the few ways Vocalis reads and writes records.

Subjects (prefix `vocalis` by default):
    <prefix>.session.<sid>.in.<edge|client|audio|stt>   the inputs of a session, reduced in stream order
    <prefix>.session.<sid>.out.<event type>             the server events the state machine produced
    <prefix>.jobs.<stt|stt-file|stt-partial|llm|tts>.<sid>       work queues of the model workers, by session
    <prefix>.cancel.<response id>                       core NATS: stop generating and speaking a response
    <prefix>.drop.<sid>                                 core NATS: the session wants no more jobs of the kinds
                                                        listed in the payload (its client left, or it ended)
    <prefix>.edge.<edge id>.alive                       core NATS: an edge's heartbeat, with the sessions it holds
"""

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import SplitResult, urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from domain.records import AudioReceived, ItemAudioReceived, Record

log = structlog.get_logger(__name__)

MSG_ID = "Nats-Msg-Id"
# When the publisher handed a record to NATS, in epoch nanoseconds: with the time JetStream stored it, and the
# stamps of the records a session answered it with, the edge's and the bus's share of a reply's latency, to the
# microsecond (a record's `at_ms` has milliseconds only, too coarse for an overhead of a few).
SENT_NS = "Vocalis-Sent-Ns"
WORKER_KINDS = ("stt", "stt-file", "stt-partial", "llm", "tts")
# A job whose worker stopped telling the queue it is alive (handlers.job_loop.HEARTBEAT_S) goes to another worker.
ACK_WAIT_S = 5.0
# Jobs a queue holds, in all and for one session of one kind: past them a job is refused, and the session is told
# its result failed. Jobs also expire unstarted (domain.jobs), so these bound a burst, not a backlog.
MAX_QUEUED_JOBS = 10_000
MAX_QUEUED_JOBS_PER_SESSION = 200
# While NATS is unreachable, what is published waits in the connection's buffer (nats-py's `pending_size`) and is
# sent when it is back. This is the bound for all of a process's sessions together: about 150 sessions' 10 s of
# audio (nats-py's default, 2 MiB, is 50 s of one). A publish that does not fit fails at once.
OUTAGE_BUFFER_BYTES = 64 << 20
# How long a session waits for NATS to come back before it ends (its audio meanwhile waits in that buffer).
LOG_OUTAGE_S = 10.0
# What JetStream answers while it is unreachable, still starting after a restart, or electing a leader: worth another
# try. (Its API says "no responders" as ServiceUnavailableError.)
UNANSWERED = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
# A feed that has not delivered a record the stream is known to hold for this long has lost its consumer.
FEED_STALL_S = 3.0
# A stream that answers none of these has no leader for now: a cluster elects a new one within seconds when its
# leader's node is lost. The record is published again under the same Nats-Msg-Id (stored once, whatever happened).
NO_LEADER = (nats.js.errors.NoStreamResponseError, nats.errors.TimeoutError)
ELECTION_S = 30.0
# How long an STT worker waits for the audio records of a job (a replica that answers may be a little behind).
AUDIO_READ_S = 10.0
_records = msgspec.json.Decoder(Record)
_encode = msgspec.json.Encoder().encode


def _headers(msg_id: str) -> dict[str, str]:
    return {MSG_ID: msg_id, SENT_NS: str(time.time_ns())}


def encode(value: object) -> bytes:
    return _encode(value)


def decode_record(payload: bytes) -> Record:
    record: Record = _records.decode(payload)
    return record


class Subjects:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sessions_stream = f"{prefix.upper()}_SESSIONS"
        self.jobs_stream = f"{prefix.upper()}_JOBS"

    def session_inputs(self, session_id: str) -> str:
        return f"{self.prefix}.session.{session_id}.in.>"

    def session_input(self, session_id: str, source: str) -> str:
        return f"{self.prefix}.session.{session_id}.in.{source}"

    def session_output(self, session_id: str, event_type: str) -> str:
        return f"{self.prefix}.session.{session_id}.out.{event_type}"

    def jobs(self, kind: str, session_id: str) -> str:
        return f"{self.prefix}.jobs.{kind}.{session_id}"

    def drop(self, session_id: str) -> str:
        return f"{self.prefix}.drop.{session_id}"

    def cancel(self, response_id: str) -> str:
        return f"{self.prefix}.cancel.{response_id}"

    def edge_alive(self, edge_id: str) -> str:
        return f"{self.prefix}.edge.{edge_id}.alive"

    def hang_up(self, call_id: str) -> str:
        return f"{self.prefix}.call.{call_id}.hangup"


class Bus:
    """The NATS connection as every part of Vocalis uses it; it is the `WorkerBus` the model workers are given."""

    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(publish_async_max_pending=10_000)
        self.subjects = subjects
        # Exactly one is set: those who must act when the connection goes or comes back wait on them.
        self.up = asyncio.Event()
        self.down = asyncio.Event()
        self.up.set()
        self._resumed = asyncio.Event()  # cleared while pipelined records wait to be published again
        self._resumed.set()
        self._again: deque[tuple[tuple[str, bytes, str, float | None], asyncio.Future[api.PubAck]]] = deque()
        self._republishing: asyncio.Task[None] | None = None

    def _connection(self, up: bool) -> None:
        (self.up if up else self.down).set()
        (self.down if up else self.up).clear()

    async def wait_up(self, seconds: float) -> None:
        """Until the connection is up; LogUnavailable after `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self.up.wait()
        except TimeoutError:
            raise LogUnavailable(f"NATS was unreachable for {seconds:.0f} s") from None

    @classmethod
    async def connect(cls, url: str, prefix: str, name: str, *, attempts: int | None = None) -> "Bus":
        """Connect to the NATS at `url` (several servers may be listed, comma-separated).

        Until one of them answers, each failed attempt is one log line and the next comes after a growing pause;
        after `attempts` of them (None: without end) NatsUnreachable says why. Once connected, a lost connection
        is re-established without end, one log line per event."""
        servers = _servers(url)
        credentials = next((_address(s) for s in servers if _address(s).username), None)
        await reachable(url, attempts)
        connected: list[Bus] = []

        async def disconnected() -> None:
            if connected and not (connected[0].nc.is_draining or connected[0].nc.is_closed):  # not our own close
                log.warning("nats.disconnected")
                connected[0]._connection(up=False)

        async def reconnected() -> None:
            log.info("nats.reconnected")
            if connected:
                connected[0]._connection(up=True)

        nc = await nats.connect(
            servers=servers,
            # Given once, for every server: nats-py would try the ones a cluster announces without any.
            user=credentials.username if credentials else None,
            password=credentials.password if credentials else None,
            name=name,
            dont_randomize=True,  # the servers in the order given: a process's own node first
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            pending_size=OUTAGE_BUFFER_BYTES,
            error_cb=_log_error,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
        )
        connected.append(cls(nc, Subjects(prefix)))
        return connected[0]

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.js.publish_async_completed(), timeout=5)
        except TimeoutError:
            log.warning("bus.close.pending_publishes", pending=self.js.publish_async_pending())
        await self.nc.drain()

    async def ensure_streams(self, max_age_s: int, max_bytes: int, replicas: int = 1) -> None:
        """Create or update the streams and consumers; safe to run at every start, from every process."""
        s = self.subjects
        await self._upsert_stream(
            api.StreamConfig(
                name=s.sessions_stream,
                subjects=[f"{s.prefix}.session.>"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                max_age=float(max_age_s),
                max_bytes=max_bytes,
                duplicate_window=120.0,
                allow_msg_ttl=True,  # audio records carry a shorter time to live (Nats-TTL)
                allow_direct=True,  # the STT workers read audio with direct gets (`read_audio`)
                num_replicas=replicas,
            )
        )
        await self._upsert_stream(
            api.StreamConfig(
                name=s.jobs_stream,
                subjects=[f"{s.prefix}.jobs.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
                num_replicas=replicas,
                max_msgs=MAX_QUEUED_JOBS,
                max_msgs_per_subject=MAX_QUEUED_JOBS_PER_SESSION,
                discard=api.DiscardPolicy.NEW,
                discard_new_per_subject=True,
            )
        )
        for kind in WORKER_KINDS:
            config = api.ConsumerConfig(
                durable_name=kind,
                filter_subject=s.jobs(kind, ">"),
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                max_deliver=50,  # a backstop: a job's deadline ends it sooner, one that kills every worker included
                max_ack_pending=1000,
            )
            try:
                await self.js.add_consumer(s.jobs_stream, config)
            except nats.js.errors.BadRequestError:  # made by an older Vocalis: take the new settings
                await self.js.delete_consumer(s.jobs_stream, kind)
                await self.js.add_consumer(s.jobs_stream, config)

    async def _upsert_stream(self, config: api.StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            await self.js.update_stream(config)

    async def publish(self, subject: str, payload: bytes, msg_id: str, ttl_s: float | None = None) -> api.PubAck:
        """Publish and wait for the stream's acknowledgement, through a leader election (ELECTION_S at most)."""
        deadline = asyncio.get_running_loop().time() + ELECTION_S
        while True:
            try:
                return await self.js.publish(subject, payload, headers=_headers(msg_id), msg_ttl=ttl_s)
            except NO_LEADER:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    raise asyncio.CancelledError from None  # a cancellation that nats-py's wait_for turned into this
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def publish_pipelined(
        self, subject: str, payload: bytes, msg_id: str, ttl_s: float | None = None
    ) -> "asyncio.Future[api.PubAck]":
        """Publish without waiting for the acknowledgement (order on this connection is kept). A record that found
        no stream leader is published again, and the records after it wait until it is stored."""
        await self._resumed.wait()
        stored: asyncio.Future[api.PubAck] = asyncio.get_running_loop().create_future()
        stored.add_done_callback(_log_failed_publish)
        sent = await self.js.publish_async(subject, payload, headers=_headers(msg_id), msg_ttl=ttl_s)
        sent.add_done_callback(functools.partial(self._settle, stored, (subject, payload, msg_id, ttl_s)))
        return stored

    def _settle(
        self,
        stored: "asyncio.Future[api.PubAck]",
        record: tuple[str, bytes, str, float | None],
        sent: "asyncio.Future[api.PubAck]",
    ) -> None:
        if sent.cancelled():
            stored.cancel()
        elif isinstance(sent.exception(), NO_LEADER):
            self._resumed.clear()
            self._again.append((record, stored))
            if self._republishing is None or self._republishing.done():
                self._republishing = asyncio.create_task(self._republish())
        elif (error := sent.exception()) is not None:
            stored.set_exception(error)
        else:
            stored.set_result(sent.result())

    async def _republish(self) -> None:
        """The records that found no leader, in the order they were sent, one at a time."""
        while self._again:
            record, stored = self._again.popleft()
            try:
                stored.set_result(await self.publish(*record))
            except Exception as error:
                stored.set_exception(error)
        self._resumed.set()

    async def subscribe_session(self, session_id: str) -> "OrderedFeed":
        """All inputs of one session, in stream order, from its first record."""
        return await OrderedFeed.open(self, self.subjects.session_inputs(session_id), api.DeliverPolicy.ALL)

    async def subscribe_results(self, session_id: str, source: str) -> "OrderedFeed":
        """One session's input records from `source` (a worker kind), in stream order, from its first: what a REST
        request waits for, without reading back the audio it recorded."""
        return await OrderedFeed.open(self, self.subjects.session_input(session_id, source), api.DeliverPolicy.ALL)

    async def read_audio(
        self, session_id: str, first_seq: int, last_seq: int
    ) -> list[AudioReceived | ItemAudioReceived]:
        """The session's audio records with stream sequences first_seq..last_seq; read again from the first while
        JetStream does not answer (a cluster electing a leader), ELECTION_S at most."""
        deadline = asyncio.get_running_loop().time() + ELECTION_S
        while True:
            try:
                return await self._read_audio(session_id, first_seq, last_seq)
            except UNANSWERED:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _read_audio(
        self, session_id: str, first_seq: int, last_seq: int
    ) -> list[AudioReceived | ItemAudioReceived]:
        """Read with batched direct gets: a consumer made and deleted for every job (one per 0.4-0.8 s of speech of
        every session, with live decoding) costs the server far more. Any replica may answer a direct get, and one
        that is behind ends its batch early: the rest is asked for again until AUDIO_READ_S is over."""
        subject = self.subjects.session_input(session_id, "audio")
        records: list[AudioReceived | ItemAudioReceived] = []
        next_seq = first_seq
        deadline = asyncio.get_running_loop().time() + AUDIO_READ_S
        while True:
            # At most last_seq - next_seq + 1 audio records lie in the range: the batch reaches last_seq unless it
            # ends early. (The server does not stop a batch at a sequence: records after last_seq are left.)
            for seq, data in await self._direct_get(subject, next_seq, batch=last_seq - next_seq + 1):
                if seq > last_seq:
                    break
                record = decode_record(data)
                if isinstance(record, AudioReceived | ItemAudioReceived):
                    records.append(record)
                next_seq = seq + 1
            if next_seq > last_seq:
                return records
            if asyncio.get_running_loop().time() > deadline:
                raise nats.errors.TimeoutError(f"audio records {next_seq}..{last_seq} of {session_id} not found")
            await asyncio.sleep(0.05)

    async def _direct_get(self, subject: str, first_seq: int, batch: int) -> list[tuple[int, bytes]]:
        """The sequences and payloads of up to `batch` records on `subject`, from `first_seq` on (JetStream's
        batched direct get: one request, a reply per record, then an end-of-batch status; nats-py has no call
        for it)."""
        inbox = self.nc.new_inbox()
        replies = await self.nc.subscribe(inbox)
        try:
            request = encode({"seq": first_seq, "next_by_subj": subject, "batch": batch})
            await self.nc.publish(f"{api.DEFAULT_PREFIX}.DIRECT.GET.{self.subjects.sessions_stream}", request, inbox)
            found: list[tuple[int, bytes]] = []
            while True:
                reply = await replies.next_msg(timeout=AUDIO_READ_S)
                headers = reply.headers or {}
                match headers.get("Status"):
                    case None:
                        found.append((int(headers["Nats-Sequence"]), reply.data))
                    case "204" | "404":  # the end of the batch; none at all
                        return found
                    case "503":
                        raise nats.errors.NoRespondersError
                    case status:
                        raise nats.js.errors.APIError(code=int(status), description=headers.get("Description"))
        finally:
            await replies.unsubscribe()

    async def job_queue(self, kind: str) -> "JobQueue":
        return JobQueue(await self.js.pull_subscribe_bind(kind, stream=self.subjects.jobs_stream))

    async def waiting_workers(self, kinds: tuple[str, ...]) -> dict[str, int]:
        """Of each kind, the live workers' fetches and the jobs in hand: a worker fetches only once its model is
        loaded, and keeps a fetch outstanding while it is alive and idle (renewed every second: two looks)."""
        found = {}
        for kind in kinds:
            for look in range(2):
                info = await self.js.consumer_info(self.subjects.jobs_stream, kind)
                found[kind] = (info.num_waiting or 0) + (info.num_ack_pending or 0)
                if found[kind] or look:
                    break
                await asyncio.sleep(0.05)
        return found

    async def publish_record(self, session_id: str, source: str, record: Record, msg_id: str) -> None:
        await self.publish(self.subjects.session_input(session_id, source), encode(record), msg_id)

    async def drop_jobs(self, session_id: str, kinds: Sequence[str]) -> None:
        """The session wants no more jobs of `kinds`: the queued ones are deleted unseen, and the workers running
        one hear it and stop.

        One by one, not by a purge of their subjects: after such a purge, the queue's consumer sometimes held back
        another session's job, queued at the time, until its ack wait ran out (5 s late, with the worker idle; in
        bench.concurrency, as sessions closed)."""
        await self.nc.publish(self.subjects.drop(session_id), " ".join(kinds).encode())
        for kind in kinds:
            async for seq in self._queued(self.subjects.jobs(kind, session_id)):
                with contextlib.suppress(nats.js.errors.APIError):  # a worker finished it meanwhile
                    await self.js.delete_msg(self.subjects.jobs_stream, seq)

    async def _queued(self, subject: str) -> AsyncIterator[int]:
        """The stream sequences of the jobs queued on `subject`, oldest first."""
        seq = 0
        while True:
            try:
                queued = await self.js.get_msg(self.subjects.jobs_stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            if queued.seq is None:  # always set on a message read from a stream
                return
            yield queued.seq
            seq = queued.seq + 1

    async def on_drop(self, heard: Callable[[str, Sequence[str]], None]) -> Subscription:
        prefix = self.subjects.drop("")

        async def deliver(message: Msg) -> None:
            if session_id := message.subject.removeprefix(prefix):
                heard(session_id, message.data.decode().split())

        return await self.nc.subscribe(self.subjects.drop("*"), cb=deliver)

    async def on_cancel(self, heard: Callable[[str], None]) -> Subscription:
        """Cancel signals are core NATS, not records: every worker hears each one, and none is kept."""
        prefix = self.subjects.cancel("")

        async def deliver(message: Msg) -> None:
            if response_id := message.subject.removeprefix(prefix):
                heard(response_id)

        return await self.nc.subscribe(self.subjects.cancel(">"), cb=deliver)


class OrderedFeed:
    """An ordered consumer that is made anew, from the record after the last one handed out, each time the connection
    comes back (`renew`). A restarted server has lost it (ordered consumers live in memory), and nats-py notices that
    only once two idle heartbeats are missed: the records of the first 10 s after a reconnect would wait that long."""

    def __init__(self, bus: Bus, subject: str, first: api.DeliverPolicy) -> None:
        self._bus = bus
        self._subject = subject
        self._first = first
        self._next_seq = 0  # 0: nothing handed out yet
        self._stored = 0  # the latest record of the feed that the stream is known to hold
        self._sub: JetStreamContext.PushSubscription | None = None

    @classmethod
    async def open(cls, bus: Bus, subject: str, first: api.DeliverPolicy) -> "OrderedFeed":
        feed = cls(bus, subject, first)
        feed._sub = await feed._subscribe()
        return feed

    async def _subscribe(self) -> JetStreamContext.PushSubscription:
        stream = self._bus.subjects.sessions_stream
        if self._next_seq == 0:
            return await self._bus.js.subscribe(
                self._subject, stream=stream, ordered_consumer=True, deliver_policy=self._first
            )
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._next_seq)
        return await self._bus.js.subscribe(self._subject, stream=stream, ordered_consumer=True, config=config)

    @property
    def messages(self) -> AsyncIterator[Msg]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Msg]:
        while (sub := self._sub) is not None:
            async for message in sub.messages:
                seq = message.metadata.sequence.stream
                if seq >= self._next_seq:  # a renewed consumer may repeat what its predecessor delivered
                    self._next_seq = seq + 1
                    yield message
            if self._sub is sub:  # ended, not renewed
                return

    async def renew(self) -> None:
        """Go on from the next record with a new consumer (the connection is back, or the consumer was lost with its
        node); LogUnavailable if JetStream does not make one within ELECTION_S (a cluster may be electing leaders)."""
        old = self._sub
        if old is None:
            return
        deadline = asyncio.get_running_loop().time() + ELECTION_S
        while True:
            try:
                new = await self._subscribe()
                break
            except UNANSWERED:  # a restarted server may take a moment to serve JetStream
                if asyncio.get_running_loop().time() > deadline:
                    raise LogUnavailable(f"JetStream did not answer for {ELECTION_S:.0f} s") from None
                await asyncio.sleep(0.2)
        if self._sub is not old:  # closed meanwhile
            await new.unsubscribe()
            return
        self._sub = new
        with contextlib.suppress(nats.errors.Error):
            await old.unsubscribe()  # ends its iteration: `messages` goes on with the new one

    def stored(self, seq: int) -> None:
        """The stream holds record `seq` of this feed (its writer has the acknowledgement)."""
        self._stored = max(self._stored, seq)

    async def watch(self) -> None:
        """Renew the consumer when records the stream holds stop arriving. In a cluster, an ordered consumer lives on
        one node; when that node is lost, the stream goes on on the others but the consumer is gone, and the
        connection to a surviving node never drops to say so."""
        stalled_at: tuple[float, int] | None = None
        while True:
            await asyncio.sleep(FEED_STALL_S / 3)
            if self._sub is None or self._stored < self._next_seq:
                stalled_at = None
                continue
            now = asyncio.get_running_loop().time()
            if stalled_at is None or stalled_at[1] != self._next_seq:  # new, or moving: watch it from here
                stalled_at = (now, self._next_seq)
            elif now - stalled_at[0] >= FEED_STALL_S:
                log.warning("bus.feed.stalled", subject=self._subject, waiting_for=self._next_seq, stored=self._stored)
                with contextlib.suppress(LogUnavailable):  # the next round tries again
                    await self.renew()
                stalled_at = None

    async def unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()


class JobQueue:
    """A worker's pull consumer. While the consumer has no leader (a cluster electing one) a fetch finds no job,
    as the workers' loop expects, instead of an error that would end it."""

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self._subscription = subscription

    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Msg]:  # noqa: ASYNC109 (nats-py's)
        try:
            return await self._subscription.fetch(batch, timeout=timeout)
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            await asyncio.sleep(min(timeout or 1.0, 1.0))
            raise nats.errors.TimeoutError from None

    async def consumer_info(self) -> api.ConsumerInfo:
        return await self._subscription.consumer_info()

    async def unsubscribe(self) -> None:
        await self._subscription.unsubscribe()


class NatsUnreachable(ConnectionError):
    pass


class LogUnavailable(ConnectionError):
    """NATS, and so the log, stayed out of reach longer than a session may wait."""


def _servers(url: str) -> list[str]:
    return [server.strip() for server in url.split(",") if server.strip()]


async def reachable(url: str, attempts: int | None = None) -> None:
    """Until a TCP connection to one of the servers of `url` succeeds; NatsUnreachable after `attempts` rounds."""
    servers = _servers(url)
    pause, attempt = 0.5, 0
    while True:
        attempt += 1
        errors = []
        for server in servers:
            address = _address(server)
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(address.hostname or "127.0.0.1", address.port or 4222), 5
                )
            except (OSError, TimeoutError) as error:
                errors.append(f"{_without_credentials(server)}: {_reason(error)}")
                continue
            writer.close()
            return
        if attempts is not None and attempt >= attempts:
            raise NatsUnreachable(f"cannot reach NATS at {', '.join(errors)}")
        if attempts is None:  # a long-running part says why it waits; a tool says it once, when it gives up
            log.warning("nats.unreachable", attempt=attempt, retry_in_s=pause, errors=errors)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 10.0)


def _address(server: str) -> SplitResult:
    return urlsplit(server if "://" in server else f"nats://{server}")


def _without_credentials(server: str) -> str:
    address = _address(server)
    return f"{address.scheme}://{address.hostname}:{address.port or 4222}"


def _reason(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError) or "refused" in str(error).lower():
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "no answer within 5 s"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


async def _log_error(error: Exception) -> None:
    log.warning("nats.error", error=_reason(error))


def _log_failed_publish(future: "asyncio.Future[api.PubAck]") -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        log.error("bus.publish.failed", error=repr(error))
