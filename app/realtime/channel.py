"""What a realtime session needs of its client's transport: frames in, events out, one way to end it, and word
that it ended. A WebSocket (`ClientSocket`) and a WebRTC peer connection (`app/webrtc/peer.py`) both provide it, so
one `RealtimeConnection` serves either."""

import asyncio
from collections.abc import AsyncIterator
from typing import Literal, Protocol

from msgspec import Struct

from domain.events import AnyServerEvent

Ending = Literal["client", "server", "unresponsive", "failed"]


class TrackAudio(Struct, frozen=True):
    """Input audio that came as media (a WebRTC track), not in an event: pcm16, 24 kHz, mono, whatever format the
    session's events would use."""

    pcm: bytes


Frame = str | bytes | TrackAudio


class ClientChannel(Protocol):
    ended: asyncio.Event
    ended_by: Ending | None

    def frames(self) -> AsyncIterator[Frame]:
        """Everything the client sends, until it leaves."""
        ...

    async def send(self, event: AnyServerEvent, frame: bytes) -> None:
        """`event`, rendered in the session's dialect as `frame`; the transport decides how it travels."""

    async def close(self, code: int, reason: str = "", *, by: Ending = "server") -> None:
        """End the connection (once)."""
