"""Client secrets (`ek_…`): short-lived keys bound to a session configuration, each good for exactly one realtime
connection (WebRTC or WebSocket), as OpenAI's `POST /v1/realtime/client_secrets` (GA) and `POST
/v1/realtime/sessions` (beta) mint them for browsers and phones, which must never hold the server's key.

They are kept in the `<PREFIX>_CLIENT_SECRETS` KV bucket, so a key minted on one edge opens its session on any other.
Each entry lives as long as its key (a per-message TTL) under the key's sha256, so the bucket holds no usable key. A
key is spent by deleting its entry at the revision read: of two edges given one key at once, exactly one succeeds.
"""

import hashlib
import secrets
from typing import Any, Literal

import msgspec
import nats.js.errors
import structlog
from msgspec import Struct
from nats.js import api
from nats.js.kv import KeyValue

from app.bus import UNANSWERED, Bus
from app.credentials import is_client_secret, presented_key
from app.realtime.intake import unserved
from app.refusal import Receive, Scope, Send, refuse
from domain import records as rec
from domain.events import SessionUpdateRequested
from domain.protocol import beta
from domain.protocol.codec import Dialect, decode
from domain.protocol.errors import Rejection
from domain.session import open_session
from domain.session_config import InvalidUpdate, SessionConfig, apply_update
from handlers.models import ModelRegistry
from handlers.ports import now_ms

log = structlog.get_logger(__name__)

DEFAULT_LIFETIME_S = 600  # as OpenAI's
MIN_LIFETIME_S, MAX_LIFETIME_S = 10, 7200
# The requests that open a session, the only ones a client secret is good for: a WebSocket, or a WebRTC offer.
SESSION_PATHS = frozenset({"/v1/realtime", "/v1/realtime/calls"})
SCOPE_KEY = "vocalis.client_secret"  # where the gate leaves the spent secret for the route


SessionType = Literal["realtime", "transcription"]


class ClientSecret(Struct, frozen=True):
    session_id: str  # the session it opens, as the mint answer named it
    session_type: SessionType
    update: SessionUpdateRequested  # its configuration, the session's first client event
    expires_at: int  # epoch seconds


class Refused(Exception):
    """A session configuration the server would refuse, as OpenAI's HTTP 400 says so."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection

    def body(self) -> dict[str, Any]:
        r = self.rejection
        return {"error": {"type": "invalid_request_error", "code": r.code, "message": r.message, "param": r.param}}


def session_config(
    session: object,
    dialect: Dialect,
    *,
    registry: ModelRegistry,
    llm_models: frozenset[str],
    default_stt_model: str,
    beta_transcription: bool = False,
) -> tuple[SessionType, SessionUpdateRequested, SessionConfig]:
    """A session configuration sent over HTTP (a mint request, a WebRTC offer's `session` part): its type, the
    `session.update` that applies it, and the configuration it makes; Refused as the session would refuse it. A GA
    configuration says its type; a beta one is a realtime session's unless `beta_transcription`."""
    kind = "transcription_session.update" if beta_transcription else "session.update"
    frame = msgspec.json.encode({"type": kind, "session": session})
    decoded = decode(frame, dialect)
    if isinstance(decoded, Rejection):
        raise Refused(decoded)
    if not isinstance(decoded, SessionUpdateRequested):  # the frame is a session.update: nothing else decodes
        raise Refused(Rejection("invalid_value", "Expected a session configuration.", "session"))
    if (rejection := unserved(decoded, dialect, registry, llm_models)) is not None:
        raise Refused(rejection)
    stated = decoded.update.type
    session_type: SessionType = (
        stated if isinstance(stated, str) else "transcription" if beta_transcription else "realtime"
    )
    # What a fresh session of this type holds: the update applies to it as it will when the session opens.
    opened = rec.SessionOpened(
        at_ms=0,
        session_id="",
        session_type=session_type,
        dialect=dialect,
        default_stt_model=default_stt_model,
        max_duration_s=1,
    )
    initial = open_session(opened).state.config
    try:
        config = apply_update(initial, decoded.update, default_stt_model)
    except InvalidUpdate as invalid:
        param = invalid.param if dialect == "ga" else (beta.param(invalid.param) or invalid.param)
        raise Refused(Rejection(invalid.code, invalid.message, param)) from None
    return session_type, decoded, config


def lifetime_s(expires_after: object) -> int:
    """The lifetime a mint request asks for (`{"anchor": "created_at", "seconds": N}`), as OpenAI bounds it."""
    if expires_after is None:
        return DEFAULT_LIFETIME_S
    if not isinstance(expires_after, dict) or expires_after.get("anchor", "created_at") != "created_at":
        raise Refused(Rejection("invalid_value", "Expected {'anchor': 'created_at', 'seconds': N}.", "expires_after"))
    seconds = expires_after.get("seconds", DEFAULT_LIFETIME_S)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not MIN_LIFETIME_S <= seconds <= MAX_LIFETIME_S:
        message = f"Invalid 'seconds': {seconds!r}. Expected {MIN_LIFETIME_S} to {MAX_LIFETIME_S}."
        raise Refused(Rejection("invalid_value", message, "expires_after.seconds"))
    return seconds


_secrets = msgspec.json.Decoder(ClientSecret)


class ClientSecretStore:
    """The `<PREFIX>_CLIENT_SECRETS` bucket, made by the first edge that needs it."""

    def __init__(self, bus: Bus, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            bucket = f"{self._bus.subjects.prefix.upper()}_CLIENT_SECRETS"
            try:
                self._kv = await self._bus.js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                config = api.KeyValueConfig(bucket=bucket, history=1, ttl=MAX_LIFETIME_S, replicas=self._replicas)
                self._kv = await self._bus.js.create_key_value(config)
        return self._kv

    async def keep(
        self, session_type: SessionType, update: SessionUpdateRequested, session_id: str, lifetime: int
    ) -> tuple[str, ClientSecret]:
        """A new key for this session, and what it is bound to."""
        key = "ek_" + secrets.token_hex(24)
        secret = ClientSecret(session_id, session_type, update, expires_at=now_ms() // 1000 + lifetime)
        kv = await self._bucket()
        await kv.create(_entry(key.encode()), msgspec.json.encode(secret), msg_ttl=lifetime)
        log.info("client_secret.minted", session_id=session_id, type=session_type, lifetime_s=lifetime)
        return key, secret

    async def spend(self, key: bytes) -> ClientSecret | None:
        """The key's secret, which no one can spend again; None for a key that is unknown, expired or spent."""
        kv = await self._bucket()
        try:
            entry = await kv.get(_entry(key))
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None:
            return None
        secret = _secrets.decode(entry.value)
        if secret.expires_at <= now_ms() // 1000:  # its TTL removes it within a second or so: do not wait for that
            return None
        try:
            await kv.delete(_entry(key), last=entry.revision)
        except nats.js.errors.APIError as lost:  # another edge spent it first (wrong last sequence)
            log.info("client_secret.spent_elsewhere", session_id=secret.session_id, error=str(lost))
            return None
        return secret


def _entry(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


class ClientSecretGate:
    """Spends the client secret that a session-opening request presents, and hands it to the route; refuses with 401
    a key that is unknown, expired or spent, and any client secret presented elsewhere (one cannot mint another)."""

    def __init__(self, app: Any, store: ClientSecretStore) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = presented_key(scope) if scope["type"] in ("http", "websocket") else None
        if key is None or not is_client_secret(key):
            await self.app(scope, receive, send)
            return
        try:
            secret = await self.store.spend(key) if opens_session(scope) else None
        except UNANSWERED:
            error = {"type": "server_error", "code": "log_unavailable", "message": "Try again shortly."}
            await refuse(scope, receive, send, 503, error, [(b"retry-after", b"5")])
            return
        if secret is None:
            message = "Invalid, expired or already used client secret: mint a new one for each session."
            error = {"type": "invalid_request_error", "code": "invalid_api_key", "message": message}
            await refuse(scope, receive, send, 401, error, [(b"www-authenticate", b"Bearer")])
            return
        log.info("client_secret.spent", session_id=secret.session_id)
        scope[SCOPE_KEY] = secret
        await self.app(scope, receive, send)


def spent_secret(scope: Scope) -> ClientSecret | None:
    """The client secret the gate spent for this request, if it presented one."""
    secret = scope.get(SCOPE_KEY)
    return secret if isinstance(secret, ClientSecret) else None


def opens_session(scope: Scope) -> bool:
    """A WebSocket to `/v1/realtime`, or a WebRTC offer (POST) to `/v1/realtime` or `/v1/realtime/calls`."""
    return scope["path"] in SESSION_PATHS and (scope["type"] == "websocket" or scope.get("method") == "POST")
