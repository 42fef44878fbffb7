"""The Realtime API over HTTP, as OpenAI's clients call it: minting client secrets (GA `POST
/v1/realtime/client_secrets`, beta `POST /v1/realtime/sessions` and `/transcription_sessions`) and WebRTC calls (GA
`POST /v1/realtime/calls`, beta `POST /v1/realtime`, with the SDP offer; `POST /v1/realtime/calls/{call_id}/hangup`)."""

from typing import Any

import msgspec
import structlog
from litestar import Request, Response, Router, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from app.bus import UNANSWERED
from app.client_secrets import Refused, SessionType, lifetime_s, session_config, spent_secret
from app.realtime.connect import connect_params, missing_workers
from app.realtime.connection import EdgeServices, RealtimeConnection, new_session_id
from app.webrtc.peer import InvalidOffer, PeerChannel
from domain.events import SessionUpdateRequested
from domain.protocol import beta, ga
from domain.protocol.codec import Dialect
from domain.protocol.errors import Rejection
from domain.session_config import SessionConfig

log = structlog.get_logger(__name__)


@post("/client_secrets", status_code=200)
async def mint_client_secret(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """GA: `{"expires_after": {...}, "session": {...}}` -> `{"value": "ek_…", "expires_at": …, "session": {...}}`."""
    body = await _json(request)
    lifetime = lifetime_s(body.get("expires_after"))
    session_type, update, config = _configuration(request, body.get("session", {"type": "realtime"}), "ga")
    key, expires_at, session_id = await _keep(request, session_type, update, lifetime)
    return {"value": key, "expires_at": expires_at, "session": ga.session(config, session_id, expires_at)}


@post("/sessions", status_code=200)
async def mint_beta_session(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Beta: a session configuration -> the session, with `"client_secret": {"value": "ek_…", "expires_at": …}`."""
    return await _mint_beta(request, transcription=False)


async def _mint_beta(request: Request[Any, Any, Any], *, transcription: bool) -> dict[str, Any]:
    body = await _json(request)
    asked = body.pop("client_secret", None)
    lifetime = lifetime_s(asked.get("expires_after") if isinstance(asked, dict) else None)
    session_type, update, config = _configuration(request, body, "beta", beta_transcription=transcription)
    key, expires_at, session_id = await _keep(request, session_type, update, lifetime)
    return {**beta.session(config, session_id, expires_at), "client_secret": {"value": key, "expires_at": expires_at}}


@post("/transcription_sessions", status_code=200)
async def mint_beta_transcription_session(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Beta: a transcription session configuration -> the transcription session, with its `client_secret`."""
    return await _mint_beta(request, transcription=True)


@post("/calls", status_code=201)
async def offer_call(request: Request[Any, Any, Any]) -> Response[str]:
    """GA: an SDP offer (`application/sdp`, or `multipart/form-data` with `sdp` and a `session` configuration)."""
    return await _call(request, "ga")


@post("/", status_code=201)
async def offer_beta_call(request: Request[Any, Any, Any]) -> Response[str]:
    """Beta: an SDP offer to `/v1/realtime?model=…`."""
    return await _call(request, "beta")


@post("/calls/{call_id:str}/hangup", status_code=200)
async def hang_up(request: Request[Any, Any, Any], call_id: FromPath[str]) -> Response[dict[str, Any]]:
    services: EdgeServices = request.app.state.services
    if await services.calls.hang_up(call_id):
        return Response({})
    error = {"type": "invalid_request_error", "code": "not_found", "param": "call_id", "message": "No such call."}
    return Response({"error": error}, status_code=404)


async def _call(request: Request[Any, Any, Any], dialect: Dialect) -> Response[str]:
    services: EdgeServices = request.app.state.services
    sdp, session = await _offer(request)
    configured = None
    if session is not None and spent_secret(dict(request.scope)) is None:  # a client secret's session prevails
        session_type, update, _ = _configuration(request, session, "ga")
        configured = (session_type, update)
    params = connect_params(request, services, dialect, configured)
    if missing := missing_workers(params, request.app.state.serves):
        message = f"This server does not serve conversations: it runs no {' or '.join(missing)} worker."
        raise Refused(Rejection("invalid_value", message, "session.type"))
    try:
        peer, answer = await PeerChannel.answer(sdp)
    except InvalidOffer as invalid:
        raise Refused(Rejection("invalid_offer", f"Invalid SDP offer: {invalid}", "sdp")) from None
    call_id = await services.calls.start(peer, RealtimeConnection(peer, services, params).run())
    headers = {"Location": f"/v1/realtime/calls/{call_id}"}
    return Response(answer, status_code=201, media_type="application/sdp", headers=headers)


async def _offer(request: Request[Any, Any, Any]) -> tuple[str, object | None]:
    """The SDP offer, and the session configuration that came with it (multipart only)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        sdp, session = form.get("sdp"), form.get("session")
        sdp = (await sdp.read()).decode(errors="replace") if isinstance(sdp, UploadFile) else sdp
        session = (await session.read()).decode(errors="replace") if isinstance(session, UploadFile) else session
        try:
            config = msgspec.json.decode(session) if isinstance(session, str) and session else None
        except msgspec.DecodeError as error:
            raise Refused(Rejection("invalid_json", f"The session is not valid JSON: {error}", "session")) from None
    else:
        sdp, config = (await request.body()).decode(errors="replace"), None
    if not isinstance(sdp, str) or not sdp.strip():
        raise Refused(Rejection("missing_required_parameter", "Missing required parameter: 'sdp'.", "sdp"))
    return sdp, config


async def _json(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = msgspec.json.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as error:
        raise Refused(Rejection("invalid_json", f"The body is not valid JSON: {error}", None)) from None
    if not isinstance(body, dict):
        raise Refused(Rejection("invalid_type", "The body must be a JSON object.", None))
    return body


def _configuration(
    request: Request[Any, Any, Any], session: object, dialect: Dialect, *, beta_transcription: bool = False
) -> tuple[SessionType, SessionUpdateRequested, SessionConfig]:
    services: EdgeServices = request.app.state.services
    return session_config(
        session,
        dialect,
        registry=services.registry,
        llm_models=services.llm_models,
        default_stt_model=services.default_stt_model,
        beta_transcription=beta_transcription,
    )


async def _keep(
    request: Request[Any, Any, Any], session_type: SessionType, update: SessionUpdateRequested, lifetime: int
) -> tuple[str, int, str]:
    """A new client secret for a new session: the key, when it expires, and the session's id."""
    services: EdgeServices = request.app.state.services
    key, secret = await services.client_secrets.keep(session_type, update, new_session_id(), lifetime)
    return key, secret.expires_at, secret.session_id


def _refused(request: Request[Any, Any, Any], refused: Refused) -> Response[dict[str, Any]]:
    return Response(refused.body(), status_code=400)


def _unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """NATS, where client secrets and sessions live, did not answer."""
    log.warning("realtime_http.log_unavailable", path=request.url.path, error=repr(error))
    body = {"type": "server_error", "code": "log_unavailable", "param": None, "message": "Try again shortly."}
    return Response({"error": body}, status_code=503, headers={"Retry-After": "5"})


realtime_http = Router(
    path="/v1/realtime",
    route_handlers=[
        mint_client_secret,
        mint_beta_session,
        mint_beta_transcription_session,
        offer_call,
        offer_beta_call,
        hang_up,
    ],
    exception_handlers={Refused: _refused, **dict.fromkeys(UNANSWERED, _unavailable)},
)
