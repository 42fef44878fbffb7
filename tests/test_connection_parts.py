"""The parts of a connection stand or fall together: a part that crashes ends the session with an `error` and close
code 1011 (never a session with a dead part), and a client that stops reading is let go, its session closed."""

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets

from app.log_reader import read_session
from app.realtime import client_socket
from app.realtime.intake import Intake
from domain import records as rec
from tests.realtime_client import raw_connect


async def _session_closed(stack, session_id: str, timeout: float = 15) -> rec.SessionClosed:
    async with asyncio.timeout(timeout):
        while True:
            recorded = await read_session(stack.bus, session_id)
            closed = [r for _, r in recorded.inputs if isinstance(r, rec.SessionClosed)]
            if closed:
                return closed[0]
            await asyncio.sleep(0.2)


async def test_a_crashing_part_sends_an_error_and_closes_with_1011(stack, monkeypatch):
    def broken_dsp(self, payload):
        raise RuntimeError("a bug in the audio path")

    monkeypatch.setattr(Intake, "_hear", broken_dsp)
    async with raw_connect(stack.ws_url) as client:
        session_id = (await client.next_of("session.created"))["session"]["id"]
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()})
        error = await client.next_of("error")
        assert (error["error"]["type"], error["error"]["code"]) == ("server_error", "internal_error")
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await client.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert (await _session_closed(stack, session_id)).reason == "failed"


async def test_a_client_that_stops_reading_is_let_go(stack, monkeypatch):
    monkeypatch.setattr(client_socket, "SEND_TIMEOUT_S", 1.0)
    async with _deaf_client(stack.settings.port) as (send, created):
        session_id = json.loads(created)["session"]["id"]
        await send({"type": "session.update", "session": {"type": "realtime", "instructions": "x" * 150_000}})
        for _ in range(100):  # each answered with the whole session: 15 MB the client never reads
            await send({"type": "session.update", "session": {"type": "realtime"}})
        closed = await _session_closed(stack, session_id, timeout=30)
    assert closed.reason == "unresponsive"


@contextlib.asynccontextmanager
async def _deaf_client(port: int) -> AsyncIterator[tuple[Callable[[dict[str, Any]], Awaitable[None]], str]]:
    """A WebSocket client that reads its handshake and first event, then never reads again: a tiny receive buffer,
    and no library that would keep reading for it."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=raw)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /v1/realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    length = (await reader.readexactly(2))[1] & 0x7F  # session.created: an unmasked text frame
    if length >= 126:
        length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8))
    created = (await reader.readexactly(length)).decode()

    async def send(event: dict[str, Any]) -> None:
        payload = json.dumps(event).encode()
        mask = os.urandom(4)
        header = bytes([0x81]) + (
            bytes([0x80 | len(payload)])
            if len(payload) < 126
            else bytes([0x80 | 126]) + len(payload).to_bytes(2)
            if len(payload) < 65536
            else bytes([0x80 | 127]) + len(payload).to_bytes(8)
        )
        writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        await writer.drain()

    try:
        yield send, created
    finally:
        writer.close()
