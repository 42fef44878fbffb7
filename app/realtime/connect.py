"""What a client asks for as it connects: the dialect, the mode and the models, from the URL and the headers as
OpenAI and Speaches have them, or from the client secret it presents."""

import dataclasses
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
    connection: ASGIConnection[Any, Any, Any, Any], services: EdgeServices, dialect: Dialect
) -> ConnectParams:
    """Mode and models from the query, unless the client secret it presented says otherwise."""
    params = _from_query(connection, services, dialect)
    secret = spent_secret(dict(connection.scope))
    return params if secret is None else configured(params, secret.session_type, secret.update, secret.session_id)


def _from_query(
    connection: ASGIConnection[Any, Any, Any, Any], services: EdgeServices, dialect: Dialect
) -> ConnectParams:
    query = connection.query_params
    transcription = query.get("intent") == "transcription"
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
        session_type="transcription" if transcription else "realtime",
        model=None if transcription else model,
        transcription_model=stt_model,
        language=query.get("language") or None,
        rejections=tuple(rejections),
    )


def configured(
    params: ConnectParams,
    session_type: SessionType,
    update: SessionUpdateRequested,
    session_id: str | None = None,
) -> ConnectParams:
    """A session configured from the start (by a client secret, or a WebRTC offer's `session`): its type, and the
    configuration it opens with; the URL's models yield where it is the other kind of session."""
    same_kind = session_type == params.session_type
    return dataclasses.replace(
        params,
        session_type=session_type,
        session_id=session_id,
        bound=update,
        model=params.model if same_kind else None,
        transcription_model=params.transcription_model if same_kind else None,
    )


def missing_workers(params: ConnectParams, serves: tuple[str, ...]) -> list[str]:
    """The worker kinds a conversation needs that this deployment does not run (none for transcription)."""
    return [kind for kind in CONVERSATION_WORKERS if kind not in serves] if params.session_type == "realtime" else []
