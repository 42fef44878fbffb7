"""An OpenAI WebRTC client as a browser is one, in aiortc: it offers an `oai-events` data channel and a microphone
track, and plays what comes back on the remote audio track (here: keeps it)."""

import asyncio
import fractions
import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

RATE = 24_000
FRAME = RATE // 50  # 20 ms


class Microphone(MediaStreamTrack):
    """Speaks what it is given (pcm16 24 kHz) in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._pts = 0
        self.spoken = asyncio.Event()

    def say(self, pcm: bytes) -> None:
        self.spoken.clear()
        self._pending = np.concatenate([self._pending, np.frombuffer(pcm, dtype="<i2")])

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - time.monotonic()))
        samples = np.zeros(FRAME, dtype=np.int16)
        taken = self._pending[:FRAME]
        samples[: len(taken)] = taken
        self._pending = self._pending[len(taken) :]
        if not len(self._pending):
            self.spoken.set()
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.pts, frame.sample_rate, frame.time_base = self._pts, RATE, fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


class RtcClient:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = Microphone()
        self.pc.addTrack(self.microphone)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.heard: list[np.ndarray] = []  # the remote track's audio, 48 kHz mono int16 frames
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", lambda track: self._tasks.append(asyncio.create_task(self._play(track))))
        self.location: str | None = None

    async def offer(self, max_message_size: int | None = None) -> str:
        """The SDP offer; `max_message_size` is what it says the client takes in a data channel message."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer: str = self.pc.localDescription.sdp
        if max_message_size is not None:
            offer = re.sub(r"a=max-message-size:\d+", f"a=max-message-size:{max_message_size}", offer)
        return offer

    async def accept(self, answer: str) -> None:
        """Take the server's SDP answer, and wait for the data channel."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(self.opened.wait(), 30)

    async def connect(
        self,
        url: str,
        key: str | None = None,
        session: dict[str, Any] | None = None,
        path: str = "/calls",
        max_message_size: int | None = None,
    ) -> httpx.Response:
        """POST the offer as OpenAI's clients do (application/sdp; with `session`, multipart) and take the answer."""
        offer = await self.offer(max_message_size)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(timeout=30) as http:
            if session is None:
                headers["Content-Type"] = "application/sdp"
                answer = await http.post(url + path, content=offer, headers=headers)
            else:
                files = {"sdp": (None, offer), "session": (None, json.dumps(session))}
                answer = await http.post(url + path, files=files, headers=headers)
        if answer.status_code == 201:
            self.location = answer.headers["location"]
            await self.accept(answer.text)
        return answer

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        """The first event (since the start) for which `done` is true, waiting for it."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if done(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_message(self, message: str | bytes) -> None:
        self.events.append(json.loads(message))
        self._changed.set()

    async def _play(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            self._hear(samples[:, 0].astype(np.int16))

    def _hear(self, samples: np.ndarray) -> None:
        """One frame of the remote track, as it arrives."""
        self.heard.append(samples)
