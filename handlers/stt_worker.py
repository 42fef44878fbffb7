"""The STT worker: takes transcription jobs from the JetStream work queue, reads each turn's audio from the
session's log, and publishes the transcript as it is decoded.

Workers are competing consumers of one durable pull consumer, so any number of them share the turns. A result
record's `Nats-Msg-Id` derives from its job, so a redelivered job cannot record a result twice.
"""

import asyncio
import contextlib
import time

import msgspec
import numpy as np
import structlog

from domain import records as rec
from domain.audio_time import MODEL_RATE
from domain.jobs import TranscribeJob
from handlers.job_loop import in_thread, serve_jobs
from handlers.ports import Delivery, WorkerBus, now_ms
from handlers.stt import Transcriber

log = structlog.get_logger(__name__)
_jobs = msgspec.json.Decoder(TranscribeJob)


def turn_audio(job: TranscribeJob, records: list[rec.AudioReceived | rec.ItemAudioReceived]) -> np.ndarray:
    """The job's samples [start_sample, end_sample), as float32, from the audio records that hold them."""
    pcm = np.frombuffer(b"".join(r.pcm16k for r in records), dtype="<i2")
    begin = job.start_sample - job.first_sample
    return pcm[begin : begin + job.end_sample - job.start_sample].astype(np.float32) / 32768.0


def words_decoded(
    job: TranscribeJob, decoded: list[tuple[str, float, float]], language: str, worker: str, at_ms: int
) -> rec.WordsDecoded:
    """A decode's words (text, start and end in seconds of the job's audio) as a record: their times become
    positions in the session's audio stream."""
    at = job.start_sample
    return rec.WordsDecoded(
        at_ms=at_ms,
        job_id=job.job_id,
        item_id=job.item_id,
        start_sample=job.start_sample,
        end_sample=job.end_sample,
        words=tuple(
            rec.Word(text, at + round(start * MODEL_RATE), at + round(end * MODEL_RATE)) for text, start, end in decoded
        ),
        worker=worker,
        language=language,
    )


class SttWorker:
    def __init__(self, bus: WorkerBus, transcriber: Transcriber, worker_id: str) -> None:
        self.bus = bus
        self.transcriber = transcriber
        self.worker_id = worker_id

    async def run(self, stop: asyncio.Event) -> None:
        log.info("stt.worker.ready", worker=self.worker_id)
        await serve_jobs(self.bus, ("stt", "stt-partial"), self.handle, stop)  # a transcript before a partial

    async def handle(self, message: Delivery) -> None:
        job = _jobs.decode(message.data)
        started = time.perf_counter()
        try:
            records = await self.bus.read_audio(job.session_id, job.first_seq, job.last_seq)
            audio = turn_audio(job, records)
            if job.words:
                result = await self._decode_words(job, audio)
            else:
                result = await self._transcribe(job, audio, message)
        except Exception as error:
            log.exception("stt.job.failed", job_id=job.job_id, session_id=job.session_id)
            result = rec.TranscriptionFailed(
                at_ms=now_ms(),
                job_id=job.job_id,
                item_id=job.item_id,
                message=f"Transcription failed: {error}",
                worker=self.worker_id,
            )
        await self.bus.publish_record(job.session_id, "stt", result, f"{job.job_id}.result")
        await message.ack()
        log.info(
            "stt.job.done",
            job_id=job.job_id,
            item_id=job.item_id,
            seconds=round(time.perf_counter() - started, 3),
            kind=result.__struct_config__.tag,
        )

    async def _decode_words(self, job: TranscribeJob, audio: np.ndarray) -> rec.Record:
        """One decode of a turn in progress."""
        decoded, language = await asyncio.to_thread(self.transcriber.words, audio, job.model, job.language, job.prompt)
        return words_decoded(job, decoded, language, self.worker_id, now_ms())

    async def _transcribe(self, job: TranscribeJob, audio: np.ndarray, message: Delivery) -> rec.Record:
        """A whole item's transcript, published piece by piece as it is decoded."""
        pieces: list[str] = []
        decoding = in_thread(lambda: self.transcriber.transcribe(audio, job.model, job.language, job.prompt))
        async with contextlib.aclosing(decoding) as transcript:
            async for piece in transcript:
                delta = rec.TranscriptionDeltaProduced(
                    at_ms=now_ms(),
                    job_id=job.job_id,
                    item_id=job.item_id,
                    index=len(pieces),
                    text=piece,
                    worker=self.worker_id,
                )
                await self.bus.publish_record(job.session_id, "stt", delta, f"{job.job_id}.delta.{len(pieces)}")
                pieces.append(piece)
                await message.in_progress()
        return rec.TranscriptionCompleted(
            at_ms=now_ms(),
            job_id=job.job_id,
            item_id=job.item_id,
            transcript="".join(pieces),
            audio_seconds=len(audio) / MODEL_RATE,
            worker=self.worker_id,
            language=job.language,
        )
