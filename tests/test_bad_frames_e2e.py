"""Frames that once closed the session (4500) or poisoned it: each gets an `error`, and the session goes on."""

import base64

import pytest
import websockets

from tests.realtime_client import raw_connect

TRANSCRIPTION = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}


async def _still_answers(client) -> None:
    await client.send({"type": "session.update", "event_id": "after", "session": TRANSCRIPTION})
    event = await client.next_of("session.updated")
    assert event["event_id"]


async def _error(client) -> dict:
    event = await client.next()
    assert event["type"] == "error", event
    assert event["error"]["type"] == "invalid_request_error"
    return event["error"]


async def test_deeply_nested_json(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        session = "[" * 1000 + "]" * 1000
        await client.send('{"type": "session.update", "event_id": "deep", "session": ' + session + "}")
        error = await _error(client)
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_json", None, "deep")
        await _still_answers(client)


async def test_invalid_utf8_in_a_binary_frame(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        await client.send(b'{"type": "input_audio_buffer.clear", "event_id": "bin", "x": "\xff\xfe"}')
        error = await _error(client)
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_json", None, "bin")
        await _still_answers(client)


async def test_session_update_over_the_bus_limit(stack):
    async with raw_connect(stack.ws_url, "") as client:
        await client.next()
        tools = [{"type": "function", "name": f"f{i}", "description": "x" * 1000} for i in range(10_000)]
        session = {"type": "realtime", "tools": tools}
        await client.send({"type": "session.update", "event_id": "big", "session": session})
        error = await _error(client)
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", None, "big")
        await client.send({"type": "session.update", "event_id": "after", "session": {"type": "realtime"}})
        assert (await client.next_of("session.updated"))["event_id"]


async def test_huge_transcription_prompt(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        session = {"type": "transcription", "audio": {"input": {"transcription": {"prompt": "word " * 1_400_000}}}}
        await client.send({"type": "session.update", "event_id": "prompt", "session": session})
        error = await _error(client)
        param = "session.audio.input.transcription.prompt"
        assert (error["code"], error["param"], error["event_id"]) == ("string_above_max_length", param, "prompt")
        await _still_answers(client)


async def test_unknown_language(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        session = {"type": "transcription", "audio": {"input": {"transcription": {"language": "xx-invalid"}}}}
        await client.send({"type": "session.update", "event_id": "lang", "session": session})
        error = await _error(client)
        param = "session.audio.input.transcription.language"
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", param, "lang")
        await _still_answers(client)


async def test_unknown_language_in_the_url(stack):
    async with raw_connect(stack.ws_url, "intent=transcription&language=xx-invalid") as client:
        created = await client.next()
        assert created["session"]["audio"]["input"]["transcription"]["language"] is None
        error = await _error(client)
        assert (error["code"], error["param"], error["event_id"]) == ("invalid_value", "language", None)
        await _still_answers(client)


async def test_a_text_frame_that_is_not_utf8_ends_the_connection_as_rfc_6455_requires(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        await client.socket.send(b'{"type": "input_audio_buffer.clear", "event_id": "\xff"}', text=True)
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await client.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007


async def test_a_session_update_just_under_the_bus_limit_is_taken(stack):
    """8.0 MB of tools: under max_payload less 64 KiB, and its `session.updated` fits in the headroom."""
    async with raw_connect(stack.ws_url, "") as client:
        await client.next()
        tools = [{"type": "function", "name": f"f{i}", "description": "x" * 1000} for i in range(7_600)]
        await client.send(
            {"type": "session.update", "event_id": "near", "session": {"type": "realtime", "tools": tools}}
        )
        updated = await client.next()
        assert updated["type"] == "session.updated" and len(updated["session"]["tools"]) == 7_600
        await client.send({"type": "session.update", "event_id": "after", "session": {"type": "realtime", "tools": []}})
        assert (await client.next_of("session.updated"))["session"]["tools"] == []


async def test_an_append_at_the_frame_limit_is_recorded_in_pieces(stack):
    """More audio in one append than NATS's max_payload (8 MB) holds: it is recorded in 5 s pieces, not refused."""
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        await client.send({"type": "session.update", "session": TRANSCRIPTION})
        await client.next_of("session.updated")
        audio = base64.b64encode(bytes(9 << 20)).decode()  # 197 s at 24 kHz
        await client.send({"type": "input_audio_buffer.append", "event_id": "long", "audio": audio})
        await client.send({"type": "input_audio_buffer.clear", "event_id": "clear"})
        assert (await client.next(timeout=60))["type"] == "input_audio_buffer.cleared"
