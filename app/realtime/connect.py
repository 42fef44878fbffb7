"""What a client asks for as it connects: the dialect, the mode and the models, from the URL and the headers as
OpenAI and Speaches have them, or from the client secret it presents."""

from typing import Any

from litestar.connection import ASGIConnection

from app.client_secrets import SessionType, spent_secret
from app.realtime.connection import ConnectParams, EdgeServices
from app.realtime.intake import unknown_llm
from domain.events import SessionUpdateRequested
from domain.protocol.codec import Dialect
from domain.protocol.errors import Rejection
from handlers.models import UnknownModel, is_realtime_model

CONVERSATION_WORKERS = ("llm", "tts")  # what a conversation session needs besides transcription
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"  # a browser's `OpenAI-Beta: realtime=v1`


def subprotocols(connection: ASGIConnection[Any, Any, Any, Any]) -> list[str]:
    """The WebSocket subprotocols the client offers (a browser's way to send what it cannot put in headers)."""
    scope: dict[str, Any] = dict(connection.scope)
    return [protocol for protocol in scope.get("subprotocols", ()) if isinstance(protocol, str)]


def dialect_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Dialect:
    """Beta by the `OpenAI-Beta` header, or by its subprotocol form from a browser."""
    beta = "realtime=v1" in connection.headers.get("openai-beta", "")
    return "beta" if beta or BETA_SUBPROTOCOL in subprotocols(connection) else "ga"


def connect_params(
    connection: ASGIConnection[Any, Any, Any, Any],
    services: EdgeServices,
    dialect: Dialect,
    configured: tuple[SessionType, SessionUpdateRequested] | None = None,
) -> ConnectParams:
    """Mode and models from the query. A session configured from the start (by the client secret presented, or else
    by `configured`, a WebRTC offer's `session`) takes its type from that configuration, and opens with it."""
    secret = spent_secret(dict(connection.scope))
    if secret is not None:
        return _from_query(connection, services, dialect, secret.session_type, secret.update, secret.session_id)
    if configured is not None:
        return _from_query(connection, services, dialect, *configured)
    transcription = connection.query_params.get("intent") == "transcription"
    return _from_query(connection, services, dialect, "transcription" if transcription else "realtime")


def _from_query(
    connection: ASGIConnection[Any, Any, Any, Any],
    services: EdgeServices,
    dialect: Dialect,
    session_type: SessionType,
    bound: SessionUpdateRequested | None = None,
    session_id: str | None = None,
) -> ConnectParams:
    query = connection.query_params
    transcription = session_type == "transcription"
    model = query.get("model") or None
    url_model = model if transcription and model and not is_realtime_model(model) else None
    stt_model = query.get("transcription_model") or url_model
    rejections: list[Rejection] = []
    if stt_model is not None:
        try:
            services.registry.canonical(stt_model)
        except UnknownModel as unknown:
            param = "transcription_model" if query.get("transcription_model") else "model"
            rejections.append(Rejection("invalid_value", str(unknown), param))
            stt_model = None
    refused = unknown_llm(model, services.llm_models) if model is not None and not transcription else None
    if refused is not None:
        rejections.append(Rejection("invalid_value", refused, "model"))
        model = None
    return ConnectParams(
        dialect=dialect,
        session_type=session_type,
        model=None if transcription else model,
        transcription_model=stt_model,
        language=query.get("language") or None,
        rejections=tuple(rejections),
        session_id=session_id,
        bound=bound,
    )


def missing_workers(params: ConnectParams, serves: tuple[str, ...]) -> list[str]:
    """The worker kinds a conversation needs that this deployment does not run (none for transcription)."""
    return [kind for kind in CONVERSATION_WORKERS if kind not in serves] if params.session_type == "realtime" else []
