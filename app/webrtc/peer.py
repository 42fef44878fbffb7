"""A realtime session's client over WebRTC, as OpenAI's WebRTC clients expect it: the client's events come on the
`oai-events` data channel it creates and its voice on its audio track; the session's events go back on that data
channel, except the audio, which goes out on an audio track (`Speaker`), with the WebRTC-only events
`output_audio_buffer.started`, `.stopped` and `.cleared` saying when it plays.

The peer does what a WebSocket client would do with the audio it plays: when the user barges in (or the client sends
`output_audio_buffer.clear`) it stops the playback and truncates the assistant's item to what was played, with an
ordinary `conversation.item.truncate` into the session, so the log holds it like any client's.
"""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import msgspec
import structlog
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioResampler

from app.realtime.channel import Ending, Frame, TrackAudio
from app.webrtc.speaker import Speaker
from domain import events as ev
from domain.session_config import SessionConfig

log = structlog.get_logger(__name__)

EVENTS_CHANNEL = "oai-events"
CONNECT_TIMEOUT_S = 30.0  # an answered offer whose client never connects is given up
CLOSE_FLUSH_S = 1.0  # how long a close waits for the last events to leave
CLOSE_TIMEOUT_S = 5.0
INPUT_RATE = 24_000  # the track's audio goes to the session as pcm16 at the rate of the WebSocket's
INPUT_CHUNK_BYTES = INPUT_RATE // 10 * 2  # 100 ms per record, as clients append over WebSocket


class _Envelope(msgspec.Struct):
    type: object = None


_envelope = msgspec.json.Decoder(_Envelope)


class InvalidOffer(ValueError):
    """An SDP offer that cannot be answered."""


class PeerChannel:
    """A `ClientChannel` over a WebRTC peer connection; `answer` makes one from the client's offer."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.ended = asyncio.Event()
        self.ended_by: Ending | None = None
        self._pc = pc
        self._speaker = Speaker(self._announce)
        self._frames: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._channel: RTCDataChannel | None = None
        self._unsent: list[str] = []  # events for a data channel that is not open yet
        self._config: SessionConfig | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        pc.on("datachannel", self._on_channel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)

    @classmethod
    async def answer(cls, offer: str) -> "tuple[PeerChannel, str]":
        """The peer for the client's SDP offer, and the SDP answer (every candidate in it: no trickle ICE). Host
        candidates only: no STUN server is asked, so it works without the internet, on a LAN or loopback."""
        peer = cls(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        try:
            await peer._pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except ValueError as invalid:
            await peer._pc.close()
            raise InvalidOffer(str(invalid)) from None
        audio = any(t.kind == "audio" for t in peer._pc.getTransceivers())
        if not audio and peer._pc.sctp is None:
            await peer._pc.close()
            raise InvalidOffer("it offers neither an audio track nor a data channel.")
        if audio:
            peer._pc.addTrack(peer._speaker)  # on the offer's audio transceiver: sendrecv
        await peer._pc.setLocalDescription(await peer._pc.createAnswer())
        peer._spawn(peer._connect_or_give_up())
        return peer, peer._pc.localDescription.sdp

    # --- ClientChannel ----------------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        while (frame := await self._frames.get()) is not None:
            yield frame

    async def send(self, event: ev.AnyServerEvent, frame: bytes) -> None:
        if self.ended.is_set():
            return
        match event:
            case ev.OutputAudioDelta():
                self._speaker.play(event.response_id, event.item_id, event.delta)
                return  # the audio goes on the track, not on the data channel
            case ev.SessionCreated() | ev.SessionUpdated():
                self._config = event.session
                self._speaker.follow(event.session.output_format)
            case ev.ResponseDone():
                self._speaker.finish(event.response.id)
        self._post(frame.decode())
        if isinstance(event, ev.SpeechStarted) and self._interrupts():
            self._cut(always_announce=False)

    async def close(self, code: int, reason: str = "", *, by: Ending = "server") -> None:
        """End the call (WebRTC has no close codes: the peer connection closes), after the last events leave."""
        self._end(by)
        channel = self._channel
        if channel is not None and channel.readyState == "open" and channel.bufferedAmount:
            drained = asyncio.Event()
            channel.on("bufferedamountlow", drained.set)  # at a threshold of 0: all sent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), CLOSE_FLUSH_S)
        for task in self._tasks:
            task.cancel()
        self._speaker.stop()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):  # aiortc waits for its RTCP loops: do not hang on them
                await self._pc.close()
        except TimeoutError:
            log.warning("call.close.timeout", waited_s=CLOSE_TIMEOUT_S)

    # --- the peer connection's side ---------------------------------------------------------------------------

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _on_message(self, message: str | bytes) -> None:
        if self._is_clear(message):
            self._cut(always_announce=True)
            return
        self._frames.put_nowait(message)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._listen(track))

    def _on_state(self) -> None:
        if self._pc.connectionState in ("failed", "closed"):
            self._end("client")

    async def _listen(self, track: MediaStreamTrack) -> None:
        """The client's voice (decoded by aiortc, Opus at 48 kHz) to the session, as pcm16 24 kHz mono in 100 ms
        pieces: the WebSocket's audio path from there on (resampling to 16 kHz, VAD, the log)."""
        resampler = AudioResampler(format="s16", layout="mono", rate=INPUT_RATE)
        pending = bytearray()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):  # type: ignore[arg-type]
                pending += bytes(out.planes[0])[: out.samples * 2]
            if len(pending) >= INPUT_CHUNK_BYTES:
                self._frames.put_nowait(TrackAudio(bytes(pending)))
                pending.clear()

    async def _connect_or_give_up(self) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT_S)
        if self._pc.connectionState != "connected":
            log.warning("call.never_connected", state=self._pc.connectionState, waited_s=CONNECT_TIMEOUT_S)
            self._end("client")

    # --- playback ---------------------------------------------------------------------------------------------

    def _interrupts(self) -> bool:
        detection = self._config.turn_detection if self._config is not None else None
        return detection is not None and detection.interrupt_response

    def _cut(self, *, always_announce: bool) -> None:
        """Stop the playback, say so, and keep in the conversation only what was played."""
        cut = self._speaker.clear()
        if cut is None:
            if always_announce:
                self._announce("output_audio_buffer.cleared", None)
            return
        self._announce("output_audio_buffer.cleared", cut.response_id)
        truncate = {
            "type": "conversation.item.truncate",
            "event_id": _event_id(),
            "item_id": cut.item_id,
            "content_index": 0,
            "audio_end_ms": cut.played_ms,
        }
        self._frames.put_nowait(msgspec.json.encode(truncate))

    def _announce(self, kind: str, response_id: str | None) -> None:
        """A WebRTC-only event: the session's log has no part in it (it is about this transport's playback)."""
        if not self.ended.is_set():
            self._post(
                msgspec.json.encode({"type": kind, "event_id": _event_id(), "response_id": response_id}).decode()
            )

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _post(self, text: str) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            self._unsent.append(text)
            return
        try:
            channel.send(text)
        except ValueError as large:  # over the client's max-message-size: a huge session, or item, echoed
            log.warning("call.event.too_large", size=len(text), error=str(large))
            message = f"An event of {len(text)} bytes was not sent: it is over the data channel's message size."
            error = {"type": "server_error", "code": "event_too_large", "message": message, "param": None}
            channel.send(msgspec.json.encode({"type": "error", "event_id": _event_id(), "error": error}).decode())

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        for text in unsent:
            self._post(text)

    @staticmethod
    def _is_clear(message: str | bytes) -> bool:
        """`output_audio_buffer.clear`, which only the transport can carry out; everything else is the session's."""
        if "output_audio_buffer.clear" not in (
            message if isinstance(message, str) else message.decode(errors="replace")
        ):
            return False
        try:
            return _envelope.decode(message).type == "output_audio_buffer.clear"
        except msgspec.DecodeError:
            return False

    def _end(self, by: Ending) -> None:
        if not self.ended.is_set():
            self.ended_by = by
            self.ended.set()
            self._frames.put_nowait(None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _event_id() -> str:
    return "event_" + secrets.token_hex(8)
