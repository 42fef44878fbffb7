"""The STT worker: takes transcription jobs from the JetStream work queue, reads each turn's audio from the
session's log, and publishes the transcript as it is decoded.

Workers are competing consumers of one durable pull consumer, so any number of them share the turns. A result
record's `Nats-Msg-Id` derives from its job, so a redelivered job cannot record a result twice.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator

import msgspec
import numpy as np
import structlog
from faster_whisper.transcribe import Segment

from domain import records as rec
from domain.audio_time import MODEL_RATE
from domain.jobs import TRANSCRIPTION_LATE, TranscribeFileJob, TranscribeJob, failed
from handlers import heap
from handlers.job_loop import Unwanted, in_thread, serve_jobs
from handlers.ports import Delivery, WorkerBus, now_ms
from handlers.stt import FileOptions, Transcriber
from handlers.stt_batch import WordsBatcher

log = structlog.get_logger(__name__)
# A session's transcript before a file's (a long file must not keep a live turn's transcript waiting), and both
# before a decode while the user speaks.
STT_QUEUES = ("stt", "stt-file", "stt-partial")
_jobs = msgspec.json.Decoder(TranscribeJob | TranscribeFileJob)
# A worker gives its decodes' freed memory back (handlers.heap) after a job, at most this often: enough to keep the
# RSS from creeping up in a long session, and a cost (5-12 ms) a busy worker pays rarely. Not only when it holds no
# other job: with two lanes, a busy worker almost always does.
TRIM_EVERY_S = 5.0


def turn_audio(job: TranscribeJob, records: list[rec.AudioReceived | rec.ItemAudioReceived]) -> np.ndarray:
    """The job's samples [start_sample, end_sample), as float32, from the audio records that hold them."""
    pcm = np.frombuffer(b"".join(r.pcm16k for r in records), dtype="<i2")
    begin = job.start_sample - job.first_sample
    return pcm[begin : begin + job.end_sample - job.start_sample].astype(np.float32) / 32768.0


def file_audio(records: list[rec.AudioReceived | rec.ItemAudioReceived]) -> np.ndarray:
    """A REST request's whole audio, as float32."""
    return np.frombuffer(b"".join(r.pcm16k for r in records), dtype="<i2").astype(np.float32) / 32768.0


def placed(decoded: list[tuple[str, float, float]], at: int) -> tuple[rec.Word, ...]:
    """A decode's words (text, start and end in seconds of its audio) at their positions in the session's audio
    stream, where that audio begins at sample `at`."""
    return tuple(
        rec.Word(text, at + round(start * MODEL_RATE), at + round(end * MODEL_RATE)) for text, start, end in decoded
    )


def words_decoded(
    job: TranscribeJob,
    decoded: list[tuple[str, float, float]],
    language: str,
    started_ms: int,
    worker: str,
    at_ms: int,
) -> rec.WordsDecoded:
    """A decode's words as a record: their times become positions in the session's audio stream."""
    return rec.WordsDecoded(
        at_ms=at_ms,
        job_id=job.job_id,
        item_id=job.item_id,
        start_sample=job.start_sample,
        end_sample=job.end_sample,
        words=placed(decoded, job.start_sample),
        worker=worker,
        language=language,
        waited_ms=max(0, started_ms - job.asked_ms) if job.asked_ms is not None else 0,
    )


class SttWorker:
    def __init__(self, bus: WorkerBus, transcriber: Transcriber, worker_id: str, batch: int = 1) -> None:
        lanes = transcriber.lanes
        self.bus = bus
        self.transcriber = transcriber
        self.worker_id = worker_id
        self.unwanted = Unwanted("stt")
        self.at_once = batch * lanes  # jobs in hand: batches of decodes of turns in progress, `lanes` at a time
        self.batcher = WordsBatcher(transcriber, batch, lambda job: self.unwanted.why(job) is None, lanes)
        self._trimmed_at = -TRIM_EVERY_S

    async def run(self, stop: asyncio.Event) -> None:
        listening = await self.unwanted.listen(self.bus)
        log.info("stt.worker.ready", worker=self.worker_id)
        try:
            await serve_jobs(self.bus, STT_QUEUES, self.handle, stop, self.at_once)
        finally:
            for subscription in listening:
                await subscription.unsubscribe()

    async def handle(self, message: Delivery) -> None:
        await self._handle(message)
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            self._trimmed_at = time.monotonic()
            await asyncio.to_thread(heap.trim)

    async def _handle(self, message: Delivery) -> None:
        job = _jobs.decode(message.data)
        started = time.perf_counter()
        result: rec.Record | None
        if (unwanted := self.unwanted.why(job)) is not None:
            result = self._unwanted(job, unwanted)
        else:
            try:
                records = await self.bus.read_audio(job.session_id, job.first_seq, job.last_seq)
                if isinstance(job, TranscribeFileJob):
                    result = await self._transcribe_file(job, file_audio(records))
                elif job.words:
                    decoded = await self.batcher.words(job, turn_audio(job, records))
                    if decoded is None:  # expired, cancelled or dropped while it waited for the model
                        unwanted = self.unwanted.why(job) or "dropped"
                        result = self._unwanted(job, unwanted)
                    else:
                        result = words_decoded(job, *decoded, self.worker_id, now_ms())
                else:
                    result = await self._transcribe(job, turn_audio(job, records))
            except Exception as error:
                log.exception("stt.job.failed", job_id=job.job_id, session_id=job.session_id)
                result = failed(job, f"Transcription failed: {error}", self.worker_id, now_ms())
        if result is not None:
            await self.bus.publish_record(job.session_id, "stt", result, f"{job.job_id}.result")
        await message.ack()
        log.info(
            "stt.job.done",
            job_id=job.job_id,
            item_id=job.item_id,
            seconds=round(time.perf_counter() - started, 3),
            kind=result.__struct_config__.tag if result is not None else "dropped",
            outcome=unwanted or "done",
            partial=isinstance(job, TranscribeJob) and job.partial,
            audio_s=(job.end_sample - job.start_sample) / MODEL_RATE if isinstance(job, TranscribeJob) else None,
            waited_ms=result.waited_ms if isinstance(result, rec.WordsDecoded) else None,
        )

    def _unwanted(self, job: TranscribeJob | TranscribeFileJob, why: str) -> rec.Record | None:
        """A job not worth starting. Its session is told only of an expired one: it still waits for that result
        (a decode while the user speaks is shed for the next one; a transcript comes too late to be of use)."""
        if why != "expired":
            return None
        late_s = (now_ms() - (job.deadline_ms or 0)) / 1000
        message = f"{TRANSCRIPTION_LATE} (the server is busy; {late_s:.1f} s past its deadline)."
        return failed(job, message, self.worker_id, now_ms())

    async def _transcribe(self, job: TranscribeJob, audio: np.ndarray) -> rec.Record | None:
        """A whole item's transcript, published piece by piece as it is decoded (None: its session ended)."""
        pieces: list[str] = []
        decoding = in_thread(lambda: self.transcriber.transcribe(audio, job.model, job.language, job.prompt))
        async with contextlib.aclosing(decoding) as transcript:
            async for piece in transcript:
                if self.unwanted.stopped(job):
                    return None
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
        return rec.TranscriptionCompleted(
            at_ms=now_ms(),
            job_id=job.job_id,
            item_id=job.item_id,
            transcript="".join(pieces),
            audio_seconds=len(audio) / MODEL_RATE,
            worker=self.worker_id,
            language=job.language,
        )

    async def _transcribe_file(self, job: TranscribeFileJob, audio: np.ndarray) -> rec.Record | None:
        """A REST request's transcript (or translation), published segment by segment as whisper decodes it (None:
        the request was given up: its client left)."""
        options = FileOptions(job.task, job.language, job.prompt, job.temperature, job.word_timestamps)
        language: list[str] = []

        def decode() -> Iterator[Segment]:
            segments, heard = self.transcriber.segments(audio, job.model, options)
            language.append(heard)
            return segments

        texts: list[str] = []
        async with contextlib.aclosing(in_thread(decode)) as segments:
            async for segment in segments:
                if self.unwanted.stopped(job):
                    return None
                record = segment_decoded(job, len(texts), segment, self.worker_id, now_ms())
                await self.bus.publish_record(job.session_id, "stt", record, f"{job.job_id}.segment.{len(texts)}")
                texts.append(segment.text)
        return rec.TranscriptionCompleted(
            at_ms=now_ms(),
            job_id=job.job_id,
            item_id=job.item_id,
            transcript="".join(texts).strip(),
            audio_seconds=len(audio) / MODEL_RATE,
            worker=self.worker_id,
            language=language[0] if language else job.language,
        )


def segment_decoded(
    job: TranscribeFileJob, index: int, segment: Segment, worker: str, at_ms: int
) -> rec.TranscriptSegmentDecoded:
    return rec.TranscriptSegmentDecoded(
        at_ms=at_ms,
        job_id=job.job_id,
        item_id=job.item_id,
        index=index,
        seek=int(segment.seek),
        # faster-whisper's numbers may be numpy scalars, which do not encode
        start=float(segment.start),
        end=float(segment.end),
        text=segment.text,
        tokens=tuple(int(token) for token in segment.tokens),
        temperature=float(segment.temperature or 0.0),
        avg_logprob=float(segment.avg_logprob),
        compression_ratio=float(segment.compression_ratio),
        no_speech_prob=float(segment.no_speech_prob),
        worker=worker,
        words=tuple(
            rec.TimedWord(w.word, float(w.start), float(w.end), float(w.probability)) for w in segment.words or ()
        ),
    )
