"""The WebRTC calls an edge holds. The HTTP request that offered a call is answered before its session begins, so
each session runs in a task of its own here, until its peer leaves, it is hung up, or the edge stops.

A hang-up may reach any edge behind the load balancer: each call listens on `<prefix>.call.<call_id>.hangup` (core
NATS), and an edge that does not hold the call asks there.
"""

import asyncio
import secrets
from collections.abc import Coroutine
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from app.bus import Bus
from app.webrtc.peer import PeerChannel

log = structlog.get_logger(__name__)

HANG_UP_WAIT_S = 2.0  # for the edge that holds the call to answer
HUNG_UP, NOT_HERE = b"1", b"0"


class Calls:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._peers: dict[str, PeerChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, peer: PeerChannel, session: Coroutine[Any, Any, None]) -> str:
        """Run the call's session; its id, for `Location` and hang-ups."""
        call_id = "rtc_" + secrets.token_hex(12)
        self._peers[call_id] = peer
        asked = await self._bus.nc.subscribe(self._bus.subjects.hang_up(call_id), cb=self._asked)
        task = asyncio.create_task(self._run(call_id, peer, session, asked), name=call_id)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return call_id

    async def _run(
        self, call_id: str, peer: PeerChannel, session: Coroutine[Any, Any, None], asked: Subscription
    ) -> None:
        log.info("call.started", call_id=call_id)
        try:
            await session
        finally:
            self._peers.pop(call_id, None)
            await peer.close(1000, by="client")  # frees the peer connection whoever ended the session
            await asked.unsubscribe()
            log.info("call.ended", call_id=call_id, by=peer.ended_by)

    async def hang_up(self, call_id: str) -> bool:
        """End the call as if its client had left (its last words are still transcribed), on whichever edge holds
        it; False if none does, or it has ended."""
        if call_id in self._peers:
            return await self._hang_up_here(call_id)
        try:
            answer = await self._bus.nc.request(self._bus.subjects.hang_up(call_id), timeout=HANG_UP_WAIT_S)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        return answer.data == HUNG_UP

    async def _asked(self, message: Msg) -> None:
        call_id = message.subject.split(".")[-2]
        await message.respond(HUNG_UP if await self._hang_up_here(call_id) else NOT_HERE)

    async def _hang_up_here(self, call_id: str) -> bool:
        peer = self._peers.get(call_id)
        if peer is None or peer.ended.is_set():
            return False
        await peer.close(1000, "Hung up", by="client")
        return True

    async def close(self) -> None:
        """Hang up every call of this edge and wait for their sessions to end (the edge is stopping)."""
        for call_id in list(self._peers):
            await self._hang_up_here(call_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
