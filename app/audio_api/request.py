"""A REST request's session on the log: its records, its jobs on the work queues, the workers' records coming
back, and the request's answer when it fails (OpenAI-shaped errors, counted in the metrics)."""

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from litestar import Request, Response

from app.bus import UNANSWERED, LogUnavailable, OrderedFeed, decode_record
from app.realtime.connection import EdgeServices
from app.realtime.session_log import SessionLog
from domain import records as rec
from domain.jobs import TRANSCRIPTION_LATE, Job
from domain.rest_audio import (
    ApiError,
)
from handlers.ports import now_ms

log = structlog.get_logger(__name__)
# How long past its job's deadline a request waits for a first record: a worker that took the job late answers it
# as failed by then, so silence means no worker took it (none is alive, or all are stuck).
UNTAKEN_GRACE_S = 10.0
# The longest pause between two records of a job in progress: whisper decodes a 30 s window, Kokoro a batch of
# phonemes, in a few seconds even on a busy CPU.
IDLE_S = 120.0
# The request's session id, under the header OpenAI's SDKs read as the request id (`response._request_id`).
REQUEST_ID = "x-request-id"
NO_CACHE = {"cache-control": "no-cache"}


async def workers_for(request: Request[Any, Any, Any], kind: str) -> None:
    """503 unless this deployment serves `kind` and a worker of it is alive now: a job would wait for nobody."""
    services: EdgeServices = request.app.state.services
    if kind not in request.app.state.serves:
        message = f"This server runs no {kind} worker (VOCALIS_WORKERS), so it cannot serve this endpoint."
        raise ApiError(503, message, None, "workers_unavailable", "server_error")
    if (await services.bus.waiting_workers((kind,)))[kind] == 0:
        message = f"No {kind} worker is alive at the moment; try again shortly."
        raise ApiError(503, message, None, "workers_unavailable", "server_error")


def error_response(
    request: Request[Any, Any, Any], endpoint: str, error: ApiError, session_id: str | None = None
) -> Response[dict[str, Any]]:
    count_request(request, endpoint, error.status)
    if error.status >= 500:
        log.warning("api.request.failed", endpoint=endpoint, status=error.status, error=error.message)
    headers = {"retry-after": "5"} if error.status == 503 else {}
    if session_id is not None:
        headers[REQUEST_ID] = session_id
    return Response(error.body(), status_code=error.status, headers=headers)


def count_request(request: Request[Any, Any, Any], endpoint: str, status: int) -> None:
    services: EdgeServices = request.app.state.services
    services.metrics.api_request(endpoint, status)


@dataclass
class RequestSession:
    """One request's session: its records on the log, its jobs, and the workers' records coming back."""

    services: EdgeServices
    endpoint: str
    session_id: str
    session_log: SessionLog
    feed: OrderedFeed
    kind: str  # the workers' kind, whose records answer: stt or tts
    queue: str  # the jobs' queue: stt-file or tts
    jobs: dict[str, float] = field(default_factory=dict)  # job id: monotonic time it was asked for
    deadline_ms: int = 0  # the first job's: no record by then (and a grace) means no worker took it
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False

    @classmethod
    async def open(cls, services: EdgeServices, endpoint: str, prefix: str, kind: str, queue: str) -> "RequestSession":
        session_id = f"{prefix}_{secrets.token_hex(10)}"
        session_log = SessionLog(services.bus, session_id, services.audio_max_age_s, lambda subject: None)
        feed = await services.bus.subscribe_results(session_id, kind)
        return cls(services, endpoint, session_id, session_log, feed, kind, queue)

    @classmethod
    @contextlib.asynccontextmanager
    async def opening(
        cls, services: EdgeServices, endpoint: str, prefix: str, kind: str, queue: str
    ) -> AsyncIterator["RequestSession"]:
        """A new session to record a request in: closed as failed if recording it fails; a log out of reach is
        503 (the request is not lost by a client that tries again)."""
        message = "The event log is unreachable; try again shortly."
        unreachable = ApiError(503, message, None, "log_unavailable", "server_error")
        try:
            session = await cls.open(services, endpoint, prefix, kind, queue)
        except UNANSWERED:
            raise unreachable from None
        try:
            yield session
        except BaseException as error:
            await close_request(session, "failed")
            if isinstance(error, LogUnavailable | UNANSWERED):
                raise unreachable from None
            raise

    async def ask(self, job: Job) -> None:
        if not self.jobs:
            self.deadline_ms = job.deadline_ms or now_ms()
        self.jobs[job.job_id] = time.monotonic()
        await self.session_log.ask(job)

    def accepted(self, **details: object) -> None:
        """The request is recorded and its jobs asked for."""
        log.info(
            "api.request.accepted", endpoint=self.endpoint, session_id=self.session_id, jobs=len(self.jobs), **details
        )

    async def records(self) -> AsyncIterator[rec.Record]:
        """The workers' records for this request's jobs, until each has ended; ApiError if none comes in time."""
        messages = aiter(self.feed.messages)
        untaken_s = max(0.0, (self.deadline_ms - now_ms()) / 1000) + UNTAKEN_GRACE_S
        first = True
        while self.jobs:
            try:
                async with asyncio.timeout(untaken_s if first else IDLE_S):
                    message = await anext(messages)
            except (TimeoutError, StopAsyncIteration):
                await self._give_up()
                if first:
                    untaken = "No worker took the job in time; try again shortly."
                    raise ApiError(503, untaken, None, "workers_unavailable", "server_error") from None
                raise ApiError(500, "The worker stopped answering.", None, "server_error", "server_error") from None
            first = False
            record = decode_record(message.data)
            job_id = getattr(record, "job_id", None)
            if job_id not in self.jobs:
                continue
            if ends(record):
                outcome = "failed" if isinstance(record, rec.TranscriptionFailed | rec.SpeechFailed) else "done"
                self.services.metrics.api_job(self.queue, outcome, time.monotonic() - self.jobs.pop(job_id))
            yield record

    async def _give_up(self) -> None:
        """The client left, or no worker answers: drop the jobs wherever they are (queued, or in a worker's hands)."""
        if self.jobs:
            for _ in self.jobs:
                self.services.metrics.api_job(self.queue, "withdrawn", None)
            self.jobs.clear()
            # Purged from its queue, and stopped in a worker's hands: a worker hears drops of its own kind.
            await self.services.bus.drop_jobs(self.session_id, tuple(dict.fromkeys((self.queue, self.kind))))

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._give_up()
            await self.feed.unsubscribe()
            await self.session_log.write("edge", rec.SessionClosed(at_ms=now_ms(), reason=reason))
        except (LogUnavailable, *UNANSWERED) as error:  # the log is away: its reaper has nothing to reap here
            log.warning("api.request.unclosed", session_id=self.session_id, error=repr(error))
        log.info(
            "api.request.done",
            endpoint=self.endpoint,
            session_id=self.session_id,
            reason=reason,
            seconds=round(time.monotonic() - self.opened, 3),
        )


_closing: set[asyncio.Task[None]] = set()


async def close_request(session: RequestSession, reason: str) -> None:
    """Close a request's session from a response stream's end. A client that leaves cancels the stream, and every
    await after that would be cancelled too: the close runs on as a task of its own."""
    task = asyncio.create_task(session.close(reason))
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


def ends(record: rec.Record) -> bool:
    match record:
        case rec.TranscriptionCompleted() | rec.TranscriptionFailed() | rec.SpeechFailed():
            return True
        case rec.SpeechSynthesized(last=True):
            return True
    return False


def failure(message: str, what: str) -> ApiError:
    """A worker's failure record as the client's error: shed under load (503), or failed (500)."""
    if message.startswith(TRANSCRIPTION_LATE) or "too busy" in message:
        return ApiError(503, message, None, "server_overloaded", "server_error")
    return ApiError(500, message, None, f"{what}_failed", "server_error")


def new_job_id() -> str:
    return "job_" + secrets.token_hex(10)
