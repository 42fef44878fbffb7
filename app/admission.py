"""Whether the edge takes one more session. A session is refused before the WebSocket upgrade, with HTTP 503 and an
OpenAI-shaped error, while the transcripts already due wait for a worker (the sessions there are would wait longer
still) or while the edge holds as many sessions as it may. The sessions already in keep their latency."""

import asyncio
import contextlib

import structlog

from app.bus import Bus

log = structlog.get_logger(__name__)
LOOK_EVERY_S = 1.0


class Admission:
    def __init__(self, bus: Bus, sessions: set[str], max_sessions: int, max_backlog: int) -> None:
        self._bus = bus
        self._sessions = sessions  # the edge's live sessions
        self._max_sessions = max_sessions  # 0: no limit
        self._max_backlog = max_backlog
        self.backlog = 0  # transcripts due that no worker has taken yet, as last seen

    def refusal(self) -> str | None:
        """Why a new session is refused now, or None."""
        if self._max_sessions and len(self._sessions) >= self._max_sessions:
            return f"This server holds its limit of {self._max_sessions} sessions; try again shortly."
        if self.backlog > self._max_backlog:
            return (
                f"The server is overloaded ({self.backlog} transcripts wait for a worker); try again shortly, "
                "or add transcription workers."
            )
        return None

    async def run(self) -> None:
        """Follow the transcription queue's backlog."""
        overloaded = False
        while True:
            with contextlib.suppress(Exception):  # NATS away: keep the last look; the session itself says so
                info = await self._bus.js.consumer_info(self._bus.subjects.jobs_stream, "stt")
                self.backlog = info.num_pending or 0
            if overloaded != (self.backlog > self._max_backlog):
                overloaded = not overloaded
                log.warning("edge.overloaded" if overloaded else "edge.recovered", backlog=self.backlog)
            await asyncio.sleep(LOOK_EVERY_S)
