"""WebRTC calls end to end, with aiortc as the client over loopback (as a browser would: an `oai-events` data channel
and a microphone track): real NATS, whisper, the scripted fake LLM and Kokoro."""

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from app import log_tools, runner
from app.bus import Bus
from app.log_reader import read_session
from domain import records as rec
from tests.conftest import MODEL_CACHE, TEST_STT_MODEL
from tests.realtime_client import JFK, pcm24k, silence, word_error_rate, words
from tests.rtc_client import RtcClient
from tests.server_process import stop_servers, until_answering

COMPLETED = "conversation.item.input_audio_transcription.completed"
DONE = "response.done"


def all_transcribed(client: RtcClient) -> bool:
    """The user is silent, and every turn the VAD heard is transcribed."""
    stopped = len(client.of_type("input_audio_buffer.speech_stopped"))
    started = len(client.of_type("input_audio_buffer.speech_started"))
    return stopped > 0 and started == stopped == len(client.of_type(COMPLETED))


async def test_speech_on_the_track_is_transcribed(stack):
    client = RtcClient()
    try:
        session = {"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-tiny.en"}}}}
        answer = await client.connect(stack.http_url + "/realtime", session=session)
        assert answer.status_code == 201 and answer.headers["content-type"].startswith("application/sdp")
        assert answer.headers["location"].startswith("/v1/realtime/calls/rtc_")
        created = await client.until(lambda e: e["type"] == "session.created")
        assert created["session"]["type"] == "transcription"
        client.microphone.say(pcm24k("jfk.wav") + silence(1500))
        await asyncio.wait_for(client.microphone.spoken.wait(), 60)
        await client.until(lambda _: all_transcribed(client))
        transcript = " ".join(e["transcript"] for e in client.of_type(COMPLETED))
        assert word_error_rate(JFK, transcript) < 0.3, transcript
        assert not client.of_type("error"), client.of_type("error")
    finally:
        await client.close()


def loudness(frames: list[np.ndarray]) -> float:
    samples = np.concatenate(frames).astype(np.float64) if frames else np.zeros(1)
    return float(np.sqrt(np.mean(samples**2)))


async def test_spoken_turn_answered_on_the_track(conversation):
    answer_text = "Sure. The weather in Paris is sunny today."
    conversation.llm.reply(answer_text)
    client = RtcClient()
    try:
        assert (await client.connect(conversation.stack.http_url + "/realtime")).status_code == 201
        await client.until(lambda e: e["type"] == "session.created")
        client.microphone.say(pcm24k("hello_world.wav") + silence(800))
        done = await client.until(lambda e: e["type"] == DONE, timeout=90)
        stopped = await client.until(lambda e: e["type"] == "output_audio_buffer.stopped", timeout=60)
        response_id = done["response"]["id"]
        types = [e["type"] for e in client.events]
        assert not any(t == "response.output_audio.delta" for t in types), "the audio goes on the track"
        started = next(e for e in client.events if e["type"] == "output_audio_buffer.started")
        assert started["response_id"] == stopped["response_id"] == response_id
        assert types.index("output_audio_buffer.started") < types.index("output_audio_buffer.stopped")
        transcript = next(e for e in client.events if e["type"] == "response.output_audio_transcript.done")
        assert words(transcript["transcript"]) == words(answer_text)
        assert done["response"]["status"] == "completed"
        assert words(conversation.llm.requests[0]["messages"][-1]["content"]) == "hello world", "heard on the track"
        assert loudness(client.heard) > 100, "the answer's voice came on the track"
    finally:
        await client.close()


async def test_cancel_and_clear_over_the_data_channel(conversation):
    conversation.llm.reply("One. " + "This is a long answer that goes on and on. " * 20, delay_s=0.05)
    client = RtcClient()
    try:
        offered = await client.connect(conversation.stack.http_url + "/realtime", max_message_size=65536)
        assert offered.status_code == 201
        await client.until(lambda e: e["type"] == "session.created")
        manual = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        client.send({"type": "session.update", "session": manual})
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Talk"}]}
        client.send({"type": "conversation.item.create", "item": item})
        client.send({"type": "response.create"})
        await client.until(lambda e: e["type"] == "output_audio_buffer.started", timeout=60)
        client.send({"type": "response.cancel"})
        done = await client.until(lambda e: e["type"] == DONE)
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        client.send({"type": "output_audio_buffer.clear"})
        cleared = await client.until(lambda e: e["type"] == "output_audio_buffer.cleared")
        if cleared["response_id"] is not None:  # it was still playing: the item keeps what was played
            truncated = await client.until(lambda e: e["type"] == "conversation.item.truncated")
            assert truncated["item_id"] == done["response"]["output"][0]["id"]
        client.send({"type": "response.cancel", "event_id": "again"})
        error = await client.until(lambda e: e["type"] == "error")
        assert error["error"]["code"] == "response_cancel_not_active" and error["error"]["event_id"] == "again"
        # Instructions longer than the client takes in a data channel message: the update is taken, and the client
        # hears that its echo could not be sent.
        client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief. " * 8000}})
        too_large = await client.until(lambda e: e["type"] == "error" and e["error"]["code"] == "event_too_large")
        assert "bytes was not sent" in too_large["error"]["message"]
    finally:
        await client.close()


async def test_barge_in_stops_the_track_and_keeps_what_was_played(conversation):
    bus = conversation.stack.bus
    conversation.llm.reply("Let me tell you a long story. " * 30, delay_s=0.05)
    client = RtcClient()
    try:
        assert (await client.connect(conversation.stack.http_url + "/realtime")).status_code == 201
        await client.until(lambda e: e["type"] == "session.created")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Story?"}]}
        client.send({"type": "conversation.item.create", "item": item})
        client.send({"type": "response.create"})
        started = await client.until(lambda e: e["type"] == "output_audio_buffer.started", timeout=60)
        answer = await client.until(lambda e: e["type"] == "response.output_item.added")
        await asyncio.sleep(1)  # some of the story is played
        conversation.llm.reply("Okay.")
        client.microphone.say(pcm24k("hello_world.wav") + silence(800))
        cleared = await client.until(lambda e: e["type"] == "output_audio_buffer.cleared", timeout=60)
        truncated = await client.until(lambda e: e["type"] == "conversation.item.truncated")
        done = await client.until(lambda e: e["type"] == DONE)
        session_id = client.of_type("session.created")[0]["session"]["id"]
    finally:
        await client.close()
    types = [e["type"] for e in client.events]
    async with asyncio.timeout(60):  # the client left: its session closes in the log, which replays as it went
        while True:
            recorded = await read_session(bus, session_id)
            if any(isinstance(record, rec.SessionClosed) for _, record in recorded.inputs):
                break
            await asyncio.sleep(0.2)
    assert log_tools.replay_recorded(recorded.inputs, recorded.outputs) is None
    assert types.index("input_audio_buffer.speech_started") < types.index("output_audio_buffer.cleared")
    assert cleared["response_id"] == started["response_id"] == done["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    assert truncated["item_id"] == answer["item"]["id"] and truncated["audio_end_ms"] > 0
    assert not client.of_type("error"), client.of_type("error")


async def test_beta_offer_speaks_the_beta_dialect(conversation):
    conversation.llm.reply("Hello there.")
    client = RtcClient()
    try:
        offered = await client.connect(conversation.stack.http_url, path="/realtime?model=gpt-4o-realtime-preview")
        assert offered.status_code == 201
        await client.until(lambda e: e["type"] == "session.created")
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}
        client.send({"type": "conversation.item.create", "item": item})
        client.send({"type": "response.create"})
        await client.until(lambda e: e["type"] == DONE, timeout=60)
        await client.until(lambda e: e["type"] == "output_audio_buffer.stopped", timeout=60)
    finally:
        await client.close()
    types = {e["type"] for e in client.events}
    assert {"conversation.item.created", "response.audio_transcript.done", "response.audio.done"} <= types
    assert "response.audio.delta" not in types and "response.output_audio.delta" not in types
    assert loudness(client.heard) > 100


async def test_an_offer_that_is_not_one_gets_400(stack):
    async with httpx.AsyncClient() as http:
        for body in ("", "hello", "v=0\r\n"):
            answer = await http.post(
                stack.http_url + "/realtime/calls", content=body, headers={"Content-Type": "application/sdp"}
            )
            assert answer.status_code == 400, body
            assert (
                answer.json()["error"]["param"] == "sdp" and answer.json()["error"]["type"] == "invalid_request_error"
            )


def serve(port: int, nats_url: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """`vocalis serve` transcribing only, on the test's NATS."""
    environment = os.environ | {
        "VOCALIS_MODEL_DIR": str(MODEL_CACHE),
        "VOCALIS_STT_MODEL": TEST_STT_MODEL,
        "VOCALIS_NATS_URL": nats_url,
        "VOCALIS_WORKERS": "stt",
        "VOCALIS_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "app", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("wb") as stderr:
        return subprocess.Popen(command, env=environment, stderr=stderr)


async def test_stopping_the_edge_hangs_up_its_calls(nats_url, tmp_path):
    port = runner.free_port()
    server = serve(port, nats_url, tmp_path / "data", tmp_path / "serve.log")
    client = RtcClient()
    try:
        await until_answering(port, server)
        offered = await client.connect(f"http://127.0.0.1:{port}/v1/realtime", session={"type": "transcription"})
        assert offered.status_code == 201
        session_id = (await client.until(lambda e: e["type"] == "session.created"))["session"]["id"]
        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.to_thread(server.wait, 60) == 0
        bus = await Bus.connect(nats_url, "vocalis", "test-observer")
        try:
            recorded = await read_session(bus, session_id)
        finally:
            await bus.close()
        assert any(isinstance(record, rec.SessionClosed) for _, record in recorded.inputs), "its end is in the log"
    finally:
        stop_servers(server)
        await client.close()


async def test_any_edge_hangs_up_a_call(stack):
    settings = dataclasses.replace(stack.settings, port=runner.free_port())
    other = runner.http_server(settings, runner.edge_services(settings, stack.bus))
    serving = asyncio.create_task(other.serve())
    client = RtcClient()
    try:
        while not other.started:
            await asyncio.sleep(0.01)
        assert (
            await client.connect(stack.http_url + "/realtime", session={"type": "transcription"})
        ).status_code == 201
        await client.until(lambda e: e["type"] == "session.created")
        hangup = f"http://127.0.0.1:{settings.port}{client.location}/hangup"  # the edge that does not hold it
        async with httpx.AsyncClient() as http:
            assert (await http.post(hangup)).status_code == 200
            async with asyncio.timeout(30):
                while client.pc.connectionState != "closed":
                    await asyncio.sleep(0.05)
            assert (await http.post(hangup)).status_code == 404
    finally:
        await client.close()
        other.should_exit = True
        await serving
