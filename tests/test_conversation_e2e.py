"""Conversation mode end to end with the official SDK: a scripted fake LLM (deterministic), the real Kokoro
voice, real whisper, real NATS. GA and beta."""

import asyncio
import base64
import json
import tempfile
import wave
from pathlib import Path

import numpy as np
import soxr

from app import log_tools
from app.analytics import summarize
from app.log_reader import read_session
from domain import events as ev
from tests.realtime_client import events_until, pcm24k, sdk, silence, stream, words

DONE = "response.done"
ANSWER = "Sure. The weather in Paris is sunny today, with a light breeze and about twenty degrees."


def audio_of(events, name="response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in events if e.type == name)


def transcribe_back(transcriber, pcm: bytes) -> str:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return "".join(transcriber.transcribe(soxr.resample(samples, 24000, 16000), "whisper-tiny.en"))


async def conversation_log_checks(conversation, session_id: str, answer_audio: bytes) -> None:
    """The log of a conversation replays, exports both sides' audio, and gives the answer's latency."""
    for _ in range(100):
        recorded = await read_session(conversation.stack.bus, session_id)
        if len(recorded.outputs) and isinstance(recorded.outputs[-1], ev.ResponseDone):
            break
        await asyncio.sleep(0.1)
    assert log_tools.replay_recorded(recorded.inputs, recorded.outputs) is None
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(p) for p in log_tools.export(recorded, "wav", Path(folder)).splitlines()]
        assert [p.name.split("-")[0] for p in paths] == ["user", "assistant"]
        with wave.open(str(paths[1])) as answer:
            assert answer.getframerate() == 24000 and answer.readframes(10**9) == answer_audio
    entries = [e for e in recorded.entries if ".out." in e.subject or e.subject.endswith((".in.edge", ".in.stt"))]
    summary = summarize(entries)
    assert summary is not None and summary.utterances[0].first_audio_latency_ms is not None


async def spoken_turn(conn, wav: str = "hello_world.wav") -> None:
    await stream(conn, pcm24k(wav) + silence(800))


async def test_spoken_turn_answered_in_audio(conversation, transcriber):
    conversation.llm.reply(ANSWER)
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.session.audio.output.voice == "jm_kumo"
        await spoken_turn(conn)
        events = await events_until(conn, lambda e: e.type == DONE, timeout=90)
    types = [e.type for e in events]
    head = [t for t in types if not t.startswith("response.output_audio")]
    assert head[:7] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
    ]
    assert head[7:11] == [
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.content_part.done",
    ] or head[7:10] == ["response.output_item.added", "conversation.item.added", "response.content_part.added"]
    assert head[-4:] == ["response.content_part.done", "response.output_item.done", "conversation.item.done", DONE]
    assert types.index("response.output_audio.done") < types.index("response.output_audio_transcript.done")
    response_id = events[types.index("response.created")].response.id
    assert all(getattr(e, "response_id", response_id) == response_id for e in events)
    done = events[-1].response
    assert done.status == "completed" and done.output[0].content[0].type == "output_audio"
    transcript = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert (
        transcript
        == events[types.index("response.output_audio_transcript.done")].transcript
        == done.output[0].content[0].transcript
    )
    assert words(transcript) == words(ANSWER)
    deltas = [base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"]
    assert deltas and all(len(d) <= 4800 and len(d) % 2 == 0 for d in deltas), "pcm16 chunks of at most 100 ms"
    heard = transcribe_back(transcriber, b"".join(deltas))
    assert len(set(words(heard).split()) & set(words(ANSWER).split())) >= 0.7 * len(set(words(ANSWER).split())), heard
    await conversation_log_checks(conversation, created.session.id, b"".join(deltas))
    request = conversation.llm.requests[0]
    assert request["model"] == "qwen2.5-coder-1.5b", "OpenAI's realtime model names mean the default LLM"
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][-1] == {"role": "user", "content": request["messages"][-1]["content"]}
    assert words(request["messages"][-1]["content"]) == "hello world"


async def test_beta_names_and_text_only_output(conversation):
    conversation.llm.reply("Hello from the text side.")
    client = sdk(conversation.ws_url)
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        await conn.recv()
        await conn.session.update(session={"modalities": ["text"], "turn_detection": None})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        await conn.response.create()
        events = await events_until(conn, lambda e: e.type == DONE)
    types = [e.type for e in events]
    assert "conversation.item.created" in types and "conversation.item.added" not in types
    assert "response.text.delta" in types and "response.output_text.delta" not in types
    assert not any("audio" in t for t in types)
    text = "".join(e.delta for e in events if e.type == "response.text.delta")
    assert text == next(e for e in events if e.type == "response.text.done").text == "Hello from the text side."
    assert events[-1].response.output[0].content[0].type == "text"
    assert events[-1].response.modalities == ["text"]


async def test_overrides_and_out_of_band_responses(conversation):
    conversation.llm.reply("Override answer.")
    conversation.llm.reply("Side answer.")
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
        )
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Question one"}]}
        )
        await conn.response.create(response={"instructions": "Answer like a pirate.", "max_output_tokens": 200})
        first = await events_until(conn, lambda e: e.type == DONE)
        await conn.response.create(
            response={
                "conversation": "none",
                "metadata": {"topic": "summary"},
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Summarise"}]}
                ],
            }
        )
        side = await events_until(conn, lambda e: e.type == DONE)
        await conn.session.update(session={"type": "realtime"})
        updated = await events_until(conn, lambda e: e.type == "session.updated")
    requests = conversation.llm.requests
    assert requests[0]["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    assert requests[0]["max_tokens"] == 200
    assert updated[-1].session.instructions != "Answer like a pirate.", "overrides do not change the session"
    assert first[-1].response.conversation_id is not None
    assert not any(e.type.startswith("conversation.item") for e in side)
    assert side[-1].response.conversation_id is None and side[-1].response.metadata == {"topic": "summary"}
    assert [m["content"] for m in requests[1]["messages"] if m["role"] == "user"] == ["Summarise"]


async def test_cancel_mid_answer(conversation):
    conversation.llm.reply("One. " + "This is a long answer that goes on and on. " * 20, delay_s=0.05)
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Talk"}]}
        )
        await conn.response.create()
        await events_until(conn, lambda e: e.type == "response.output_audio.delta", timeout=60)
        await conn.response.cancel()
        events = await events_until(conn, lambda e: e.type == DONE)
        done = events[-1].response
        assert done.status == "cancelled" and done.status_details.reason == "client_cancelled"
        assert done.output[0].status == "incomplete"
        await conn.response.cancel(event_id="again")
        after = await events_until(conn, lambda e: e.type == "error", timeout=10)
    assert not any(e.type.startswith("response.output") for e in after), "nothing of it after its response.done"
    assert after[-1].error.code == "response_cancel_not_active" and after[-1].error.event_id == "again"
    await asyncio.sleep(0.5)
    assert conversation.llm.disconnects >= 1, "the LLM stream was stopped"


async def test_barge_in(conversation):
    conversation.llm.reply("Let me tell you a long story. " * 30, delay_s=0.05)
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Story?"}]}
        )
        await conn.response.create()
        await events_until(conn, lambda e: e.type == "response.output_audio.delta", timeout=60)
        conversation.llm.reply("Okay.")
        await spoken_turn(conn)
        events = await events_until(conn, lambda e: e.type == DONE, timeout=60)
    types = [e.type for e in events]
    assert types.index("input_audio_buffer.speech_started") < types.index(DONE)
    assert events[-1].response.status == "cancelled" and events[-1].response.status_details.reason == "turn_detected"


async def test_truncate_keeps_only_what_was_heard(conversation):
    conversation.llm.reply("First part of the answer is here. And the second part comes after that, much later on.")
    conversation.llm.reply("Fine.")
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go"}]}
        )
        await conn.response.create()
        events = await events_until(conn, lambda e: e.type == DONE, timeout=90)
        item_id = events[-1].response.output[0].id
        total_ms = len(audio_of(events)) // 48
        first_clause = next(e for e in events if e.type == "response.output_audio_transcript.delta").delta
        await conn.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=total_ms + 1000, event_id="too-far"
        )
        error = (await events_until(conn, lambda e: e.type == "error"))[-1]
        assert (error.error.param, error.error.event_id) == ("audio_end_ms", "too-far")
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=total_ms // 3)
        truncated = (await events_until(conn, lambda e: e.type == "conversation.item.truncated"))[-1]
        assert (truncated.item_id, truncated.audio_end_ms) == (item_id, total_ms // 3)
        await conn.conversation.item.retrieve(item_id=item_id)
        retrieved = (await events_until(conn, lambda e: e.type == "conversation.item.retrieved"))[-1]
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And?"}]}
        )
        await conn.response.create()
        await events_until(conn, lambda e: e.type == DONE, timeout=90)
    heard = retrieved.item.content[0].transcript
    assert heard and len(heard) < len(ANSWER) and "second part" not in heard
    assert first_clause.strip().split()[0] in heard
    assistant = [m for m in conversation.llm.requests[1]["messages"] if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": heard}], "the next request holds only heard text"


async def test_function_call_round_trip(conversation):
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    conversation.llm.reply(
        "Let me check.", tool_calls=[("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    )
    conversation.llm.reply("It is sunny in both.")
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(
            session={
                "type": "realtime",
                "output_modalities": ["text"],
                "tools": [tool],
                "audio": {"input": {"turn_detection": None}},
            }
        )
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}
        )
        await conn.response.create()
        events = await events_until(conn, lambda e: e.type == DONE)
        calls = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
        assert all(c.name == "get_weather" for c in calls)
        for call in calls:
            pieces = "".join(
                e.delta
                for e in events
                if e.type == "response.function_call_arguments.delta" and e.call_id == call.call_id
            )
            assert pieces == call.arguments
        output = events[-1].response.output
        assert [o.type for o in output] == ["message", "function_call", "function_call"]
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": "call_unknown", "output": "{}"}, event_id="bad"
        )
        error = (await events_until(conn, lambda e: e.type == "error"))[-1]
        assert (error.error.param, error.error.event_id) == ("item.call_id", "bad")
        for call in calls:
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}
            )
        await asyncio.sleep(0.5)
        assert len(conversation.llm.requests) == 1, "no response until the client asks"
        await conn.response.create()
        final = await events_until(conn, lambda e: e.type == DONE)
    assert final[-1].response.status == "completed"
    messages = conversation.llm.requests[1]["messages"]
    assert [m["role"] for m in messages[-4:]] == ["assistant", "assistant", "tool", "tool"]
    assert [c["function"]["name"] for c in messages[-3]["tool_calls"]] == ["get_weather", "get_weather"]
    assert conversation.llm.requests[0]["tools"][0]["function"]["name"] == "get_weather"


async def test_llm_failure_and_limits(conversation):
    conversation.llm.fail(500)
    conversation.llm.reply("A fairly long reply that will be cut short by the token limit.", chunk_chars=2)
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
        )
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        )
        await conn.response.create()
        await conn.response.create(event_id="second")
        events = await events_until(conn, lambda e: e.type == DONE)
        busy = next(e for e in events if e.type == "error")
        assert (busy.error.code, busy.error.event_id) == ("conversation_already_has_active_response", "second")
        failed = events[-1].response
        assert failed.status == "failed" and failed.status_details.error.message
        await conn.response.create(response={"max_output_tokens": 3})
        limited = (await events_until(conn, lambda e: e.type == DONE))[-1].response
    assert limited.status == "incomplete" and limited.status_details.reason == "max_output_tokens"


async def test_items_create_retrieve_delete_and_order(conversation):
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.conversation.item.create(
            item={"id": "item_b", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "B"}]}
        )
        await conn.conversation.item.create(
            previous_item_id="root",
            item={
                "id": "item_a",
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "A"}],
            },
        )
        added = [
            e
            for e in await events_until(conn, lambda e: e.type == "conversation.item.done" and e.item.id == "item_a")
            if e.type == "conversation.item.added"
        ]
        assert [(e.item.id, e.previous_item_id) for e in added] == [("item_b", None), ("item_a", None)]
        await conn.conversation.item.create(
            item={"type": "message", "role": "assistant", "content": [{"type": "input_audio", "audio": ""}]},
            event_id="bad-part",
        )
        error = (await events_until(conn, lambda e: e.type == "error"))[-1]
        assert error.error.event_id == "bad-part" and error.error.param == "item.content.0.type"
        await conn.conversation.item.retrieve(item_id="item_b")
        retrieved = (await events_until(conn, lambda e: e.type == "conversation.item.retrieved"))[-1]
        assert retrieved.item.content[0].text == "B"
        await conn.conversation.item.delete(item_id="item_b")
        assert (await events_until(conn, lambda e: e.type == "conversation.item.deleted"))[-1].item_id == "item_b"
        await conn.conversation.item.delete(item_id="item_b", event_id="gone")
        error = (await events_until(conn, lambda e: e.type == "error"))[-1]
        assert (error.error.param, error.error.event_id) == ("item_id", "gone")


async def test_user_audio_item_is_transcribed_for_the_llm(conversation):
    conversation.llm.reply("Hello to you.")
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {"turn_detection": None}}}
        )
        audio = base64.b64encode(pcm24k("hello_world.wav")).decode()
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
        )
        await conn.response.create()
        await events_until(conn, lambda e: e.type == DONE, timeout=60)
    assert words(conversation.llm.requests[0]["messages"][-1]["content"]) == "hello world"


async def test_beta_audio_names_g711_output_voices_and_input_transcription(conversation):
    conversation.llm.reply("Hello there, nice to hear you.")
    client = sdk(conversation.ws_url)
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        await conn.recv()
        await conn.session.update(session={"voice": "robot-9000"}, event_id="v1")
        error = (await events_until(conn, lambda e: e.type == "error"))[-1]
        assert (error.error.param, error.error.event_id) == ("session.voice", "v1")
        assert "jm_kumo" in error.error.message
        await conn.session.update(
            session={
                "voice": "shimmer",
                "output_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "create_response": False},
            }
        )
        updated = (await events_until(conn, lambda e: e.type == "session.updated"))[-1]
        assert (updated.session.voice, updated.session.output_audio_format) == ("shimmer", "g711_ulaw")
        await spoken_turn(conn)
        heard = await events_until(
            conn, lambda e: e.type == "conversation.item.input_audio_transcription.completed", timeout=60
        )
        assert words(heard[-1].transcript) == "hello world"
        assert not any(e.type == "response.created" for e in heard), "create_response false: no answer by itself"
        await conn.response.create()
        events = await events_until(conn, lambda e: e.type == DONE, timeout=90)
    types = {e.type for e in events}
    assert {"response.audio.delta", "response.audio_transcript.delta", "conversation.item.created"} <= types
    assert not any(t.startswith("response.output_audio") for t in types)
    ulaw = audio_of(events, "response.audio.delta")
    assert ulaw and all(len(base64.b64decode(e.delta)) <= 800 for e in events if e.type == "response.audio.delta")
    assert events[-1].response.output[0].content[0].type == "audio"
    assert events[-1].response.voice == "shimmer" and events[-1].response.output_audio_format == "g711_ulaw"


async def test_the_answer_is_asked_for_in_the_turn_s_silence_and_goes_out_when_the_turn_ends(conversation):
    for _ in range(5):  # a request started in a pause the user then speaks after takes a reply too
        conversation.llm.reply(ANSWER)
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        detection = {"type": "server_vad", "silence_duration_ms": 1500}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})
        await stream(conn, pcm24k("hello_world.wav"))
        silent = asyncio.create_task(stream(conn, silence(2500), pace=1.0))  # the turn's silence, in real time
        asked_when_stopped = None

        def done(event) -> bool:
            nonlocal asked_when_stopped
            if event.type == "input_audio_buffer.speech_stopped":
                asked_when_stopped = len(conversation.llm.requests)
            return event.type == DONE

        events = await events_until(conn, done, timeout=90)
        await silent
    requests = conversation.llm.requests
    assert asked_when_stopped and len(requests) == asked_when_stopped, "asked before the turn ended, none after"
    assert words(requests[-1]["messages"][-1]["content"]) == "hello world"
    types = [e.type for e in events if e.type != "session.updated"]
    head = [t for t in types if not t.startswith("response.output_audio")]
    assert head[:7] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
    ], "the same events as an answer asked for at the end of the turn"
    assert head[-4:] == ["response.content_part.done", "response.output_item.done", "conversation.item.done", DONE]
    done_event = events[-1].response
    assert done_event.status == "completed" and words(done_event.output[0].content[0].transcript) == words(ANSWER)
    response_id = next(e for e in events if e.type == "response.created").response.id
    assert all(getattr(e, "response_id", response_id) == response_id for e in events)
    await conversation_log_checks(conversation, created.session.id, audio_of(events))
