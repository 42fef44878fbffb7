"""The Litestar edge: `/v1/realtime` (WebSocket; WebRTC and client secrets in app/realtime_http.py), the meeting
analytics, `/metrics`, and the probes `/live`, `/health` and `/ready`, behind an API-key gate (the probes are open:
probes carry no key)."""

import hmac
import io
import secrets
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import anyio.to_thread
import nats.js.errors
import structlog
from litestar import Litestar, Request, Response, WebSocket, get, websocket
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery
from prometheus_client import CONTENT_TYPE_LATEST

from app.admission import Admission
from app.analytics import SummaryStore
from app.audio_api import audio_routes
from app.client_secrets import ClientSecretGate, opens_session
from app.console_site import console_routes
from app.credentials import is_client_secret, presented_key
from app.log_reader import RecordedSession, read_session
from app.log_tools import export_jsonl, export_text, export_wav
from app.metrics import EdgeMetrics
from app.realtime.client_socket import ClientSocket
from app.realtime.connect import connect_params, dialect_of, missing_workers, subprotocols
from app.realtime.connection import EdgeServices, RealtimeConnection
from app.realtime_http import realtime_http
from app.refusal import Receive, Scope, Send, refuse
from domain.analytics import SessionSummary
from domain.events import ErrorDetail, ErrorEvent
from domain.protocol.codec import Dialect, render
from domain.transcripts import to_markdown, to_srt, to_vtt
from handlers.ports import now_ms

log = structlog.get_logger(__name__)
REQUIRED_WORKERS = ("stt", "llm", "tts")  # the kinds with a job queue, whose workers /health and /ready count
# Pages of any origin may call the Realtime API, as OpenAI's browser flow does: keys travel in headers, never in
# cookies, so a page can use only a key it holds.
BROWSERS = CORSConfig(
    allow_origins=["*"],
    allow_methods=["GET", "POST"],
    allow_headers=["Authorization", "Content-Type"],
    expose_headers=["Location"],
)


@get("/live", sync_to_thread=False)
def live() -> dict[str, str]:
    """The process is up (liveness). Missing workers are `/health`'s to report: restarting an edge for want of a
    worker would end its sessions and bring no worker."""
    return {"status": "ok"}


async def _live_workers(request: Request[Any, Any, Any]) -> tuple[dict[str, int], list[str]]:
    """Live workers of each kind this deployment serves, and the kinds with none."""
    services: EdgeServices = request.app.state.services
    workers = await services.bus.waiting_workers(request.app.state.required_workers)
    return workers, [kind for kind, count in workers.items() if count == 0]


@get("/health")
async def health(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Every worker kind this deployment serves has a live worker, or 503 with an OpenAI-shaped error that names the
    kinds without one (the jobs of those kinds would wait until they expire)."""
    workers, missing = await _live_workers(request)
    if not missing:
        return Response({"status": "ok", "workers": workers, "missing": []})
    message = f"No live worker for {', '.join(missing)}: such jobs wait until a worker takes them or they expire."
    error = {"type": "server_error", "code": "workers_unavailable", "param": None, "message": message}
    return Response({"status": "unhealthy", "workers": workers, "missing": missing, "error": error}, status_code=503)


@get("/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Every worker kind this deployment serves has a live worker waiting for jobs (its model loaded, or in `serve`
    loaded when the first conversation needs it): `/health`'s verdict, in the body `/ready` has always had."""
    workers, missing = await _live_workers(request)
    body = {"status": "not ready" if missing else "ready", "workers": workers, "waiting_for": missing}
    return Response(body, status_code=503 if missing else 200)


@get("/metrics")
async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The edge's metrics in the Prometheus text format (app/metrics.py says what each measures)."""
    services: EdgeServices = request.app.state.services
    return Response(await services.metrics.exposition(services.bus), media_type=CONTENT_TYPE_LATEST)


# --- meeting analytics over HTTP ------------------------------------------------------------------------------


async def _summaries(request: Request[Any, Any, Any]) -> SummaryStore | None:
    services: EdgeServices = request.app.state.services
    try:
        return (await SummaryStore.open(services.bus))[0]
    except nats.js.errors.BucketNotFoundError:
        return None  # the analytics worker has not run yet


async def _summary(request: Request[Any, Any, Any], session_id: str) -> SessionSummary:
    store = await _summaries(request)
    summary = await store.get(session_id) if store else None
    if summary is None:
        raise NotFoundException(f"No analytics for session '{session_id}'.")
    return summary


@get("/v1/sessions")
async def list_sessions(request: Request[Any, Any, Any]) -> dict[str, Any]:
    store = await _summaries(request)
    summaries = await store.all() if store else []
    now = now_ms()
    return {"object": "list", "data": [s.view(now) for s in summaries]}


@get("/v1/sessions/{session_id:str}")
async def session_summary(request: Request[Any, Any, Any], session_id: FromPath[str]) -> dict[str, Any]:
    return (await _summary(request, session_id)).view(now_ms())


_TRANSCRIPTS = {
    "srt": (to_srt, "application/x-subrip"),
    "vtt": (to_vtt, "text/vtt"),
    "md": (to_markdown, "text/markdown"),
}


@get("/v1/sessions/{session_id:str}/transcript")
async def session_transcript(
    request: Request[Any, Any, Any], session_id: FromPath[str], format: FromQuery[str] = "json"
) -> Response[Any]:
    summary = await _summary(request, session_id)
    if format == "json":
        utterances = summary.view(now_ms())["utterances"]
        return Response({"session_id": session_id, "utterances": utterances})
    if format not in _TRANSCRIPTS:
        return _invalid_format(format, "json, srt, vtt or md")
    render, media_type = _TRANSCRIPTS[format]
    return Response(render(summary), media_type=media_type)


_EXPORTS = {
    "jsonl": "application/jsonl",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "md": "text/markdown",
    "wav": "application/zip",
}


@get("/v1/sessions/{session_id:str}/export")
async def session_export(
    request: Request[Any, Any, Any], session_id: FromPath[str], format: FromQuery[str]
) -> Response[Any]:
    """A session read back from the log, as `vocalis export` writes it: its records (jsonl), subtitles, a
    transcript, or (wav) a zip of one WAV per turn, the user's and the assistant's."""
    if format not in _EXPORTS:
        return _invalid_format(format, ", ".join(_EXPORTS))
    services: EdgeServices = request.app.state.services
    recorded = await read_session(services.bus, session_id)
    if not recorded.entries:
        raise NotFoundException(f"No records of session '{session_id}' on the log.")
    try:
        if format == "wav":
            body = await anyio.to_thread.run_sync(_wav_zip, recorded)
        else:
            body = (export_jsonl(recorded) if format == "jsonl" else export_text(recorded, format)).encode()
    except ValueError as error:  # the log no longer holds what the export needs
        raise HTTPException(status_code=409, detail=str(error)) from error
    extension = "zip" if format == "wav" else format
    disposition = f'attachment; filename="{session_id}.{extension}"'
    return Response(body, media_type=_EXPORTS[format], headers={"content-disposition": disposition})


def _wav_zip(recorded: RecordedSession) -> bytes:
    with tempfile.TemporaryDirectory() as directory:
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in export_wav(recorded, Path(directory)):
                zipped.write(path, path.name)
        return archive.getvalue()


def _invalid_format(format: str, allowed: str) -> Response[Any]:
    message = f"Invalid format '{format}': use {allowed}."
    error = {"type": "invalid_request_error", "code": "invalid_value", "param": "format", "message": message}
    return Response({"error": error}, status_code=400)


@websocket("/v1/realtime")
async def realtime(socket: WebSocket[Any, Any, Any]) -> None:
    services: EdgeServices = socket.app.state.services
    params = connect_params(socket, services, dialect_of(socket))
    # A browser offers subprotocols to carry its key: it fails a connection that does not accept one of them.
    await socket.accept(subprotocols="realtime" if "realtime" in subprotocols(socket) else None)
    if missing := missing_workers(params, socket.app.state.serves):
        await _refuse_conversation(socket, params.dialect, missing)
        return
    await RealtimeConnection(ClientSocket(socket), services, params).run()


async def _refuse_conversation(socket: WebSocket[Any, Any, Any], dialect: Dialect, missing: list[str]) -> None:
    """An `error` and a close, as OpenAI ends a session it cannot serve: here one no response could ever answer
    (its jobs would wait for workers this deployment does not run)."""
    message = (
        f"This server does not serve conversations: it runs no {' or '.join(missing)} worker (VOCALIS_WORKERS). "
        "Connect with ?intent=transcription for a transcription session."
    )
    error = ErrorDetail(type="invalid_request_error", code="invalid_value", message=message, param="intent")
    frame = render(ErrorEvent(event_id="event_" + secrets.token_hex(8), error=error), dialect)
    log.warning("session.refused", reason="conversation not served", missing=missing)
    if frame is not None:
        await socket.send_data(frame.decode())
    await socket.close(code=1008, reason="Conversation not served")


class ApiKeyGate:
    """Refuses requests without the API key with HTTP 401, WebSocket upgrades included (before the upgrade). A
    client secret (`ek_`) stands in for the key where it opens a session."""

    PUBLIC = frozenset({"/live", "/health", "/ready", "/"})  # the console's page asks for the key itself
    PUBLIC_PREFIX = "/console/"  # its static modules

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = presented_key(scope) if scope["type"] in ("http", "websocket") else None
        if key is not None and is_client_secret(key) and opens_session(scope):
            await self.app(scope, receive, send)  # the client secret gate spends it, or refuses it
            return
        public = scope["type"] not in ("http", "websocket") or self._public(scope["path"]) or _preflight(scope)
        if self.api_key is None or public:
            await self.app(scope, receive, send)
            return
        if key is not None and hmac.compare_digest(key, self.api_key):
            await self.app(scope, receive, send)
            return
        error = {"type": "invalid_request_error", "code": "invalid_api_key", "message": "Missing or invalid API key."}
        await refuse(scope, receive, send, 401, error, [(b"www-authenticate", b"Bearer")])

    def _public(self, path: str) -> bool:
        return path in self.PUBLIC or path.startswith(self.PUBLIC_PREFIX)


def _preflight(scope: Scope) -> bool:
    """A browser's CORS preflight, which never carries a key (it asks whether the request that would may be sent)."""
    headers: dict[bytes, bytes] = dict(scope["headers"])
    return scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers


class AdmissionGate:
    """Refuses a realtime session the edge cannot serve now with HTTP 503, before the WebSocket upgrade or the WebRTC
    answer (and before a client secret is spent on it)."""

    def __init__(self, app: Any, admission: Admission, metrics: EdgeMetrics) -> None:
        self.app = app
        self.admission = admission
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and opens_session(scope) and (refusal := self.admission.refusal()):
            log.warning("session.refused", reason=refusal)
            self.metrics.refused()
            error = {"type": "server_error", "code": "server_overloaded", "message": refusal}
            await refuse(scope, receive, send, 503, error, [(b"retry-after", b"5")])
            return
        await self.app(scope, receive, send)


def _openai_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
    """HTTP errors in OpenAI's shape, as clients of its REST API expect them."""
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    code = "not_found" if error.status_code == 404 else None
    body = {"error": {"message": error.detail, "type": kind, "param": None, "code": code}}
    return Response(body, status_code=error.status_code)


def create_app(services: EdgeServices, api_key: str | None, serves: tuple[str, ...] = REQUIRED_WORKERS) -> ApiKeyGate:
    """The edge of a deployment that serves the worker kinds `serves` (VOCALIS_WORKERS)."""
    app = Litestar(
        logging_config=None,
        cors_config=BROWSERS,
        exception_handlers={HTTPException: _openai_error},
        route_handlers=[
            live,
            health,
            ready,
            scrape,
            realtime,
            realtime_http,
            list_sessions,
            session_summary,
            session_transcript,
            session_export,
            console_routes(),
            *audio_routes(services.max_upload_bytes),
        ],
    )
    app.state.services = services
    app.state.serves = serves
    app.state.required_workers = tuple(kind for kind in REQUIRED_WORKERS if kind in serves)
    gated = ClientSecretGate(app, services.client_secrets)
    return ApiKeyGate(AdmissionGate(gated, services.admission, services.metrics), api_key)
