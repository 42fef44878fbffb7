"""One realtime connection, as a few parts under one task group:

    ClientChannel  frames in and events out, the close: a WebSocket (ClientSocket) or a WebRTC peer
    Intake         client frames -> records on the log (limits, validation, input audio and VAD)
    SessionLog     the session's records, server events and jobs onto the bus
    Reducer        the session's records, in stream order -> the pure state machine -> Effects
    Effects        a transition's events to the client and the log, its jobs to the work queues

If any part crashes, the client gets an `error` event and the connection closes (a WebSocket with code 1011): a
session never lives on with a dead reducer or a dead intake. While NATS (the log) is unreachable the client gets an
`error` (`log_unavailable`) and the session waits for it, up to LOG_OUTAGE_S; then it fails the same way.
"""

import asyncio
import contextlib
import secrets
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Literal

import nats.errors
import structlog

from app.admission import Admission
from app.bus import LOG_OUTAGE_S, UNANSWERED, WORKER_KINDS, Bus, LogUnavailable, OrderedFeed
from app.client_secrets import ClientSecretStore
from app.metrics import EdgeMetrics
from app.presence import EdgePresence
from app.realtime.channel import ClientChannel
from app.realtime.effects import Effects
from app.realtime.intake import Intake
from app.realtime.reducer import Reducer
from app.realtime.session_log import SessionLog
from app.webrtc.calls import Calls
from domain import records as rec
from domain.events import ErrorDetail, ErrorEvent, SessionUpdateRequested
from domain.protocol.codec import Dialect, render
from domain.protocol.errors import Rejection
from handlers.input_audio.smart_turn import SmartTurn
from handlers.input_audio.turn_end import TurnEndStream
from handlers.input_audio.vad import SileroVad
from handlers.models import ModelRegistry
from handlers.ports import now_ms

log = structlog.get_logger(__name__)

# How long a session whose client has gone waits for the transcripts of its last turns.
TRANSCRIPTS_GRACE_S = 60
# How long a session whose client has gone waits for its close to be reduced.
CLOSE_GRACE_S = 5


@dataclass(frozen=True)
class EdgeServices:
    bus: Bus
    vad: SileroVad
    turn_model: SmartTurn
    registry: ModelRegistry
    executor: Executor
    default_stt_model: str
    max_session_s: int
    max_frame_bytes: int
    audio_max_age_s: int
    presence: EdgePresence
    admission: Admission
    metrics: EdgeMetrics
    client_secrets: ClientSecretStore
    calls: Calls  # the WebRTC calls this edge holds
    llm_context_tokens: int | None = None
    llm_models: frozenset[str] = frozenset()  # the LLM names a session may ask for, besides OpenAI's realtime names
    max_upload_bytes: int = 25 << 20  # an audio file of the REST API (app/audio_api/)
    max_upload_seconds: int = 2 * 3600  # and the audio in it


@dataclass(frozen=True)
class ConnectParams:
    dialect: Dialect
    session_type: Literal["realtime", "transcription"]
    model: str | None = None
    transcription_model: str | None = None
    language: str | None = None
    rejections: tuple[Rejection, ...] = field(default=())
    session_id: str | None = None  # given by a client secret, whose mint answer named it; else a new one
    bound: SessionUpdateRequested | None = None  # a client secret's session configuration, applied at the opening


def new_session_id() -> str:
    return "sess_" + secrets.token_hex(10)


class RealtimeConnection:
    def __init__(self, client: ClientChannel, services: EdgeServices, params: ConnectParams) -> None:
        self.services = services
        self.params = params
        self.session_id = params.session_id or new_session_id()
        self.log = log.bind(session_id=self.session_id)
        self.client = client
        self.watch = services.metrics.session(params.session_type)
        self.session_log = SessionLog(services.bus, self.session_id, services.audio_max_age_s, self.watch.published)
        self.reducer = Reducer(Effects(self.client, self.session_log, params.dialect), self.log, self.watch)
        self.intake = Intake(
            self.session_log,
            self.reducer,
            dialect=params.dialect,
            registry=services.registry,
            llm_models=services.llm_models,
            vad=services.vad.stream(),
            turn_end=TurnEndStream(services.turn_model),
            executor=services.executor,
            max_frame_bytes=services.max_frame_bytes,
        )

    async def run(self) -> None:
        try:
            feed = await self.services.bus.subscribe_session(self.session_id)
        except UNANSWERED:
            await self._tell("log_unavailable", "The event log is unreachable; try again shortly.")
            await self.client.close(1011, "Event log unavailable", by="failed")
            return
        held = self.services.presence.sessions
        held.add(self.session_id)  # before its opening is recorded: a reaper never finds it open and unlisted
        self.watch.opened()
        try:
            async with asyncio.TaskGroup() as parts:
                reducing = parts.create_task(self._reduce(feed))
                await self._open()
                receiving = parts.create_task(self.intake.run(self.client.frames()))
                expiry = parts.create_task(self._expire_later())
                outages = parts.create_task(self._through_outages(feed))
                self.session_log.stored = feed.stored
                watching = parts.create_task(feed.watch())
                await self.client.ended.wait()
                receiving.cancel()
                expiry.cancel()
                if self.client.ended_by != "server":
                    await self._client_left()
                outages.cancel()
                watching.cancel()
                reducing.cancel()
        except* Exception as crashed:
            self.log.error("session.failed", exc_info=crashed.exceptions[0])
            await self._fail(crashed)
        finally:
            held.discard(self.session_id)
            self.watch.closed()
            with contextlib.suppress(Exception):  # the log may be what failed; queued jobs expire anyway
                await self.session_log.drop_jobs(WORKER_KINDS)
            await feed.unsubscribe()
            self.log.info("session.closed", by=self.client.ended_by)

    async def _open(self) -> None:
        opened = rec.SessionOpened(
            at_ms=now_ms(),
            session_id=self.session_id,
            session_type=self.params.session_type,
            dialect=self.params.dialect,
            default_stt_model=self.services.default_stt_model,
            max_duration_s=self.services.max_session_s,
            model=self.params.model,
            transcription_model=self.params.transcription_model,
            language=self.params.language,
            llm_context_tokens=self.services.llm_context_tokens,
            edge=self.services.presence.edge_id,
        )
        await self.session_log.write("edge", opened)
        for rejection in self.params.rejections:
            await self.session_log.reject(rejection)
        if self.params.bound is not None:  # recorded as the client's first event, so that replay applies it too
            await self.intake.on_client_event(self.params.bound)
        self.log.info("session.opened", type=self.params.session_type, dialect=self.params.dialect)

    async def _reduce(self, feed: OrderedFeed) -> None:
        await self.reducer.run(feed)
        if not self.client.ended.is_set():  # closed in the log by another edge, which took this one for dead
            await self._tell("session_closed", "The session was closed by another server; please reconnect.")
            await self.client.close(1011, "Session closed elsewhere")

    async def _expire_later(self) -> None:
        await asyncio.sleep(self.services.max_session_s)
        await self.session_log.write("edge", rec.SessionExpired(at_ms=now_ms()))

    async def _client_left(self) -> None:
        """A client that leaves right after speaking still gets its last words into the log; then the close."""
        with contextlib.suppress(Exception):  # best effort (NATS may be electing a leader): those jobs expire anyway
            await self.session_log.drop_jobs(("stt-partial", "llm", "tts"))  # nobody hears answers any more
        await self.reducer.wait_transcripts(TRANSCRIPTS_GRACE_S)
        reason = self.client.ended_by or "client"
        closed = await self.session_log.write_and_wait("edge", rec.SessionClosed(at_ms=now_ms(), reason=reason))
        await self.reducer.wait_reduced(closed, CLOSE_GRACE_S)

    async def _through_outages(self, feed: OrderedFeed) -> None:
        """While NATS is unreachable the client is told so, and its input waits in the connection's buffer; if NATS is
        back within LOG_OUTAGE_S the session goes on where it was, else it fails (LogUnavailable)."""
        bus = self.services.bus
        while True:
            await bus.down.wait()
            lost_at = time.monotonic()
            self.log.warning("session.log.unavailable")
            await self._tell(
                "log_unavailable",
                f"The event log is unreachable; the session waits up to {LOG_OUTAGE_S:.0f} s for it, and your input "
                "with it.",
            )
            await bus.wait_up(LOG_OUTAGE_S)
            await feed.renew()
            self.log.info("session.log.back", after_s=round(time.monotonic() - lost_at, 1))

    async def _fail(self, crashed: BaseExceptionGroup[Exception]) -> None:
        """Tell the client, close with 1011, and end the session in the log if the log can still be written."""
        unreachable = not self.services.bus.up.is_set() or crashed.subgroup(
            (LogUnavailable, nats.errors.OutboundBufferLimitError)
        )
        reason, code, message = (
            ("log_unavailable", "log_unavailable", "The event log is unreachable; the session ended.")
            if unreachable
            else ("failed", "internal_error", "Internal error; the session ended.")
        )
        with contextlib.suppress(Exception):  # while NATS is away, the close waits in the buffer for its return
            await self.session_log.write("edge", rec.SessionClosed(at_ms=now_ms(), reason=reason))
        await self._tell(code, message)
        await self.client.close(1011, "Event log unavailable" if unreachable else "Internal error", by="failed")

    async def _tell(self, code: str, message: str) -> None:
        """A `server_error` from the edge itself, not from the log (which may be out of reach)."""
        error = ErrorDetail(type="server_error", code=code, message=message)
        event = ErrorEvent(event_id="event_" + secrets.token_hex(8), error=error)
        frame = render(event, self.params.dialect)
        if frame is not None:
            await self.client.send(event, frame)
