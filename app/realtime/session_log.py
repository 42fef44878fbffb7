"""Writing one session to the log: its input records, the server events it produced, and the work it asked for.

Every record the edge writes gets a `Nats-Msg-Id` unique within the session, so a publish retried after a lost
acknowledgement is stored once; audio records carry the audio retention as their time to live. An input record
must fit in one NATS message with room to spare; one that would not is refused before it is published.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine

import nats.js.errors
from nats.js.api import PubAck

from app.bus import LOG_OUTAGE_S, UNANSWERED, Bus, LogUnavailable, encode
from domain import jobs
from domain import records as rec
from domain.events import AnyServerEvent
from domain.jobs import GenerateJob, Job, SynthesizeJob, TranscribeFileJob, TranscribeJob
from domain.protocol.errors import Rejection
from domain.state import CancelResponse, Directive, WithdrawJob
from handlers.ports import now_ms

JOB_QUEUES = {TranscribeJob: "stt", TranscribeFileJob: "stt-file", GenerateJob: "llm", SynthesizeJob: "tts"}
QUEUED_REMEMBERED = 64  # a session's latest transcription jobs whose place in the queue is kept, to withdraw them
# An input record leaves this much of the server's max_payload free: its headers take a few hundred bytes, and the
# events and jobs the state machine makes of it (a `session.updated` repeating the session) are a little larger.
RECORD_HEADROOM_BYTES = 64 * 1024


def queue_of(job: Job) -> str:
    """The work queue a job goes to: a decode while the user speaks has its own, behind the transcripts due."""
    return "stt-partial" if isinstance(job, TranscribeJob) and job.partial else JOB_QUEUES[type(job)]


class RecordTooLarge(Exception):
    """A record the bus cannot carry in one message: the frame it came from is refused."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes once recorded, over the limit of {limit} bytes")


class SessionLog:
    def __init__(self, bus: Bus, session_id: str, audio_max_age_s: int, published: Callable[[str], None]) -> None:
        self.bus = bus
        self.session_id = session_id
        self._audio_max_age_s = audio_max_age_s
        self._published = published  # told `in`, `out` or `jobs` for every record handed to the bus
        self._written = 0
        # work under way that nobody awaits (failures of refused jobs being written, withdrawn jobs waiting for their
        # place in the queue), held here so that it is not collected before it is done
        self._background: set[asyncio.Task[object]] = set()
        self._queued: OrderedDict[str, tuple[TranscribeJob, asyncio.Future[PubAck]]] = OrderedDict()
        self.stored: Callable[[int], None] = lambda seq: None  # told the sequence of every input record stored

    async def write(self, source: str, record: rec.Record) -> None:
        """Append an input record without waiting for the stream (order on this connection is kept)."""
        subject, ttl = self._where(source)
        queued = await self.bus.publish_pipelined(subject, self._encode(record), self._next_id(), ttl_s=ttl)
        self._published("in")
        queued.add_done_callback(self._tell_stored)

    async def write_and_wait(self, source: str, record: rec.Record) -> int:
        """Append an input record; its stream sequence once stored. While NATS is unreachable this waits for it
        (LogUnavailable after LOG_OUTAGE_S) and sends the record again, under the same id: it is stored once."""
        subject, ttl = self._where(source)
        payload, msg_id = self._encode(record), self._next_id()
        self._published("in")  # once, however often it is sent again
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOG_OUTAGE_S
        while True:
            try:
                ack = await self.bus.publish(subject, payload, msg_id, ttl_s=ttl)
                self.stored(ack.seq)
                return int(ack.seq)
            except UNANSWERED:
                if loop.time() >= deadline:
                    raise LogUnavailable(f"the log did not store a record for {LOG_OUTAGE_S:.0f} s") from None
                await self.bus.wait_up(deadline - loop.time())
                await asyncio.sleep(0.2)  # a restarted server answers "no responders" until JetStream is up

    async def reject(self, rejection: Rejection) -> None:
        """A frame the edge could not accept, as a record: the state machine answers it with an `error`."""
        rejection = rejection.bounded()
        await self.write(
            "client",
            rec.ClientEventRejected(
                at_ms=now_ms(),
                code=rejection.code,
                message=rejection.message,
                param=rejection.param,
                event_id=rejection.event_id,
            ),
        )

    async def output(self, event: AnyServerEvent) -> None:
        subject = self.bus.subjects.session_output(self.session_id, event.__struct_config__.tag)  # type: ignore[arg-type]
        await self.bus.publish_pipelined(subject, encode(event), event.event_id)
        self._published("out")

    async def ask(self, job: Directive) -> None:
        if isinstance(job, CancelResponse):  # a signal, not work: core NATS, every worker hears it
            await self.bus.nc.publish(self.bus.subjects.cancel(job.response_id), b"")
            return
        if isinstance(job, WithdrawJob):
            await self._withdraw(job.job_id)
            return
        subject = self.bus.subjects.jobs(queue_of(job), self.session_id)
        queued = await self.bus.publish_pipelined(subject, encode(job), job.job_id)
        self._published("jobs")
        queued.add_done_callback(lambda ack: self._refused(job, ack))
        if isinstance(job, TranscribeJob):
            self._queued[job.job_id] = (job, queued)
            while len(self._queued) > QUEUED_REMEMBERED:
                self._queued.popitem(last=False)

    async def _withdraw(self, job_id: str) -> None:
        """Delete a job from its queue, if it is still there, and record it as failed: under the id of its result,
        so that of a worker's result and this failure, the log keeps whichever came first."""
        job, queued = self._queued.pop(job_id, (None, None))
        if job is None or queued is None:
            return
        if queued.done():
            await self._delete(job, queued)
            return
        # Asked moments ago (speech resumed a frame after a pause that asked for a closing decode): its place in the
        # queue is not known yet. Ignoring it left the job to run, and under load the queue's acknowledgements take
        # tens of milliseconds, so a pause shorter than that in every session queued a decode nobody wanted.
        self._in_background(self._delete(job, queued))

    async def _delete(self, job: TranscribeJob, queued: "asyncio.Future[PubAck]") -> None:
        await asyncio.wait([queued])
        if queued.cancelled() or queued.exception() is not None:  # never queued (a refused job has failed already)
            return
        try:
            await self.bus.js.delete_msg(self.bus.subjects.jobs_stream, queued.result().seq)
        except nats.js.errors.APIError:  # "no message found" (a 500 from JetStream): a worker has finished it
            return
        record = jobs.failed(job, "Withdrawn before a worker took it: no longer needed.", "edge", now_ms())
        subject = self.bus.subjects.session_input(self.session_id, "stt")
        self._published("in")
        await self.bus.publish(subject, encode(record), f"{job.job_id}.result")

    def _tell_stored(self, ack: "asyncio.Future[PubAck]") -> None:
        if not ack.cancelled() and ack.exception() is None:
            self.stored(ack.result().seq)

    def _refused(self, job: Job, ack: "asyncio.Future[PubAck]") -> None:
        """A job the queue would not take (it is full) fails at once: the session is told, not left waiting."""
        if ack.cancelled() or ack.exception() is None:
            return
        message = "The server is too busy to take this work now; try again shortly."
        record = jobs.failed(job, message, "edge", now_ms())
        source = JOB_QUEUES[type(job)]
        subject = self.bus.subjects.session_input(self.session_id, source)
        self._in_background(self.bus.publish(subject, encode(record), f"{job.job_id}.refused"))
        self._published("in")

    def _in_background(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drop_jobs(self, kinds: tuple[str, ...]) -> None:
        await self.bus.drop_jobs(self.session_id, kinds)

    def _encode(self, record: rec.Record) -> bytes:
        payload = encode(record)
        limit = self.bus.nc.max_payload - RECORD_HEADROOM_BYTES
        if len(payload) > limit:
            raise RecordTooLarge(len(payload), limit)
        return payload

    def _where(self, source: str) -> tuple[str, float | None]:
        ttl = self._audio_max_age_s if source == "audio" else None
        return self.bus.subjects.session_input(self.session_id, source), ttl

    def _next_id(self) -> str:
        self._written += 1
        return f"{self.session_id}.edge.{self._written}"
