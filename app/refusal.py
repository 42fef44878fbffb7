"""Refusing a request in plain ASGI, as uvicorn calls an app, before any framework sees it: an HTTP error in
OpenAI's shape, also in place of a WebSocket upgrade."""

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def refuse(
    scope: Scope, receive: Receive, send: Send, status: int, error: dict[str, str], headers: list[tuple[bytes, bytes]]
) -> None:
    """An HTTP error in OpenAI's shape; for a WebSocket, instead of the upgrade (a close, where the server cannot
    answer an upgrade with a response)."""
    body = msgspec.json.encode({"error": {**error, "param": None}})
    headers = [(b"content-type", b"application/json"), *headers]
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008 if status < 500 else 1013})
        return
    headers.append((b"access-control-allow-origin", b"*"))  # a page of another origin may read why (edge.BROWSERS)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
