"""The WebRTC calls an edge holds. The HTTP request that offered a call is answered before its session begins, so
each session runs in a task of its own here, until its peer leaves, it is hung up, or the edge stops."""

import asyncio
import secrets
from collections.abc import Coroutine
from typing import Any

import structlog

from app.webrtc.peer import PeerChannel

log = structlog.get_logger(__name__)


class Calls:
    def __init__(self) -> None:
        self._peers: dict[str, PeerChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, peer: PeerChannel, session: Coroutine[Any, Any, None]) -> str:
        """Run the call's session; its id, for `Location` and hang-ups."""
        call_id = "rtc_" + secrets.token_hex(12)
        self._peers[call_id] = peer
        task = asyncio.create_task(self._run(call_id, peer, session), name=call_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call_id

    async def _run(self, call_id: str, peer: PeerChannel, session: Coroutine[Any, Any, None]) -> None:
        log.info("call.started", call_id=call_id)
        try:
            await session
        finally:
            self._peers.pop(call_id, None)
            await peer.close(1000, by="client")  # frees the peer connection whoever ended the session
            log.info("call.ended", call_id=call_id, by=peer.ended_by)

    async def hang_up(self, call_id: str) -> bool:
        """End the call as if its client had left (its last words are still transcribed); False if there is none, or
        it has ended."""
        peer = self._peers.get(call_id)
        if peer is None or peer.ended.is_set():
            return False
        await peer.close(1000, "Hung up", by="client")
        return True

    async def close(self) -> None:
        """Hang up every call and wait for their sessions to end (the edge is stopping)."""
        for call_id in list(self._peers):
            await self.hang_up(call_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
