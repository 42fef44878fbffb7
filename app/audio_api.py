"""OpenAI's REST audio API on the work queues: `/v1/models`, `/v1/audio/transcriptions`, `/v1/audio/translations`
and `/v1/audio/speech`.

A request is a short session on the log, like a realtime one: it gets an id (`file_…` for a transcription or a
translation, `speech_…` for speech), its request is recorded (`api.transcription`, `api.speech`), an upload's audio
is decoded here (PyAV, as faster-whisper decodes files) and recorded at 16 kHz in `audio.received` records of at
most 5 s (a NATS message has a size limit), and its job goes to the same `stt` or `tts` work queue as a session's,
so any worker of a scaled-out deployment serves it. The answer is made of the worker's result records, read from
the session's `in.stt` / `in.tts` subject; a `session.closed` record ends the session. A client that leaves
mid-stream has its job dropped (the signal every worker hears).

Checks and rendering are domain code (`domain/rest_audio.py`); encoding speech is handler code
(`handlers/audio_encode.py`); this module is the I/O between them.
"""

import asyncio
import base64
import contextlib
import functools
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.response import Stream

from app.bus import UNANSWERED, LogUnavailable, OrderedFeed, decode_record
from app.realtime.connection import EdgeServices
from app.realtime.intake import MAX_RECORD_INPUT_SECONDS, VOICES
from app.realtime.session_log import SessionLog
from domain import records as rec
from domain.audio_time import MODEL_RATE, ticks_for_samples
from domain.jobs import REQUEST_WAIT_MS, TRANSCRIPTION_LATE, Job, SynthesizeJob, TranscribeFileJob
from domain.rest_audio import (
    ApiError,
    SpeechForm,
    TranscriptionForm,
    missing,
    speech_clauses,
    speech_form,
    sse,
    transcript_body,
    transcription_form,
    usage,
)
from handlers.audio_encode import MEDIA_TYPES, SpeechEncoder
from handlers.input_audio.decode import InvalidAudio, decode_file
from handlers.models import ModelRegistry, UnknownModel, is_realtime_model
from handlers.ports import now_ms
from handlers.tts import BUNDLED_VOICES, OPENAI_VOICES, UnknownVoice

log = structlog.get_logger(__name__)
# A multipart body holds the file and a few short fields: the body may be this much larger than the file limit.
FORM_SLACK_BYTES = 64 * 1024
# A refused body is read to its end, up to this many times the limit (then the connection is closed on it).
DRAIN_LIMIT_FACTOR = 4
# How long past its job's deadline a request waits for a first record: a worker that took the job late answers it
# as failed by then, so silence means no worker took it (none is alive, or all are stuck).
UNTAKEN_GRACE_S = 10.0
# The longest pause between two records of a job in progress: whisper decodes a 30 s window, Kokoro a batch of
# phonemes, in a few seconds even on a busy CPU.
IDLE_S = 120.0
TTS_MODEL = "kokoro"
# Stock clients send OpenAI's speech model names; they all mean Kokoro.
_OPENAI_SPEECH_MODEL = re.compile(r"^(tts-1(-hd)?(-\d.*)?|gpt-.*tts.*)$")
OWNER = "vocalis"
# The request's session id, under the header OpenAI's SDKs read as the request id (`response._request_id`).
REQUEST_ID = "x-request-id"
NO_CACHE = {"cache-control": "no-cache"}
CREATED = int(time.time())  # when this edge started: the `created` of every model it lists


# --- models ---------------------------------------------------------------------------------------------------


ModelKind = Literal["transcription", "llm", "speech", "voice"]


def _served_models(services: EdgeServices) -> dict[str, ModelKind]:
    """What this server serves under its own names, and what each is: transcription models, LLMs, Kokoro and its
    voices (the browser console fills its choices from the kinds)."""
    kinds: dict[str, ModelKind] = dict.fromkeys(services.registry.installed(), "transcription")
    kinds |= dict.fromkeys(sorted(services.llm_models), "llm")
    return kinds | {TTS_MODEL: "speech"} | dict.fromkeys(BUNDLED_VOICES, "voice")


def _served_name(services: EdgeServices, name: str) -> bool:
    """A name a request may use: the listed ones and OpenAI's names that map onto them."""
    if name in _served_models(services) or name in OPENAI_VOICES or _OPENAI_SPEECH_MODEL.match(name):
        return True
    if is_realtime_model(name):
        return True
    try:
        services.registry.canonical(name)
    except UnknownModel:
        return False
    return True


def _model(name: str, kind: ModelKind | None) -> dict[str, Any]:
    """OpenAI's model object; `kind` is Vocalis's own field, beside the ones OpenAI's clients read."""
    return {"id": name, "object": "model", "created": CREATED, "owned_by": OWNER} | ({"kind": kind} if kind else {})


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: EdgeServices = request.app.state.services
    return {"object": "list", "data": [_model(name, kind) for name, kind in _served_models(services).items()]}


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[dict[str, Any]]:
    """A listed model, or one of OpenAI's names for one (`whisper-1`, `tts-1`, `alloy`, `gpt-realtime`, …)."""
    name = model_id.lstrip("/")
    services: EdgeServices = request.app.state.services
    if _served_name(services, name):
        return Response(_model(name, _served_models(services).get(name)))
    message = f"The model '{name}' does not exist. GET /v1/models lists the installed ones."
    return _error(request, "models", ApiError(404, message, "model", "model_not_found"))


# --- transcriptions and translations --------------------------------------------------------------------------


def _transcription_model(registry: ModelRegistry, name: str, translation: bool) -> str:
    """The model a request's name means; a translation needs a multilingual one: OpenAI's names then mean the first
    installed multilingual model when the default is English-only."""
    try:
        model = registry.canonical(name)
    except UnknownModel as unknown:
        raise ApiError(400, str(unknown), "model", "model_not_found") from None
    if translation and _english_only(model):
        multilingual = [installed for installed in registry.installed() if not _english_only(installed)]
        if model == name or not multilingual:
            message = f"The model '{model}' is English-only: translations need a multilingual model."
            raise ApiError(400, message, "model")
        model = multilingual[0]
    return model


def _english_only(model: str) -> bool:
    return model.endswith(".en")  # whisper's own naming of its English-only models


async def _form(request: Request[Any, Any, Any], limit: int) -> tuple[UploadFile, dict[str, str], list[str]]:
    """The upload, the text fields (the last of a repeated one) and the timestamp granularities."""
    try:
        form = await request.form()
    except ClientException as error:  # over the body limit (413), or a body that is no form
        if error.status_code == 413:
            raise _too_large(limit) from None
        raise ApiError(400, f"The request must be multipart/form-data: {error.detail}", None) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise missing("file")
    fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
    granularities = [
        value
        for key in ("timestamp_granularities[]", "timestamp_granularities")
        for value in form.getall(key, [])
        if isinstance(value, str)
    ]
    return upload, fields, granularities


async def _drain(request: Request[Any, Any, Any], most: int) -> None:
    """Read the rest of a body that is refused (unless it was read): a client that is still sending when the answer
    comes and the connection closes sees a broken connection instead of the answer (and an SDK sends it again)."""
    if not request.is_connected:  # Litestar read the body to its end
        return
    drained = 0
    while drained <= most:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _too_large(limit: int) -> ApiError:
    message = f"The file is larger than the limit of {limit} bytes (VOCALIS_MAX_UPLOAD_BYTES)."
    return ApiError(413, message, "file", "file_too_large")


async def _transcribe(request: Request[Any, Any, Any], translation: bool) -> Response[Any]:
    endpoint: Literal["transcriptions", "translations"] = "translations" if translation else "transcriptions"
    services: EdgeServices = request.app.state.services
    try:
        await _workers_for(request, "stt")
        upload, fields, granularities = await _form(request, services.max_upload_bytes)
        form = transcription_form(fields, granularities, translation)
        model = _transcription_model(services.registry, form.model, translation)
        data = await upload.read()
        if len(data) > services.max_upload_bytes:
            raise _too_large(services.max_upload_bytes)
        try:
            decode = functools.partial(decode_file, data, services.max_upload_seconds)
            pcm = await asyncio.get_running_loop().run_in_executor(services.executor, decode)
        except InvalidAudio as invalid:
            raise ApiError(400, f"Invalid file '{upload.filename}': {invalid}", "file") from None
        accepted = rec.TranscriptionRequested(
            at_ms=now_ms(),
            endpoint=endpoint,
            model=model,
            requested_model=form.model,
            response_format=form.response_format,
            filename=upload.filename or None,
            upload_bytes=len(data),
            audio_seconds=len(pcm) / 2 / MODEL_RATE,
            language=form.language,
            prompt=form.prompt,
            temperature=form.temperature,
            timestamp_granularities=form.timestamp_granularities,
            stream=form.stream,
        )
        task: Literal["transcribe", "translate"] = "translate" if translation else "transcribe"
        run = await Transcription.start(services, endpoint, accepted, pcm, form, task)
    except ApiError as error:
        await _drain(request, DRAIN_LIMIT_FACTOR * services.max_upload_bytes)
        return _error(request, endpoint, error)
    if form.stream:
        return await run.streamed(request)
    try:
        body, media_type = await run.answer()
    except ApiError as error:
        return _error(request, endpoint, error, run.session.session_id)
    _count(request, endpoint, 200)
    return Response(body, media_type=media_type, headers={REQUEST_ID: run.session.session_id})


async def transcriptions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _transcribe(request, translation=False)


async def translations(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _transcribe(request, translation=True)


# --- speech ---------------------------------------------------------------------------------------------------


@post("/v1/audio/speech")
async def speech(request: Request[Any, Any, Any]) -> Response[Any]:
    """Speech as it is synthesised: the audio's bytes (`stream_format: "audio"`), or `speech.audio.delta` events
    then `speech.audio.done` (`"sse"`). `instructions` are accepted and recorded, and not followed."""
    services: EdgeServices = request.app.state.services
    try:
        await _workers_for(request, "tts")
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError as error:
            raise ApiError(400, f"The body is not valid JSON: {error}", None, "invalid_json") from None
        form = speech_form(body)
        if form.model != TTS_MODEL and not _OPENAI_SPEECH_MODEL.match(form.model):
            message = (
                f"Unknown speech model '{form.model}'. Served: {TTS_MODEL}, and OpenAI's (tts-1, gpt-4o-mini-tts)."
            )
            raise ApiError(400, message, "model", "model_not_found")
        try:
            voice = VOICES.resolve(form.voice)
        except UnknownVoice as unknown:
            raise ApiError(400, str(unknown), "voice") from None
        run = await Speech.start(services, form, voice)
    except ApiError as error:
        return _error(request, "speech", error)
    try:
        first = await run.first()
    except ApiError as error:
        return _error(request, "speech", error, run.session.session_id)
    _count(request, "speech", 200)
    headers = {REQUEST_ID: run.session.session_id}
    if form.stream_format == "sse":
        return Stream(run.events(first), media_type="text/event-stream", headers={**headers, **NO_CACHE})
    return Stream(run.audio(first), media_type=MEDIA_TYPES[form.response_format], headers=headers)


# --- a request's session --------------------------------------------------------------------------------------


async def _workers_for(request: Request[Any, Any, Any], kind: str) -> None:
    """503 unless this deployment serves `kind` and a worker of it is alive now: a job would wait for nobody."""
    services: EdgeServices = request.app.state.services
    if kind not in request.app.state.serves:
        message = f"This server runs no {kind} worker (VOCALIS_WORKERS), so it cannot serve this endpoint."
        raise ApiError(503, message, None, "workers_unavailable", "server_error")
    if (await services.bus.waiting_workers((kind,)))[kind] == 0:
        message = f"No {kind} worker is alive at the moment; try again shortly."
        raise ApiError(503, message, None, "workers_unavailable", "server_error")


def _error(
    request: Request[Any, Any, Any], endpoint: str, error: ApiError, session_id: str | None = None
) -> Response[dict[str, Any]]:
    _count(request, endpoint, error.status)
    if error.status >= 500:
        log.warning("api.request.failed", endpoint=endpoint, status=error.status, error=error.message)
    headers = {"retry-after": "5"} if error.status == 503 else {}
    if session_id is not None:
        headers[REQUEST_ID] = session_id
    return Response(error.body(), status_code=error.status, headers=headers)


def _count(request: Request[Any, Any, Any], endpoint: str, status: int) -> None:
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
    kind: str  # the jobs' queue: stt or tts
    jobs: dict[str, float] = field(default_factory=dict)  # job id: monotonic time it was asked for
    deadline_ms: int = 0  # the first job's: no record by then (and a grace) means no worker took it
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False

    @classmethod
    async def open(cls, services: EdgeServices, endpoint: str, prefix: str, kind: str) -> "RequestSession":
        session_id = f"{prefix}_{secrets.token_hex(10)}"
        session_log = SessionLog(services.bus, session_id, services.audio_max_age_s, lambda subject: None)
        feed = await services.bus.subscribe_results(session_id, kind)
        return cls(services, endpoint, session_id, session_log, feed, kind)

    @classmethod
    @contextlib.asynccontextmanager
    async def opening(
        cls, services: EdgeServices, endpoint: str, prefix: str, kind: str
    ) -> AsyncIterator["RequestSession"]:
        """A new session to record a request in: closed as failed if recording it fails; a log out of reach is
        503 (the request is not lost by a client that tries again)."""
        message = "The event log is unreachable; try again shortly."
        unreachable = ApiError(503, message, None, "log_unavailable", "server_error")
        try:
            session = await cls.open(services, endpoint, prefix, kind)
        except UNANSWERED:
            raise unreachable from None
        try:
            yield session
        except BaseException as error:
            await _close(session, "failed")
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
            if _ends(record):
                outcome = "failed" if isinstance(record, rec.TranscriptionFailed | rec.SpeechFailed) else "done"
                self.services.metrics.api_job(self.kind, outcome, time.monotonic() - self.jobs.pop(job_id))
            yield record

    async def _give_up(self) -> None:
        """The client left, or no worker answers: drop the jobs wherever they are (queued, or in a worker's hands)."""
        if self.jobs:
            for _ in self.jobs:
                self.services.metrics.api_job(self.kind, "withdrawn", None)
            self.jobs.clear()
            await self.services.bus.drop_jobs(self.session_id, (self.kind,))

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


async def _close(session: RequestSession, reason: str) -> None:
    """Close a request's session from a response stream's end. A client that leaves cancels the stream, and every
    await after that would be cancelled too: the close runs on as a task of its own."""
    task = asyncio.create_task(session.close(reason))
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


def _ends(record: rec.Record) -> bool:
    match record:
        case rec.TranscriptionCompleted() | rec.TranscriptionFailed() | rec.SpeechFailed():
            return True
        case rec.SpeechSynthesized(last=True):
            return True
    return False


def _failure(message: str, what: str) -> ApiError:
    """A worker's failure record as the client's error: shed under load (503), or failed (500)."""
    if message.startswith(TRANSCRIPTION_LATE) or "too busy" in message:
        return ApiError(503, message, None, "server_overloaded", "server_error")
    return ApiError(500, message, None, f"{what}_failed", "server_error")


def _new_job_id() -> str:
    return "job_" + secrets.token_hex(10)


@dataclass
class Transcription:
    session: RequestSession
    form: TranscriptionForm
    task: Literal["transcribe", "translate"]

    @classmethod
    async def start(
        cls,
        services: EdgeServices,
        endpoint: str,
        accepted: rec.TranscriptionRequested,
        pcm: bytes,
        form: TranscriptionForm,
        task: Literal["transcribe", "translate"],
    ) -> "Transcription":
        """Record the request and its audio, and ask for its transcription."""
        async with RequestSession.opening(services, endpoint, "file", "stt") as session:
            await cls._record(session, accepted, pcm, form, task)
            session.accepted(model=accepted.model, audio_seconds=round(accepted.audio_seconds, 2), task=task)
        return cls(session, form, task)

    @staticmethod
    async def _record(
        session: RequestSession,
        accepted: rec.TranscriptionRequested,
        pcm: bytes,
        form: TranscriptionForm,
        task: Literal["transcribe", "translate"],
    ) -> None:
        await session.session_log.write("client", accepted)
        step = MAX_RECORD_INPUT_SECONDS * MODEL_RATE * 2
        seqs = []
        for offset in range(0, len(pcm), step):
            piece = pcm[offset : offset + step]
            audio = rec.AudioReceived(
                at_ms=now_ms(), ticks=ticks_for_samples(len(piece) // 2, MODEL_RATE), pcm16k=piece
            )
            seqs.append(await session.session_log.write_and_wait("audio", audio))
        await session.ask(
            TranscribeFileJob(
                job_id=_new_job_id(),
                session_id=session.session_id,
                item_id=session.session_id,
                first_seq=seqs[0],
                last_seq=seqs[-1],
                model=accepted.model,
                task=task,
                language=form.language,
                prompt=form.prompt,
                temperature=form.temperature,
                word_timestamps=form.words,
                deadline_ms=now_ms() + REQUEST_WAIT_MS,
            )
        )

    async def answer(self) -> tuple[bytes, str]:
        segments: list[rec.TranscriptSegmentDecoded] = []
        reason = "failed"
        try:
            async for record in self.session.records():
                match record:
                    case rec.TranscriptSegmentDecoded():
                        segments.append(record)
                    case rec.TranscriptionFailed():
                        raise _failure(record.message, "transcription")
                    case rec.TranscriptionCompleted():
                        reason = "answered"
                        return transcript_body(self.form, self.task, segments, record)
            raise ApiError(500, "The transcription ended without a result.", None, "server_error", "server_error")
        finally:
            await _close(self.session, reason)

    async def streamed(self, request: Request[Any, Any, Any]) -> Response[Any]:
        _count(request, self.session.endpoint, 200)
        headers = {REQUEST_ID: self.session.session_id, **NO_CACHE}
        return Stream(self._events(), media_type="text/event-stream", headers=headers)

    async def _events(self) -> AsyncIterator[bytes]:
        """`transcript.text.delta` per segment (they concatenate to the text), then `transcript.text.done`; a
        failure after the response began is an `error` event, as OpenAI's streams carry them."""
        reason = "client"  # unless it ends otherwise: the client left
        pieces: list[str] = []
        try:
            async for record in self.session.records():
                match record:
                    case rec.TranscriptSegmentDecoded():
                        text = record.text if pieces else record.text.lstrip()
                        if text:
                            pieces.append(text)
                            yield sse({"type": "transcript.text.delta", "delta": text})
                    case rec.TranscriptionFailed():
                        reason = "failed"
                        yield sse(_failure(record.message, "transcription").body())
                    case rec.TranscriptionCompleted():
                        reason = "answered"
                        done = {"type": "transcript.text.done", "text": "".join(pieces), "usage": usage(record)}
                        yield sse(done)
        except ApiError as error:
            reason = "failed"
            yield sse(error.body())
        finally:
            await _close(self.session, reason)


@dataclass
class Speech:
    """The input cut into clauses as a conversation's answer is (the first one short), one `synthesize` job each:
    the first audio comes after the first clause, not after the first batch of the whole text (a 600-character
    input waited 20 s for it on this project's CPU), and several workers share a long input."""

    session: RequestSession
    form: SpeechForm
    clauses: int
    pcm: AsyncIterator[bytes] | None = None

    @classmethod
    async def start(cls, services: EdgeServices, form: SpeechForm, voice: str) -> "Speech":
        async with RequestSession.opening(services, "speech", "speech", "tts") as session:
            clauses = await cls._record(session, form, voice)
            session.accepted(voice=voice, characters=len(form.input), response_format=form.response_format)
        return cls(session, form, clauses)

    @staticmethod
    async def _record(session: RequestSession, form: SpeechForm, voice: str) -> int:
        accepted = rec.SpeechRequested(
            at_ms=now_ms(),
            input=form.input,
            model=form.model,
            voice=voice,
            requested_voice=form.voice,
            speed=form.speed,
            response_format=form.response_format,
            stream_format=form.stream_format,
            instructions=form.instructions,
        )
        await session.session_log.write("client", accepted)
        clauses = speech_clauses(form.input)
        deadline_ms = now_ms() + REQUEST_WAIT_MS
        for index, clause in enumerate(clauses):
            await session.ask(
                SynthesizeJob(
                    job_id=_new_job_id(),
                    session_id=session.session_id,
                    response_id=session.session_id,
                    clause_index=index,
                    text=clause,
                    voice=voice,
                    speed=form.speed,
                    deadline_ms=deadline_ms,
                )
            )
        return len(clauses)

    async def first(self) -> bytes:
        """The first chunk, before the response begins: a request that fails at once gets its status code."""
        self.pcm = self._ordered()
        try:
            return await anext(self.pcm)
        except StopAsyncIteration:
            await _close(self.session, "failed")
            raise ApiError(500, "The synthesis ended without audio.", None, "server_error", "server_error") from None
        except ApiError:
            await _close(self.session, "failed")
            raise

    async def _ordered(self) -> AsyncIterator[bytes]:
        """The speech, 24 kHz pcm16, clause by clause and chunk by chunk: a later clause's chunks wait for the
        clauses before, and a job taken over from a worker repeats chunks, which count once."""
        waiting: dict[tuple[int, int], rec.SpeechSynthesized] = {}
        clause, chunk = 0, 0
        async for record in self.session.records():
            if isinstance(record, rec.SpeechFailed):
                raise _failure(record.message, "speech")
            if not isinstance(record, rec.SpeechSynthesized) or (record.clause_index, record.chunk_index) < (
                clause,
                chunk,
            ):
                continue
            waiting[record.clause_index, record.chunk_index] = record
            while (ready := waiting.pop((clause, chunk), None)) is not None:
                yield ready.audio
                clause, chunk = (clause + 1, 0) if ready.last else (clause, chunk + 1)
        if clause < self.clauses:
            raise ApiError(500, "The synthesis ended short.", None, "server_error", "server_error")

    async def _after(self, first: bytes) -> AsyncIterator[bytes]:
        yield first
        if self.pcm is not None:
            async for pcm in self.pcm:
                yield pcm

    async def audio(self, first: bytes) -> AsyncIterator[bytes]:
        encoder = SpeechEncoder(self.form.response_format)
        reason = "client"
        try:
            async for pcm in self._after(first):
                if encoded := encoder.encode(pcm):
                    yield encoded
            yield encoder.finish()
            reason = "answered"
        except ApiError as error:  # the status is sent: the stream ends short, and the log says why
            reason = "failed"
            log.warning("api.speech.failed", session_id=self.session.session_id, error=error.message)
        finally:
            await _close(self.session, reason)

    async def events(self, first: bytes) -> AsyncIterator[bytes]:
        encoder = SpeechEncoder(self.form.response_format)
        reason = "client"
        chunks = 0
        try:
            async for pcm in self._after(first):
                chunks += 1
                if encoded := encoder.encode(pcm):
                    yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(encoded).decode()})
            if encoded := encoder.finish():
                yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(encoded).decode()})
            # Kokoro has no tokens: the input's words and the output's 100 ms chunks stand in for them.
            words = len(self.form.input.split())
            tokens = {"input_tokens": words, "output_tokens": chunks, "total_tokens": words + chunks}
            yield sse({"type": "speech.audio.done", "usage": tokens})
            reason = "answered"
        except ApiError as error:
            reason = "failed"
            yield sse(error.body())
        finally:
            await _close(self.session, reason)


def audio_routes(max_upload_bytes: int) -> list[HTTPRouteHandler]:
    """The REST audio API's routes; an upload's body may be the file limit and a few fields."""
    limit = max_upload_bytes + FORM_SLACK_BYTES
    return [
        list_models,
        retrieve_model,
        post("/v1/audio/transcriptions", request_max_body_size=limit)(transcriptions),
        post("/v1/audio/translations", request_max_body_size=limit)(translations),
        speech,
    ]
