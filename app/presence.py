"""Which edge holds which session, so that a session whose edge died is ended in the log by someone else.

Every edge says on core NATS that it is alive, `<prefix>.edge.<edge id>.alive` every EDGE_HEARTBEAT_S, with the ids
of the sessions it holds, and `session.opened` names the edge that holds the session. Every edge also runs a
`Reaper`: a session that no heartbeat has listed for EDGE_LOST_S (its edge died, or lost it without recording its
end) is closed in the log with reason `edge_lost`, under a `Nats-Msg-Id` of its own, so reapers on several edges
write one close.
"""

import asyncio
import contextlib
import os
import re
import secrets
import time

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import api

from app.analytics import session_of
from app.bus import UNANSWERED, WORKER_KINDS, Bus, LogUnavailable, OrderedFeed, decode_record, encode
from domain import records as rec
from handlers.ports import now_ms

log = structlog.get_logger(__name__)

EDGE_HEARTBEAT_S = 2.0
# Longer than a session waits for NATS (bus.LOG_OUTAGE_S): an edge cut off from NATS ends its sessions itself first.
EDGE_LOST_S = 15.0
REAP_EVERY_S = 1.0


class EdgeAlive(msgspec.Struct, frozen=True):
    sessions: tuple[str, ...]


_alive = msgspec.json.Decoder(EdgeAlive)


def new_edge_id() -> str:
    """Unique per process, readable, and one subject token (no dots)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", os.uname().nodename)
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class EdgePresence:
    """The sessions this edge holds, and its heartbeat."""

    def __init__(self, bus: Bus, edge_id: str) -> None:
        self.bus = bus
        self.edge_id = edge_id
        self.sessions: set[str] = set()

    async def run(self) -> None:
        subject = self.bus.subjects.edge_alive(self.edge_id)
        while True:
            if self.bus.nc.is_connected:  # a heartbeat held back while NATS is away would be stale when sent
                await self.bus.nc.publish(subject, encode(EdgeAlive(tuple(sorted(self.sessions)))))
            await asyncio.sleep(EDGE_HEARTBEAT_S)


class Reaper:
    """Closes in the log the sessions that no edge has said it holds for EDGE_LOST_S."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._listed: dict[str, float] = {}  # open sessions with an edge: when a heartbeat last listed each

    async def run(self) -> None:
        s = self.bus.subjects
        heartbeats = await self.bus.nc.subscribe(s.edge_alive("*"), cb=self._heard)
        # The last lifecycle record of every session, then each new one: the open sessions and their ends.
        lifecycle = await OrderedFeed.open(self.bus, s.session_input("*", "edge"), api.DeliverPolicy.LAST_PER_SUBJECT)
        try:
            async with asyncio.TaskGroup() as parts:
                parts.create_task(self._follow(lifecycle))
                parts.create_task(self._reap())
                parts.create_task(self._after_outages(lifecycle))
        finally:
            await lifecycle.unsubscribe()
            await heartbeats.unsubscribe()

    async def _follow(self, lifecycle: OrderedFeed) -> None:
        async for message in lifecycle.messages:
            try:
                record = decode_record(message.data)
            except msgspec.DecodeError:  # a kind this build does not know: not one of its sessions to watch
                continue
            if isinstance(record, rec.SessionOpened) and record.edge is not None:  # older edges send no heartbeats
                self._listed.setdefault(record.session_id, time.monotonic())
            elif isinstance(record, rec.SessionClosed | rec.SessionExpired):
                self._listed.pop(session_of(message.subject), None)

    async def _heard(self, message: Msg) -> None:
        now = time.monotonic()
        for session_id in _alive.decode(message.data).sessions:
            if session_id in self._listed:
                self._listed[session_id] = now

    async def _after_outages(self, lifecycle: OrderedFeed) -> None:
        """Heartbeats sent while this process was away from NATS were never heard: every edge gets its time again."""
        while True:
            await self.bus.down.wait()
            await self.bus.up.wait()
            now = time.monotonic()
            self._listed = dict.fromkeys(self._listed, now)
            with contextlib.suppress(LogUnavailable):  # then nats-py's own heartbeat check renews it, if slower
                await lifecycle.renew()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            if not self.bus.nc.is_connected:
                continue
            now = time.monotonic()
            for session_id in [sid for sid, at in self._listed.items() if now - at > EDGE_LOST_S]:
                await self._close(session_id, now - self._listed[session_id])

    async def _close(self, session_id: str, unheard_s: float) -> None:
        closed = rec.SessionClosed(at_ms=now_ms(), reason=rec.EDGE_LOST)
        subject = self.bus.subjects.session_input(session_id, "edge")
        try:  # one id for every reaper: the log keeps one close whoever writes it
            await self.bus.publish(subject, encode(closed), f"{session_id}.{rec.EDGE_LOST}")
            await self.bus.drop_jobs(session_id, WORKER_KINDS)  # what its edge asked for has nobody to go to
        except UNANSWERED as error:
            log.warning("session.reap.failed", session_id=session_id, error=repr(error))  # the next round tries again
            return
        self._listed.pop(session_id, None)
        log.warning("session.reaped", session_id=session_id, reason=rec.EDGE_LOST, unlisted_s=round(unheard_s, 1))
