"""`POST /v1/audio/speech`: the input cut into clauses, one `synthesize` job each on the `tts` queue, and the audio
encoded as it comes, as bytes or as server-sent events."""

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.response import Stream

from app.audio_api.models import OPENAI_SPEECH_MODEL, TTS_MODEL
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
from app.realtime.intake import VOICES
from domain import records as rec
from domain.jobs import REQUEST_WAIT_MS, SynthesizeJob
from domain.rest_audio import (
    ApiError,
    SpeechForm,
    speech_clauses,
    speech_form,
    sse,
)
from handlers.audio_encode import MEDIA_TYPES, SpeechEncoder
from handlers.ports import now_ms
from handlers.tts import UnknownVoice

log = structlog.get_logger(__name__)


@post("/v1/audio/speech")
async def speech(request: Request[Any, Any, Any]) -> Response[Any]:
    """Speech as it is synthesised: the audio's bytes (`stream_format: "audio"`), or `speech.audio.delta` events
    then `speech.audio.done` (`"sse"`). `instructions` are accepted and recorded, and not followed."""
    services: EdgeServices = request.app.state.services
    try:
        await workers_for(request, "tts")
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError as error:
            raise ApiError(400, f"The body is not valid JSON: {error}", None, "invalid_json") from None
        form = speech_form(body)
        if form.model != TTS_MODEL and not OPENAI_SPEECH_MODEL.match(form.model):
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
        return error_response(request, "speech", error)
    try:
        first = await run.first()
    except ApiError as error:
        return error_response(request, "speech", error, run.session.session_id)
    count_request(request, "speech", 200)
    headers = {REQUEST_ID: run.session.session_id}
    if form.stream_format == "sse":
        return Stream(run.events(first), media_type="text/event-stream", headers={**headers, **NO_CACHE})
    return Stream(run.audio(first), media_type=MEDIA_TYPES[form.response_format], headers=headers)


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
        async with RequestSession.opening(services, "speech", "speech", "tts", "tts") as session:
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
                    job_id=new_job_id(),
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
            await close_request(self.session, "failed")
            raise ApiError(500, "The synthesis ended without audio.", None, "server_error", "server_error") from None
        except ApiError:
            await close_request(self.session, "failed")
            raise

    async def _ordered(self) -> AsyncIterator[bytes]:
        """The speech, 24 kHz pcm16, clause by clause and chunk by chunk: a later clause's chunks wait for the
        clauses before, and a job taken over from a worker repeats chunks, which count once."""
        waiting: dict[tuple[int, int], rec.SpeechSynthesized] = {}
        clause, chunk = 0, 0
        async for record in self.session.records():
            if isinstance(record, rec.SpeechFailed):
                raise failure(record.message, "speech")
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
            await close_request(self.session, reason)

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
            await close_request(self.session, reason)
