"""The key a request presents, wherever a client may put it: `Authorization: Bearer`, `X-API-Key`, `?api_key=`, or
the WebSocket subprotocol `openai-insecure-api-key.<key>`, the only place a browser's WebSocket can carry one (the
official JavaScript SDK puts it there)."""

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs

SUBPROTOCOL_KEY = "openai-insecure-api-key."
CLIENT_SECRET_PREFIX = b"ek_"


def presented_key(scope: MutableMapping[str, Any]) -> bytes | None:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    authorization = headers.get(b"authorization", b"")
    if authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip()
    if b"x-api-key" in headers:
        return headers[b"x-api-key"].strip()
    for protocol in scope.get("subprotocols", ()):
        if isinstance(protocol, str) and protocol.startswith(SUBPROTOCOL_KEY):
            return protocol[len(SUBPROTOCOL_KEY) :].encode()
    query = parse_qs(scope.get("query_string", b"").decode())
    return query["api_key"][0].encode() if "api_key" in query else None


def is_client_secret(key: bytes) -> bool:
    return key.startswith(CLIENT_SECRET_PREFIX)
