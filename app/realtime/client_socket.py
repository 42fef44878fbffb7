"""The client's WebSocket as a session sees it: frames in, frames out, and one way to end it.

A client that stops reading must not stall its session: a send that cannot finish within `SEND_TIMEOUT_S` ends the
connection as `unresponsive` (uvicorn's WebSocket pings find clients that vanished without a word).
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar import WebSocket

from app.realtime.channel import Ending, Frame
from domain.events import AnyServerEvent

log = structlog.get_logger(__name__)

SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0


class ClientSocket:
    """A `ClientChannel` over a WebSocket: every event travels as a text frame."""

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        self._socket = socket
        self.ended = asyncio.Event()
        self.ended_by: Ending | None = None

    async def frames(self) -> AsyncIterator[Frame]:
        """Every frame the client sends, until it disconnects."""
        while True:
            message = await self._socket.receive()
            if message["type"] == "websocket.disconnect":
                self._end("client")
                return
            text, data = message.get("text"), message.get("bytes")
            yield text if isinstance(text, str) else data if isinstance(data, bytes) else b""

    async def send(self, event: AnyServerEvent, frame: bytes) -> None:
        if self.ended.is_set():
            return  # the log still records what the client would have got
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):  # no task per send, unlike wait_for
                await self._socket.send_data(frame.decode(), mode="text")
        except TimeoutError:
            log.warning("client.unresponsive", waited_s=SEND_TIMEOUT_S)
            await self.close(1008, "The client did not read its events.", by="unresponsive")
        except Exception as error:  # the client is gone
            log.debug("client.send.failed", error=repr(error))
            self._end("client")

    async def close(self, code: int, reason: str = "", *, by: Ending = "server") -> None:
        """End the connection (once); a close that cannot get through in time is abandoned."""
        if self.ended.is_set():
            return
        self._end(by)
        try:
            await asyncio.wait_for(self._socket.close(code=code, reason=reason), CLOSE_TIMEOUT_S)
        except Exception as error:
            log.debug("client.close.failed", error=repr(error))

    def _end(self, by: Ending) -> None:
        if not self.ended.is_set():
            self.ended_by = by
            self.ended.set()
