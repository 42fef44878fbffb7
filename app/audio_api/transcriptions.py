"""`POST /v1/audio/transcriptions` and `/v1/audio/translations`: an upload decoded at the edge and recorded, one
`transcribe_file` job on the `stt` queue, and the answer in the asked format, or streamed as server-sent events."""

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request, Response
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException
from litestar.response import Stream

from app.audio_api.request import (
    NO_CACHE,
    REQUEST_ID,
    RequestSession,
    close_request,
    count_request,
    error_response,
    failure,
    new_job_id,
    workers_for,
)
from app.realtime.connection import EdgeServices
from app.realtime.intake import MAX_RECORD_INPUT_SECONDS
from domain import records as rec
from domain.audio_time import MODEL_RATE, ticks_for_samples
from domain.jobs import REQUEST_WAIT_MS, TranscribeFileJob
from domain.rest_audio import (
    ApiError,
    TranscriptionForm,
    missing,
    sse,
    transcript_body,
    transcription_form,
    usage,
)
from handlers.input_audio.decode import InvalidAudio, decode_file
from handlers.models import ModelRegistry, UnknownModel
from handlers.ports import now_ms

# A multipart body holds the file and a few short fields: the body may be this much larger than the file limit.
FORM_SLACK_BYTES = 64 * 1024
# A refused body is read to its end, up to this many times the limit (then the connection is closed on it).
DRAIN_LIMIT_FACTOR = 4


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
        await workers_for(request, "stt")
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
        return error_response(request, endpoint, error)
    if form.stream:
        return await run.streamed(request)
    try:
        body, media_type = await run.answer()
    except ApiError as error:
        return error_response(request, endpoint, error, run.session.session_id)
    count_request(request, endpoint, 200)
    return Response(body, media_type=media_type, headers={REQUEST_ID: run.session.session_id})


async def transcriptions(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _transcribe(request, translation=False)


async def translations(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _transcribe(request, translation=True)


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
        async with RequestSession.opening(services, endpoint, "file", "stt", "stt-file") as session:
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
                job_id=new_job_id(),
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
                        raise failure(record.message, "transcription")
                    case rec.TranscriptionCompleted():
                        reason = "answered"
                        return transcript_body(self.form, self.task, segments, record)
            raise ApiError(500, "The transcription ended without a result.", None, "server_error", "server_error")
        finally:
            await close_request(self.session, reason)

    async def streamed(self, request: Request[Any, Any, Any]) -> Response[Any]:
        count_request(request, self.session.endpoint, 200)
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
                        yield sse(failure(record.message, "transcription").body())
                    case rec.TranscriptionCompleted():
                        reason = "answered"
                        done = {"type": "transcript.text.done", "text": "".join(pieces), "usage": usage(record)}
                        yield sse(done)
        except ApiError as error:
            reason = "failed"
            yield sse(error.body())
        finally:
            await close_request(self.session, reason)
