"""The TTS worker: takes synthesis jobs (one clause of a response each) from the JetStream work queue and
publishes the clause's speech, chunk by chunk as it is synthesised, to the session's `in.tts` subject.

Workers are competing consumers of one durable pull consumer ("tts"). A chunk's `Nats-Msg-Id` is
`<job_id>.<chunk_index>`, so a redelivered job cannot record a chunk twice. The final chunk has `last=True`
(a clause with nothing to say is one empty chunk with `last=True`); a failure is a `SpeechFailed` record.

Cancelling: a core NATS message on `<prefix>.cancel.<response_id>` (any payload) marks the response cancelled, and
one on `<prefix>.drop.<session_id>` every response of a session whose client left. The worker checks before
synthesising a job and between chunks; an unwanted job publishes nothing more (no `last` chunk either) and is
acknowledged. A job past its deadline fails its response.

A job taken over from a worker that stopped is synthesised again; Kokoro makes the same chunks from the same text,
so the chunks the first worker recorded are dropped as duplicates by their ids, and the state machine takes each
chunk once, in order.
"""

import asyncio
import contextlib
import time

import msgspec
import structlog

from domain import records as rec
from domain.jobs import SynthesizeJob, failed
from handlers.job_loop import Unwanted, in_thread, serve_jobs
from handlers.ports import Delivery, WorkerBus, now_ms
from handlers.tts import Synthesizer, UnknownVoice, encode_chunks

log = structlog.get_logger(__name__)
_jobs = msgspec.json.Decoder(SynthesizeJob)


class TtsWorker:
    def __init__(self, bus: WorkerBus, synthesizer: Synthesizer, worker_id: str) -> None:
        self.bus = bus
        self.synthesizer = synthesizer
        self.worker_id = worker_id
        self.unwanted = Unwanted("tts")
        self.ready = asyncio.Event()  # set once the worker listens for cancels and jobs

    async def run(self, stop: asyncio.Event) -> None:
        listening = await self.unwanted.listen(self.bus)
        self.ready.set()
        log.info("tts.worker.ready", worker=self.worker_id)
        try:
            await serve_jobs(self.bus, ("tts",), self.handle, stop)
        finally:
            for subscription in listening:
                await subscription.unsubscribe()

    async def handle(self, message: Delivery) -> None:
        job = _jobs.decode(message.data)
        started = time.perf_counter()
        sent = 0
        why = self.unwanted.why(job)
        outcome = why or "stopped"  # "stopped": cancelled mid-clause
        try:
            if why == "expired":
                note = "The server was too busy to speak this answer in time; try again shortly."
                await self.bus.publish_record(
                    job.session_id, "tts", failed(job, note, self.worker_id, now_ms()), f"{job.job_id}.failed"
                )
            elif why is None:
                pending: bytes | None = None
                speech = in_thread(
                    lambda: encode_chunks(self.synthesizer.synthesize(job.text, job.voice, job.speed), job.audio_format)
                )
                async with contextlib.aclosing(speech) as chunks:  # leaving it stops the synthesis thread
                    async for chunk in chunks:
                        if self.unwanted.stopped(job):
                            break
                        if pending is not None:
                            await self._publish(job, sent, pending, last=False)
                            sent += 1
                        pending = chunk
                    else:
                        if not self.unwanted.stopped(job):
                            await self._publish(job, sent, pending or b"", last=True)
                            sent += 1
                            outcome = "done"
        except Exception as error:
            if isinstance(error, UnknownVoice):  # the client's mistake: no traceback
                log.warning("tts.job.failed", job_id=job.job_id, session_id=job.session_id, error=str(error))
            else:
                log.exception("tts.job.failed", job_id=job.job_id, session_id=job.session_id)
            outcome = "failed"
            record = failed(job, f"Speech synthesis failed: {error}", self.worker_id, now_ms())
            await self.bus.publish_record(job.session_id, "tts", record, f"{job.job_id}.failed")
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

    async def _publish(self, job: SynthesizeJob, index: int, audio: bytes, last: bool) -> None:
        record = rec.SpeechSynthesized(
            at_ms=now_ms(),
            job_id=job.job_id,
            response_id=job.response_id,
            clause_index=job.clause_index,
            chunk_index=index,
            audio=audio,
            last=last,
            worker=self.worker_id,
        )
        await self.bus.publish_record(job.session_id, "tts", record, f"{job.job_id}.{index}")
