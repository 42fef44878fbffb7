"""Reducing one session: its input records, in stream order, through the pure state machine.

The edge never reduces a client event on receipt; it writes it and reduces what the log delivers, so replaying the
log reproduces the session exactly. Others wait on the reducer's progress: the format barrier (audio after a format
change is decoded in the new format) and a client's departure (its last transcripts still reach the log).
"""

import asyncio
from collections.abc import Callable

import msgspec
import structlog

from app.bus import OrderedFeed
from app.metrics import SessionWatch
from app.realtime.effects import Effects
from domain.events import ErrorDetail, ErrorEvent
from domain.records import ReducerRecord
from domain.replay import advance
from domain.state import SessionState, Transition

# Every record the edge wrote comes back through here, audio included: its audio is not decoded again.
_records = msgspec.json.Decoder(ReducerRecord)


def decode(payload: bytes) -> ReducerRecord:
    record: ReducerRecord = _records.decode(payload)
    return record


class Reducer:
    def __init__(self, effects: Effects, log: structlog.typing.FilteringBoundLogger, watch: SessionWatch) -> None:
        self.state: SessionState | None = None
        self._effects = effects
        self._watch = watch
        self._log = log
        self._reduced_seq = 0
        self._progress = asyncio.Condition()

    async def run(self, feed: OrderedFeed) -> None:
        """Reduce every record the session's ordered consumer delivers, until the session closes."""
        async for message in feed.messages:
            seq = message.metadata.sequence.stream
            try:
                record = decode(message.data)
            except msgspec.DecodeError as error:
                self._log.error("record.undecodable", seq=seq, error=str(error))
                continue
            transition = self._apply(record, seq)
            await self._effects.carry_out(transition)
            self._watch.reduced(record, transition)
            async with self._progress:
                self._reduced_seq = seq
                self._progress.notify_all()
            if transition.close or transition.state.closed:
                return

    def _apply(self, record: ReducerRecord, seq: int) -> Transition:
        try:
            transition = advance(self.state, record, seq)
        except Exception:
            # A bug in the state machine must not end the session: report it, keep the last good state.
            self._log.exception("session.step.failed", seq=seq)
            if self.state is None:
                raise
            error = ErrorDetail(type="server_error", code="internal_error", message="Internal error; see logs.")
            return Transition(self.state, (ErrorEvent(event_id=f"event_err{seq}", error=error),))
        self.state = transition.state
        return transition

    async def wait_reduced(self, seq: int, seconds: float) -> None:
        """Until the record with stream sequence `seq` is reduced (a warning after `seconds`)."""
        await self._wait(lambda: self._reduced_seq >= seq, seconds, waiting_for=seq)

    async def wait_transcripts(self, seconds: float) -> None:
        """Until no transcript the session awaits is missing (a warning after `seconds`)."""
        await self._wait(lambda: self.state is None or not self.state.transcribing, seconds, waiting_for="transcripts")

    async def _wait(self, done: Callable[[], bool], seconds: float, waiting_for: object) -> None:
        async with self._progress:
            try:
                await asyncio.wait_for(self._progress.wait_for(done), seconds)
            except TimeoutError:
                pending = list(self.state.transcribing) if self.state else []
                self._log.warning(
                    "session.reduce.lagging", waiting_for=waiting_for, reduced=self._reduced_seq, pending=pending
                )
