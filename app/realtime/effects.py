"""Carrying out a transition of the state machine: its events go to the client, in the client's dialect, and to the
log; its jobs go to the work queues."""

from app.realtime.channel import ClientChannel
from app.realtime.session_log import SessionLog
from domain.protocol.codec import Dialect, render
from domain.state import Transition


class Effects:
    def __init__(self, client: ClientChannel, session_log: SessionLog, dialect: Dialect) -> None:
        self._client = client
        self._log = session_log
        self._dialect = dialect

    async def carry_out(self, transition: Transition) -> None:
        for event in transition.events:
            frame = render(event, self._dialect)
            if frame is not None:  # some events have no form in the beta dialect
                await self._client.send(event, frame)
            await self._log.output(event)
        for job in transition.jobs:
            await self._log.ask(job)
        if transition.close:
            await self._client.close(1000)
