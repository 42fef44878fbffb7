"""The Litestar edge: `/v1/realtime` (WebSocket) and `/health`, behind an API-key gate."""

import hmac
from typing import Any
from urllib.parse import parse_qs

from litestar import Litestar, WebSocket, get, websocket
from litestar.types import ASGIApp, Receive, Scope, Send

from vocalis.app.connection import ConnectParams, EdgeServices, RealtimeConnection
from vocalis.handlers.models import UnknownModel, is_realtime_model
from vocalis.protocol.errors import Rejection


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


def connect_params(socket: WebSocket[Any, Any, Any], services: EdgeServices) -> ConnectParams:
    """Dialect by the `OpenAI-Beta` header, mode and models from the query, as OpenAI and Speaches have them."""
    query = socket.query_params
    dialect = "beta" if "realtime=v1" in socket.headers.get("openai-beta", "") else "ga"
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
    return ConnectParams(
        dialect=dialect,
        session_type="transcription" if transcription else "realtime",
        model=None if transcription else model,
        transcription_model=stt_model,
        language=query.get("language") or None,
        rejections=tuple(rejections),
    )


@websocket("/v1/realtime")
async def realtime(socket: WebSocket[Any, Any, Any]) -> None:
    services: EdgeServices = socket.app.state.services
    params = connect_params(socket, services)
    await socket.accept()
    await RealtimeConnection(socket, services, params).run()


class ApiKeyGate:
    """Refuses requests without the API key with HTTP 401, WebSocket upgrades included (before the upgrade)."""

    PUBLIC = frozenset({"/health"})

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.api_key is None or scope["type"] not in ("http", "websocket") or scope["path"] in self.PUBLIC:
            await self.app(scope, receive, send)
            return
        if self._presented_key(scope) is not None and hmac.compare_digest(
            self._presented_key(scope) or b"", self.api_key
        ):
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, receive, send)

    @staticmethod
    def _presented_key(scope: Scope) -> bytes | None:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            return authorization[7:].strip()
        if b"x-api-key" in headers:
            return headers[b"x-api-key"].strip()
        query = parse_qs(scope.get("query_string", b"").decode())
        return query["api_key"][0].encode() if "api_key" in query else None

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        body = (
            b'{"error":{"type":"invalid_request_error","code":"invalid_api_key",'
            b'"message":"Missing or invalid API key."}}'
        )
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(services: EdgeServices, api_key: str | None) -> ASGIApp:
    app = Litestar(route_handlers=[health, realtime])
    app.state.services = services
    return ApiKeyGate(app, api_key)
