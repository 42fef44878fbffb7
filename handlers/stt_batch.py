"""Decodes of turns in progress, batched across sessions: while one batch runs, the requests that arrive wait, and
the next batch takes them together, up to a size: the transcripts that are due if any wait (a partial decode
would only make their batch slower), else the oldest partial decodes. Nobody waits for a batch to fill: a request
that finds the model idle starts at once, so batching adds no latency when the worker keeps up, and batches grow
only as it falls behind. With `lanes` above one, that many batches run at the same time (the transcriber's
CTranslate2 replicas, each on its share of the threads).

Partial decodes may take every lane, so a transcript that falls due can wait for the end of one (a few tenths of a
second). Keeping a lane for transcripts was measured worse under load (8 sessions in step on 2 cores, three runs
each: p95 1.47-2.30 s against 1.00-1.27 s, and the first delta later): a turn whose partial decodes fall behind has
fewer stable words, so each later decode, its closing decode too, hears more of the turn again.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import structlog

from domain.jobs import TranscribeJob
from handlers.ports import now_ms
from handlers.stt import Transcriber, Words, WordsRequest

log = structlog.get_logger(__name__)
# The words, their language, and when the decode started (epoch ms); None: the job was no longer wanted when its
# turn came.
Decoded = tuple[Words, str, int] | None


@dataclass
class _Waiting:
    job: TranscribeJob
    audio: np.ndarray
    result: "asyncio.Future[Decoded]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class WordsBatcher:
    def __init__(
        self, transcriber: Transcriber, size: int, wanted: Callable[[TranscribeJob], bool], lanes: int = 1
    ) -> None:
        self._transcriber = transcriber
        self._size = size
        self._wanted = wanted  # asked again when a batch is formed: a partial decode may have expired meanwhile
        self._lanes = lanes
        self._waiting: list[_Waiting] = []
        self._draining: set[asyncio.Task[None]] = set()

    async def words(self, job: TranscribeJob, audio: np.ndarray) -> Decoded:
        """The job's words and language once decoded with whatever else waits."""
        waiting = _Waiting(job, audio)
        self._waiting.append(waiting)
        self._draining = {draining for draining in self._draining if not draining.done()}
        if len(self._draining) < self._lanes:
            self._draining.add(asyncio.create_task(self._drain()))
        return await waiting.result

    async def _drain(self) -> None:
        while batch := self._take():
            try:
                model = batch[0].job.model
                requests = [WordsRequest(w.audio, w.job.language, w.job.prompt) for w in batch]
                started = now_ms()
                decoded = await asyncio.to_thread(self._transcriber.words, requests, model)
            except Exception as error:
                for waiting in batch:
                    if not waiting.result.done():
                        waiting.result.set_exception(error)
                continue
            log.debug("stt.batch.decoded", size=len(batch), model=model)
            for waiting, (words, language) in zip(batch, decoded, strict=True):
                if not waiting.result.done():  # its job's task was cancelled meanwhile (the worker is stopping)
                    waiting.result.set_result((words, language, started))

    def _take(self) -> list[_Waiting]:
        """The next batch: requests of one model, oldest first, due transcripts alone if any wait."""
        for waiting in [w for w in self._waiting if w.result.done() or not self._wanted(w.job)]:
            self._waiting.remove(waiting)
            if not waiting.result.done():
                waiting.result.set_result(None)
        pool = [w for w in self._waiting if not w.job.partial] or self._waiting
        if not pool:
            return []
        batch = [w for w in pool if w.job.model == pool[0].job.model][: self._size]
        for waiting in batch:
            self._waiting.remove(waiting)
        return batch
