"""The TTS worker: takes synthesis jobs (one clause of a response each) from the JetStream work queue and
publishes the clause's speech, chunk by chunk as it is synthesised, to the session's `in.tts` subject.

Workers are competing consumers of one durable pull consumer ("tts"). A chunk's `Nats-Msg-Id` is
`<job_id>.<chunk_index>`, so a redelivered job cannot record a chunk twice. The final chunk has `last=True`
(a clause with nothing to say is one empty chunk with `last=True`); a failure is a `SpeechFailed` record.

Cancelling: a core NATS message on `<prefix>.cancel.<response_id>` (any payload) marks the response cancelled.
The worker checks before synthesising a job and between chunks; a cancelled response's jobs publish nothing more
(no `last` chunk either) and are acknowledged.
"""

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import api

from vocalis.app.bus import Bus, encode
from vocalis.domain import records as rec
from vocalis.domain.jobs import SynthesizeJob
from vocalis.handlers.tts import Synthesizer, UnknownVoice, encode_chunks

log = structlog.get_logger(__name__)
_jobs = msgspec.json.Decoder(SynthesizeJob)
_DONE = object()
_PROGRESS_EVERY = 10  # chunks (about a second of audio) between in-progress signals to JetStream
MAX_CANCELLED = 10_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def ensure_consumer(bus: Bus, kind: str) -> None:
    """The durable pull consumer `kind` on the jobs stream, as `Bus.ensure_streams` makes the "stt" one."""
    await bus.js.add_consumer(
        bus.subjects.jobs_stream,
        api.ConsumerConfig(
            durable_name=kind,
            filter_subject=bus.subjects.jobs(kind),
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=60.0,
            max_deliver=3,
            max_ack_pending=1000,
        ),
    )


class CancelledResponses:
    """The most recent `limit` cancelled response ids."""

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


class TtsWorker:
    def __init__(self, bus: Bus, synthesizer: Synthesizer, worker_id: str) -> None:
        self.bus = bus
        self.synthesizer = synthesizer
        self.worker_id = worker_id
        self.cancelled = CancelledResponses()
        self.ready = asyncio.Event()  # set once the worker listens for cancels and jobs

    def cancel_subject(self, response_id: str = ">") -> str:
        return f"{self.bus.subjects.prefix}.cancel.{response_id}"

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_consumer(self.bus, "tts")
        cancels = await self.bus.nc.subscribe(self.cancel_subject(), cb=self._on_cancel)
        subscription = await self.bus.job_subscription("tts")
        self.ready.set()
        log.info("tts.worker.ready", worker=self.worker_id)
        try:
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(1, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    await self.handle(message)
        finally:
            await subscription.unsubscribe()
            await cancels.unsubscribe()

    async def _on_cancel(self, message: Msg) -> None:
        response_id = message.subject.removeprefix(self.cancel_subject(""))
        if response_id:
            self.cancelled.add(response_id)
            log.info("tts.response.cancelled", response_id=response_id)

    async def handle(self, message: Msg) -> None:
        job = _jobs.decode(message.data)
        subject = self.bus.subjects.session_input(job.session_id, "tts")
        started = time.perf_counter()
        sent = 0
        outcome = "cancelled"
        try:
            if job.response_id not in self.cancelled:
                abandon = threading.Event()
                pending: bytes | None = None
                async with contextlib.aclosing(self._synthesize(job, abandon)) as chunks:
                    async for chunk in chunks:
                        if job.response_id in self.cancelled:
                            abandon.set()
                            break
                        if pending is not None:
                            await self._publish(subject, job, sent, pending, last=False)
                            sent += 1
                            if sent % _PROGRESS_EVERY == 0:
                                await message.in_progress()
                        pending = chunk
                    else:
                        if job.response_id not in self.cancelled:
                            await self._publish(subject, job, sent, pending or b"", last=True)
                            sent += 1
                            outcome = "done"
        except Exception as error:
            if isinstance(error, UnknownVoice):  # the client's mistake: no traceback
                log.warning("tts.job.failed", job_id=job.job_id, session_id=job.session_id, error=str(error))
            else:
                log.exception("tts.job.failed", job_id=job.job_id, session_id=job.session_id)
            outcome = "failed"
            failed = rec.SpeechFailed(
                at_ms=_now_ms(),
                job_id=job.job_id,
                response_id=job.response_id,
                clause_index=job.clause_index,
                message=f"Speech synthesis failed: {error}",
                worker=self.worker_id,
            )
            await self.bus.publish(subject, encode(failed), f"{job.job_id}.failed")
        await message.ack()
        log.info(
            "tts.job.done",
            job_id=job.job_id,
            response_id=job.response_id,
            clause_index=job.clause_index,
            chunks=sent,
            seconds=round(time.perf_counter() - started, 3),
            outcome=outcome,
        )

    async def _publish(self, subject: str, job: SynthesizeJob, index: int, audio: bytes, last: bool) -> None:
        record = rec.SpeechSynthesized(
            at_ms=_now_ms(),
            job_id=job.job_id,
            response_id=job.response_id,
            clause_index=job.clause_index,
            chunk_index=index,
            audio=audio,
            last=last,
            worker=self.worker_id,
        )
        await self.bus.publish(subject, encode(record), f"{job.job_id}.{index}")

    async def _synthesize(self, job: SynthesizeJob, abandon: threading.Event) -> AsyncIterator[bytes]:
        """Synthesise in a thread; hand each chunk over as soon as it is encoded. Setting `abandon` stops the
        thread after the chunk (or Kokoro batch) in hand."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def produce() -> None:
            try:
                pcm = self.synthesizer.synthesize(job.text, job.voice, job.speed)
                for chunk in encode_chunks(pcm, job.audio_format):
                    if abandon.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except Exception as error:
                loop.call_soon_threadsafe(queue.put_nowait, error)
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        producer = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            abandon.set()
            await producer
