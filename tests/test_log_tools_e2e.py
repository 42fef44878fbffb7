"""The log as a product, against sessions recorded by driving the server with the SDK and the shared speech:
`vocalis sessions`, `tail`, `replay`, `export`, and the meeting-analytics subscriber over HTTP."""

import asyncio
import json
import os
import sys
import wave
from asyncio.subprocess import PIPE
from pathlib import Path

import httpx
import msgspec
import pytest

from app import log_tools
from app.analytics import SummaryStore, summarize
from app.bus import Bus
from app.log_reader import read_session
from domain import events as ev
from domain import records as rec
from domain import replay as replay_module
from domain.replay import UnsupportedSchema
from tests.realtime_client import Turns, events_until, events_until_transcribed, pcm24k, sdk, silence, stream, words

COMPLETED = "conversation.item.input_audio_transcription.completed"


async def record_session(
    stack, wav: str = "jfk.wav", manual: bool = False, api_key: str = "test-key"
) -> tuple[str, list]:
    """Drive one transcription session to its last transcript and close it; its id and events."""
    async with sdk(stack.ws_url, api_key).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session_id = (await conn.recv()).session.id
        if manual:
            await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await stream(conn, pcm24k(wav) + silence(1000))
        if manual:
            await conn.input_audio_buffer.commit()
        events = await events_until_transcribed(conn, timeout=90)
    await wait_closed(stack, session_id)
    return session_id, events


async def wait_closed(stack, session_id: str) -> None:
    for _ in range(100):
        recorded = await read_session(stack.bus, session_id)
        if any(isinstance(r, rec.SessionClosed) for _, r in recorded.inputs):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the session was not closed on the log")


async def vocalis_cli(stack, *args: str) -> tuple[int, str]:
    env = os.environ | {"VOCALIS_NATS_URL": stack.nats_url, "VOCALIS_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args, env=env, stdout=asyncio.subprocess.PIPE
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_sessions_lists_newest_first_with_filters(stack):
    first, _ = await record_session(stack, "hello_world.wav", manual=True)
    async with sdk(stack.ws_url).realtime.connect(model="gpt-realtime") as conn:
        second = (await conn.recv()).session.id
        rows = await log_tools.list_sessions(stack.bus)
        assert [r.session_id for r in rows] == [second, first]
        assert (rows[0].mode, rows[0].state) == ("realtime", "live")
    await wait_closed(stack, second)
    rows = await log_tools.list_sessions(stack.bus)
    assert [(r.mode, r.state, r.turns) for r in rows] == [("realtime", "ended", 0), ("transcription", "ended", 1)]
    assert all(r.duration_ms >= 0 for r in rows)
    assert [r.session_id for r in await log_tools.list_sessions(stack.bus, mode="transcription")] == [first]
    now = rows[0].started_at_ms
    assert await log_tools.list_sessions(stack.bus, since_ms=now + 1) == []
    assert [r.session_id for r in await log_tools.list_sessions(stack.bus, until_ms=now - 1)] == [first]
    assert log_tools.parse_when("2h", now) == now - 7_200_000
    code, output = await vocalis_cli(stack, "sessions", "--mode", "transcription")
    assert code == 0 and first in output and second not in output


async def test_tail_follows_live_sessions_readably(stack):
    env = os.environ | {"VOCALIS_NATS_URL": stack.nats_url}
    readable = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "tail", "--all", env=env, stdout=asyncio.subprocess.PIPE, stderr=PIPE
    )
    filtered = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "tail",
        "--all",
        "--json",
        "--type",
        "input_audio_buffer.*",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=PIPE,
    )
    for process in (readable, filtered):  # both are subscribed
        assert await asyncio.wait_for(process.stderr.readline(), 60) == b"following every session from now\n"
    session_id, _ = await record_session(stack, "hello_world.wav")
    await asyncio.sleep(0.5)
    lines = {}
    for name, process in (("readable", readable), ("filtered", filtered)):
        process.terminate()
        output, _ = await process.communicate()
        lines[name] = output.decode().splitlines()
    assert any(session_id in line and "audio.received" in line and "ms of audio" in line for line in lines["readable"])
    assert any(line.split()[3] == COMPLETED and "hello" in line.lower() for line in lines["readable"])
    assert max(len(line) for line in lines["readable"]) < 400, "audio is summarised, never dumped"
    types = [json.loads(line).get("type") for line in lines["filtered"]]
    assert types and all(t.startswith("input_audio_buffer.") for t in types)
    assert "input_audio_buffer.speech_started" in types


async def test_replay_saves_fixtures_and_reports_divergence(stack, tmp_path: Path, monkeypatch):
    session_id, _ = await record_session(stack, "hello_world.wav")
    fixture = tmp_path / "hello.jsonl"
    code, output = await vocalis_cli(stack, "replay", session_id, "--save", str(fixture))
    assert code == 0 and output.startswith("identical")
    inputs, expected = log_tools.load_fixture(fixture)
    assert log_tools.replay_recorded(inputs, expected) is None

    # A deliberately changed state machine: transcripts come out in capitals.
    real_step = replay_module.step

    def shouting_step(state, record, seq):
        transition = real_step(state, record, seq)
        louder = tuple(
            msgspec.structs.replace(e, transcript=e.transcript.upper()) if isinstance(e, ev.TranscriptCompleted) else e
            for e in transition.events
        )
        return msgspec.structs.replace(transition, events=louder)

    monkeypatch.setattr(replay_module, "step", shouting_step)
    divergence = log_tools.replay_recorded(inputs, expected)
    assert divergence is not None
    completed_at = next(i for i, e in enumerate(expected) if isinstance(e, ev.TranscriptCompleted))
    assert divergence.index == completed_at
    report = divergence.report()
    assert report.startswith(f"first divergence at event {completed_at}")
    assert '-  "transcript": "Hello' in report and '+  "transcript": "HELLO' in report


def test_replay_refuses_other_schema_versions():
    fixture = sorted((Path(__file__).parent / "sessions").glob("*.jsonl"))[0]
    inputs, expected = log_tools.load_fixture(fixture)
    future = [(seq, msgspec.structs.replace(r, v=2)) for seq, r in inputs]
    with pytest.raises(UnsupportedSchema, match="schema version 2"):
        log_tools.replay_recorded(future, expected)


async def test_export_formats(stack, tmp_path: Path):
    session_id, events = await record_session(stack)  # jfk, default VAD: several turns
    recorded = await read_session(stack.bus, session_id)
    turns = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    starts = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    transcripts = [e.transcript for e in events if e.type == COMPLETED]
    assert len(turns) >= 2

    jsonl = log_tools.export(recorded, "jsonl", None).splitlines()
    assert len(jsonl) == len(recorded.entries)
    assert {"seq", "subject", "at_ms", "data"} == set(json.loads(jsonl[0]))

    srt = log_tools.export(recorded, "srt", None)
    cues = srt.strip().split("\n\n")
    assert len(cues) == len(turns)
    first_cue = cues[0].splitlines()
    assert first_cue[0] == "1"
    expected_start = f"00:00:{starts[0].audio_start_ms // 1000:02d},{starts[0].audio_start_ms % 1000:03d}"
    assert first_cue[1].startswith(expected_start + " --> ")
    assert log_tools.export(recorded, "vtt", None).startswith("WEBVTT\n\n")
    markdown = log_tools.export(recorded, "md", None)
    assert all(t.strip() in markdown for t in transcripts)

    paths = [Path(p) for p in log_tools.export(recorded, "wav", tmp_path / "wav").splitlines()]
    assert len(paths) == len(turns)
    for path, start, stop in zip(paths, starts, turns, strict=True):
        with wave.open(str(path)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
            seconds = wav.getnframes() / 16000
        assert abs(seconds - (stop.audio_end_ms - start.audio_start_ms) / 1000) < 0.05

    code, output = await vocalis_cli(stack, "export", session_id, "--format", "srt")
    assert code == 0 and output.strip() == srt.strip()


async def test_last_words_are_transcribed_after_the_client_leaves(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session_id = (await conn.recv()).session.id
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await stream(conn, pcm24k("hello_world.wav"))
        await conn.input_audio_buffer.commit()
        await events_until(conn, lambda e: e.type == "input_audio_buffer.committed")
    await wait_closed(stack, session_id)
    outputs = (await read_session(stack.bus, session_id)).outputs
    completed = [e for e in outputs if isinstance(e, ev.TranscriptCompleted)]
    assert len(completed) == 1 and words(completed[0].transcript) == "hello world"


@pytest.mark.vocalis_settings(api_key="k3y")
async def test_analytics_over_http(stack):
    stack.start_analytics()
    session_id, events = await record_session(stack, api_key="k3y")
    texts = {e.item_id: e.transcript for e in events if e.type == COMPLETED}
    transcripts = [texts[e.item_id] for e in events if e.type == "input_audio_buffer.committed"]  # in speech order
    headers = {"Authorization": "Bearer k3y"}
    async with httpx.AsyncClient(base_url=stack.http_url.removesuffix("/v1")) as client:
        assert (await client.get("/v1/sessions")).status_code == 401, "same auth as the WebSocket"
        for _ in range(100):
            summary = (await client.get(f"/v1/sessions/{session_id}", headers=headers)).json()
            if summary.get("state") == "ended" and all(u["status"] == "completed" for u in summary["utterances"]):
                break
            await asyncio.sleep(0.1)
        listing = (await client.get("/v1/sessions", headers=headers)).json()
        assert [s["session_id"] for s in listing["data"]] == [session_id]
        assert summary["turns"] == len(transcripts) >= 2
        assert [u["text"] for u in summary["utterances"]] == transcripts
        assert all(
            u["transcription_latency_ms"] is not None and u["transcription_latency_ms"] >= 0
            for u in summary["utterances"]
        )
        assert 0 < summary["talk_ms"] <= summary["talk_ms"] + summary["silence_ms"] <= 13_000
        assert summary["words"] >= 15 and 60 < summary["words_per_minute"] < 300
        transcript = (await client.get(f"/v1/sessions/{session_id}/transcript", headers=headers)).json()
        assert [u["text"] for u in transcript["utterances"]] == transcripts
        for fmt, marker in (("srt", "1\n00:00:"), ("vtt", "WEBVTT"), ("md", "# Transcript")):
            response = await client.get(f"/v1/sessions/{session_id}/transcript?format={fmt}", headers=headers)
            assert response.status_code == 200 and response.text.startswith(marker)
        bad = await client.get(f"/v1/sessions/{session_id}/transcript?format=doc", headers=headers)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "format"
        assert (await client.get("/v1/sessions/sess_nope", headers=headers)).status_code == 404


async def test_analytics_survives_restarts_and_rebuilds_from_the_log(stack):
    stack.start_analytics()
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session_id = (await conn.recv()).session.id
        lecture = pcm24k("lecture_60s.wav") + silence(1000)
        half = len(lecture) // 2 // 4800 * 4800
        turns = Turns()
        reader = asyncio.create_task(events_until(conn, lambda event: turns.see(event) or False, timeout=120))
        await stream(conn, lecture[:half], pace=8)
        stack.analytics.cancel()  # killed mid-session, possibly between storing and acknowledging
        await asyncio.gather(stack.analytics, return_exceptions=True)
        stack.start_analytics()
        await stream(conn, lecture[half:], pace=8)
        while not turns.all_transcribed:
            await asyncio.sleep(0.1)
        reader.cancel()
    await wait_closed(stack, session_id)

    store, _ = await SummaryStore.open(stack.bus)

    async def from_log():
        entries = (await read_session(stack.bus, session_id)).entries
        return summarize(e for e in entries if ".out." in e.subject or e.subject.endswith((".in.edge", ".in.stt")))

    async def settled():
        """The stored summary and the one folded from the log, once they have read the same entries (results of
        decodes in flight can still arrive after the close)."""
        for _ in range(100):
            summary, logged = await store.get(session_id), await from_log()
            if summary and summary.state == "ended" and logged and summary.last_seq == logged.last_seq:
                return summary, logged
            await asyncio.sleep(0.1)
        raise AssertionError(f"analytics did not settle: {summary}")

    live, logged = await settled()
    assert sorted(u.item_id for u in live.utterances) == sorted(turns.committed), "each turn counted once"
    assert msgspec.json.encode(live) == msgspec.json.encode(logged)

    # Lose the state entirely: it is rebuilt from the log, identical.
    await stack.stop_analytics()
    await stack.bus.js.delete_key_value(f"{stack.bus.subjects.prefix.upper()}_ANALYTICS")
    stack.start_analytics()
    store, _ = await SummaryStore.open(stack.bus, create=True)
    rebuilt, logged = await settled()
    assert msgspec.json.encode(rebuilt) == msgspec.json.encode(logged)


@pytest.mark.vocalis_settings(audio_max_age_s=1)
async def test_audio_expires_sooner_than_the_rest_of_the_log(stack):
    session_id, _ = await record_session(stack, "hello_world.wav", manual=True)
    for _ in range(50):
        recorded = await read_session(stack.bus, session_id)
        if not any(isinstance(r, rec.AudioReceived) for _, r in recorded.inputs):
            break
        await asyncio.sleep(0.2)
    kinds = {type(r) for _, r in recorded.inputs}
    assert rec.AudioReceived not in kinds, "audio records expired"
    assert {rec.SessionOpened, rec.ClientEventReceived, rec.TranscriptionCompleted, rec.SessionClosed} <= kinds
    assert any(isinstance(e, ev.TranscriptCompleted) for e in recorded.outputs), "the transcript stays"
    with pytest.raises(ValueError, match="audio records have expired"):
        log_tools.replay_recorded(recorded.inputs, recorded.outputs)
    code, _ = await vocalis_cli(stack, "replay", session_id)
    assert code == 1


async def test_tail_of_an_ended_session_prints_it_and_ends(stack):
    session_id, _ = await record_session(stack, "hello_world.wav", manual=True)
    code, output = await asyncio.wait_for(vocalis_cli(stack, "tail", session_id), 60)
    lines = output.splitlines()
    assert code == 0 and lines, "it ends by itself, having printed the session"
    assert "session.opened" in lines[0] and any(COMPLETED in line for line in lines)
    assert "session.closed" in lines[-1]


async def test_replay_of_an_unknown_session_says_so(stack):
    env = os.environ | {"VOCALIS_NATS_URL": stack.nats_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "replay", "sess_mistyped", env=env, stdout=PIPE, stderr=PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 1
    assert err.decode().strip() == (
        "vocalis replay: no such session on the log: 'sess_mistyped' (`vocalis sessions` lists them)"
    )


async def test_log_tools_on_a_nats_without_the_log_yet_find_nothing(nats_url):
    """A `serve` that is still starting has not made its streams: the tools say there is nothing, not a traceback."""
    bus = await Bus.connect(nats_url, "vocalis", "test-empty-log")
    try:
        assert await log_tools.list_sessions(bus) == []
        assert (await read_session(bus, "sess_any")).entries == []
    finally:
        await bus.close()
