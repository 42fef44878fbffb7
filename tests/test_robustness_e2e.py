"""Bad input never ends a session: each gets an OpenAI-shaped error, and the session goes on."""

import base64
import json
from pathlib import Path

import pytest
import websockets
from openai import AsyncOpenAI

from tests.realtime_client import chunks, events_until, pcm24k, raw_connect, sdk, stream, words

COMPLETED = "conversation.item.input_audio_transcription.completed"
HELLO = pcm24k("hello_world.wav")


async def _transcribe_hello(client) -> str:
    """Proof that the session still works: a manual turn is transcribed."""
    await client.send(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}}}
    )
    await client.next_of("session.updated")
    for chunk in chunks(HELLO):
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})
    await client.send({"type": "input_audio_buffer.commit"})
    return (await client.next_of(COMPLETED))["transcript"]


BAD_FRAMES = [
    pytest.param("{not json", "invalid_json", None, None, id="malformed-json"),
    pytest.param("[1, 2]", "invalid_type", None, None, id="not-an-object"),
    pytest.param({"type": "no.such.event", "event_id": "e1"}, "invalid_value", "type", "e1", id="unknown-type"),
    pytest.param({"event_id": "e2"}, "missing_required_parameter", "type", "e2", id="missing-type"),
    pytest.param(
        {"type": "session.update", "event_id": "e3"}, "missing_required_parameter", "session", "e3", id="missing-field"
    ),
    pytest.param(
        {
            "type": "session.update",
            "event_id": "e4",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "high"}}},
            },
        },
        "invalid_type",
        "session.audio.input.turn_detection.threshold",
        "e4",
        id="wrong-type",
    ),
    pytest.param(
        {
            "type": "session.update",
            "event_id": "e5",
            "session": {"type": "transcription", "input_audio_format": "pcm16"},
        },
        "unknown_parameter",
        "session.input_audio_format",
        "e5",
        id="beta-field-in-ga",
    ),
    pytest.param(
        {
            "type": "session.update",
            "event_id": "e6",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}},
            },
        },
        "invalid_value",
        "session.audio.input.turn_detection.threshold",
        "e6",
        id="out-of-range",
    ),
    pytest.param(
        {"type": "input_audio_buffer.append", "audio": "@@not base64@@", "event_id": "e7"},
        "invalid_value",
        "audio",
        "e7",
        id="bad-base64",
    ),
    pytest.param(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode(), "event_id": "e8"},
        "invalid_value",
        "audio",
        "e8",
        id="odd-bytes",
    ),
    pytest.param(
        {"type": "input_audio_buffer.append", "audio": 12, "event_id": "e9"},
        "invalid_type",
        "audio",
        "e9",
        id="audio-not-a-string",
    ),
    pytest.param(
        {
            "type": "session.update",
            "event_id": "e10",
            "session": {"type": "transcription", "audio": {"input": {"transcription": {"model": "no-such-model"}}}},
        },
        "invalid_value",
        "session.audio.input.transcription.model",
        "e10",
        id="unknown-model",
    ),
    pytest.param(
        {"type": "response.create", "event_id": "e11"}, "invalid_value", "type", "e11", id="response-in-transcription"
    ),
    pytest.param(
        {"type": "session.update", "event_id": "e12", "session": {"type": "realtime"}},
        "invalid_value",
        "session.type",
        "e12",
        id="switch-session-type",
    ),
]


@pytest.mark.parametrize(("frame", "code", "param", "event_id"), BAD_FRAMES)
async def test_bad_input_gets_an_error_and_the_session_goes_on(stack, frame, code, param, event_id):
    async with raw_connect(stack.ws_url) as client:
        assert (await client.next())["type"] == "session.created"
        await client.send(frame)
        error = await client.next_of("error")
        assert error["error"]["type"] == "invalid_request_error"
        assert (error["error"]["code"], error["error"]["param"], error["error"]["event_id"]) == (code, param, event_id)
        assert error["error"]["message"]
        assert words(await _transcribe_hello(client)) == "hello world"


async def test_unknown_model_names_the_installed_ones_and_leaves_the_session_unchanged(stack):
    async with raw_connect(stack.ws_url) as client:
        created = await client.next()
        bad = {"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-huge"}}}}
        await client.send({"type": "session.update", "session": bad})
        error = await client.next_of("error")
        assert "whisper-base" in error["error"]["message"] and "whisper-tiny.en" in error["error"]["message"]
        await client.send({"type": "session.update", "session": {"type": "transcription"}})
        updated = await client.next_of("session.updated")
        assert updated["session"]["audio"] == created["session"]["audio"]


async def test_beta_errors_use_beta_parameter_paths(stack):
    async with raw_connect(stack.ws_url, "intent=transcription", **{"OpenAI-Beta": "realtime=v1"}) as client:
        await client.next()
        await client.send(
            {
                "type": "transcription_session.update",
                "event_id": "b1",
                "session": {"input_audio_transcription": {"model": "nope"}},
            }
        )
        error = await client.next_of("error")
        assert error["error"]["param"] == "session.input_audio_transcription.model"
        await client.send(
            {
                "type": "transcription_session.update",
                "event_id": "b2",
                "session": {"turn_detection": {"type": "server_vad", "threshold": 7}},
            }
        )
        error = await client.next_of("error")
        assert (error["error"]["param"], error["error"]["event_id"]) == ("session.turn_detection.threshold", "b2")


@pytest.mark.vocalis_settings(max_frame_bytes=64 * 1024)
async def test_oversized_frame(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        huge = json.dumps(
            {"type": "input_audio_buffer.append", "event_id": "big", "audio": base64.b64encode(bytes(100_000)).decode()}
        )
        await client.send(huge)
        error = await client.next_of("error")
        assert (error["error"]["code"], error["error"]["event_id"]) == ("invalid_value", "big")
        assert words(await _transcribe_hello(client)) == "hello world"


async def test_unknown_model_in_the_url(stack):
    async with raw_connect(stack.ws_url, "intent=transcription&model=nope") as client:
        created = await client.next()
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["transcription"]["model"] == "whisper-tiny.en"
        error = await client.next_of("error")
        assert error["error"]["param"] == "model"


@pytest.mark.parametrize(
    "model", ["gpt-realtime", "gpt-4o-realtime-preview-2024-12-17", "gpt-4o-mini-realtime-preview"]
)
async def test_older_sdks_realtime_model_with_transcription_intent_means_the_default(stack, model):
    async with sdk(stack.ws_url).beta.realtime.connect(model=model, extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.session.input_audio_transcription.model == "whisper-tiny.en"
        await conn.session.update(session={"turn_detection": None})
        await stream(conn, HELLO)
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, lambda e: e.type in (COMPLETED, "error"))
    assert events[-1].type == COMPLETED and words(events[-1].transcript) == "hello world"


async def test_openai_model_names_are_aliases(stack):
    async with raw_connect(stack.ws_url, "intent=transcription&model=gpt-4o-mini-transcribe") as client:
        created = await client.next()
        assert created["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
        assert words(await _transcribe_hello(client)) == "hello world"


async def test_transcription_failure_is_reported_for_the_item(stack, tmp_path: Path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        session = {
            "type": "transcription",
            "audio": {"input": {"turn_detection": None, "transcription": {"model": str(broken)}}},
        }
        await client.send({"type": "session.update", "session": session})
        await client.next_of("session.updated")
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(HELLO).decode()})
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.next_of("input_audio_buffer.committed")
        failed = await client.next_of("conversation.item.input_audio_transcription.failed")
        assert failed["item_id"] == committed["item_id"]
        assert failed["error"]["message"]
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "whisper-tiny.en"}}},
                },
            }
        )
        assert words(await _transcribe_hello(client)) == "hello world"


@pytest.mark.vocalis_settings(max_session_s=2)
async def test_session_expires(stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next()
        error = await client.next_of("error", timeout=10)
        assert error["error"]["code"] == "session_expired"
        with pytest.raises(websockets.ConnectionClosedOK):
            await client.next(timeout=5)


async def test_realtime_intent_opens_a_conversation_session(stack):
    async with sdk(stack.ws_url).realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.session.type == "realtime"
        assert created.session.model == "gpt-realtime"
        await conn.session.update(session={"type": "transcription"})
        error = await conn.recv()
        assert error.type == "error" and error.error.param == "session.type"


@pytest.mark.vocalis_settings(api_key="sekrit")
async def test_api_key_is_required_when_set(stack):
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with sdk(stack.ws_url, api_key="wrong").realtime.connect(extra_query={"intent": "transcription"}):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus):
        async with raw_connect(stack.ws_url):
            pass
    # Every accepted way of presenting the key.
    async with AsyncOpenAI(api_key="sekrit", websocket_base_url=stack.ws_url).realtime.connect(
        extra_query={"intent": "transcription"}
    ) as conn:
        assert (await conn.recv()).type == "session.created"
    async with raw_connect(stack.ws_url, **{"X-API-Key": "sekrit"}) as client:
        assert (await client.next())["type"] == "session.created"
    async with raw_connect(stack.ws_url, "intent=transcription&api_key=sekrit") as client:
        assert (await client.next())["type"] == "session.created"


async def test_sdk_session_survives_errors(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.input_audio_buffer.commit(event_id="too-early")
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await stream(conn, HELLO)
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, lambda e: e.type == COMPLETED)
    error = next(e for e in events if e.type == "error")
    assert (error.error.code, error.error.event_id) == ("input_audio_buffer_commit_empty", "too-early")
    assert words(events[-1].transcript) == "hello world"
