"""Transcription-only mode end to end: the official SDK (GA and beta), real NATS, silero and whisper."""

import asyncio
import base64

import numpy as np
import pytest
import soxr

from app.log_reader import read_session
from domain import records as rec
from domain.turns import WORDS_WAIT_MS
from tests.realtime_client import (
    JFK,
    LECTURE,
    events_until,
    events_until_transcribed,
    pcm24k,
    sdk,
    silence,
    stream,
    word_error_rate,
    words,
)

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
ONE_TURN = {"type": "server_vad", "silence_duration_ms": 1500}  # JFK pauses for about a second


def types(events: list) -> list[str]:
    return [e.type for e in events]


async def test_ga_jfk_sequence_and_transcript(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        td = created.session.audio.input.turn_detection
        assert (td.type, td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == ("server_vad", 0.5, 300, 500)
        assert created.session.audio.input.format.type == "audio/pcm"

        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": ONE_TURN}}})
        await stream(conn, pcm24k("jfk.wav") + silence(2000))
        events = await events_until(conn, lambda e: e.type == COMPLETED)

    # A partial decode can finish before the turn ends, so deltas may come anywhere after speech_started.
    deltas = [e for e in events if e.type == DELTA]
    assert deltas, "at least one transcription delta"
    assert types(events).index(DELTA) > types(events).index("input_audio_buffer.speech_started")
    events = [e for e in events if e.type != DELTA]
    assert types(events) == [
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        COMPLETED,
    ]
    updated = events[0]
    assert updated.session.audio.input.turn_detection.silence_duration_ms == 1500
    assert updated.session.audio.input.turn_detection.threshold == 0.5  # a partial update keeps the rest
    item_id = events[1].item_id
    assert all(getattr(e, "item_id", item_id) == item_id for e in events[1:] + deltas)
    assert events[4].item.id == item_id and events[4].item.content[0].type == "input_audio"
    completed = events[-1]
    assert "".join(d.delta for d in deltas) == completed.transcript
    assert words(completed.transcript) == words(JFK)
    assert completed.usage.type == "duration" and 9.0 < completed.usage.seconds < 13.5
    assert events[1].audio_start_ms < 500  # speech begins about 0.3 s in; the start includes prefix padding
    assert 11_500 <= events[2].audio_end_ms <= 13_000  # end of speech (about 11 s) plus 1.5 s of silence


async def test_deltas_arrive_while_the_user_speaks_and_add_up_to_the_transcript(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": ONE_TURN}}})
        await stream(conn, pcm24k("jfk.wav") + silence(2000), pace=1.0)  # a live speaker: decoded as they speak
        events = await events_until(conn, lambda e: e.type == COMPLETED)

    kinds = types(events)
    stopped = kinds.index("input_audio_buffer.speech_stopped")
    started = next(e for e in events if e.type == "input_audio_buffer.speech_started")
    early = [e for e in events[:stopped] if e.type == DELTA]
    assert len(early) >= 2, "stable words go out before the turn ends"
    assert all(e.item_id == started.item_id for e in early), "with the item id of speech_started"
    completed = events[-1]
    deltas = "".join(e.delta for e in events if e.type == DELTA)
    assert deltas == completed.transcript
    assert word_error_rate(JFK, completed.transcript) <= 0.15


@pytest.mark.vocalis_settings(stt_batch=4)
async def test_live_speakers_sharing_a_batching_worker_each_get_their_own_transcript(stack):
    """Three sessions speak at once: their decodes wait for the worker together and are decoded in batches."""

    async def speaker(lead_ms: int) -> list:
        async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
            update = {"type": "transcription", "audio": {"input": {"turn_detection": ONE_TURN}}}
            await conn.session.update(session=update)
            await stream(conn, silence(lead_ms) + pcm24k("jfk.wav") + silence(2000), pace=1.0)
            return await events_until(conn, lambda e: e.type == COMPLETED)

    for events in await asyncio.gather(speaker(0), speaker(100), speaker(200)):
        completed = events[-1]
        assert "".join(e.delta for e in events if e.type == DELTA) == completed.transcript
        assert word_error_rate(JFK, completed.transcript) <= 0.15


async def test_incremental_false_sends_the_transcript_only_once_the_turn_ends(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        transcription = {"model": "whisper-tiny.en", "incremental": False}
        audio_input = {"turn_detection": ONE_TURN, "transcription": transcription}
        await conn.session.update(session={"type": "transcription", "audio": {"input": audio_input}})
        await stream(conn, pcm24k("jfk.wav") + silence(2000), pace=1.0)
        events = await events_until(conn, lambda e: e.type == COMPLETED)

    updated = next(e for e in events if e.type == "session.updated")
    assert updated.session.audio.input.transcription.model_extra == {"incremental": False}
    kinds = types(events)
    assert kinds.index(DELTA) > kinds.index("input_audio_buffer.speech_stopped")
    assert kinds.count(DELTA) == 1
    assert word_error_rate(JFK, events[-1].transcript) <= 0.15


async def test_beta_jfk_with_transcription_session_update(stack):
    client = sdk(stack.ws_url)
    async with client.beta.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.transcription_session.update(
            session={"input_audio_transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": ONE_TURN}
        )
        updated = await conn.recv()
        assert updated.type == "transcription_session.updated"
        assert updated.session.input_audio_format == "pcm16"
        assert updated.session.input_audio_transcription.model == "whisper-1"
        assert updated.session.turn_detection.silence_duration_ms == 1500
        await stream(conn, pcm24k("jfk.wav") + silence(2000))
        events = await events_until(conn, lambda e: e.type == COMPLETED)
    kinds = [t for t in types(events) if t != DELTA]
    assert kinds == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        COMPLETED,
    ]
    assert DELTA in types(events)
    assert words(events[-1].transcript) == words(JFK)


@pytest.mark.slow
async def test_lecture_turns_each_get_their_own_transcript(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(
            session={"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-base"}}}}
        )
        await stream(conn, pcm24k("lecture_60s.wav") + silence(1500))
        events = await events_until_transcribed(conn, at_least=3)
    committed = [e.item_id for e in events if e.type == "input_audio_buffer.committed"]
    completed = [e for e in events if e.type == COMPLETED]
    assert len(committed) >= 3, "the lecture's pauses split it into turns"
    assert len(completed) == len(committed), "one completed event per item"
    transcripts = {e.item_id: e.transcript for e in completed}
    text = " ".join(transcripts[item] for item in committed)
    assert word_error_rate(LECTURE, text) <= 0.15, text


async def test_manual_commit_mode(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await stream(conn, pcm24k("hello_world.wav"))
        await conn.input_audio_buffer.commit(event_id="evt_commit_1")
        events = await events_until(conn, lambda e: e.type == COMPLETED)
    updated = next(e for e in events if e.type == "session.updated")
    assert updated.session.audio.input.turn_detection is None
    assert not any(t.startswith("input_audio_buffer.speech") for t in types(events))
    assert "input_audio_buffer.committed" in types(events)
    assert words(events[-1].transcript) == "hello world"


async def test_clear_then_commit_is_empty(stack):
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        await stream(conn, pcm24k("hello_world.wav"))
        await conn.input_audio_buffer.clear()
        await conn.input_audio_buffer.commit(event_id="evt_after_clear")
        events = await events_until(conn, lambda e: e.type == "error")
        assert "input_audio_buffer.cleared" in types(events)
        assert events[-1].error.code == "input_audio_buffer_commit_empty"
        assert events[-1].error.event_id == "evt_after_clear"
        # The session goes on: a real commit after that still transcribes.
        await stream(conn, pcm24k("hello_world.wav"))
        await conn.input_audio_buffer.commit()
        events = await events_until(conn, lambda e: e.type == COMPLETED)
    assert words(events[-1].transcript) == "hello world"


def _mulaw(pcm: bytes) -> bytes:
    """Reference G.711 µ-law encoder (ITU-T), independent of the server's decoder."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


async def test_g711_ulaw_input(stack):
    pcm = pcm24k("jfk.wav")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    narrowband = soxr.resample(samples, 24000, 8000).clip(-32768, 32767).astype("<i2").tobytes()
    ulaw = _mulaw(narrowband) + bytes([0xFF]) * 16000  # µ-law 0xFF is silence
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": ONE_TURN}},
            }
        )
        for i in range(0, len(ulaw), 800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(ulaw[i : i + 800]).decode())
        events = await events_until(conn, lambda e: e.type == COMPLETED)
    updated = next(e for e in events if e.type == "session.updated")
    assert updated.session.audio.input.format.type == "audio/pcmu"
    assert word_error_rate(JFK, events[-1].transcript) <= 0.1
    stopped = next(e for e in events if e.type == "input_audio_buffer.speech_stopped")
    assert 11_500 <= stopped.audio_end_ms <= 13_000, "8 kHz input keeps session time right"


async def test_semantic_vad_ends_a_finished_phrase_at_the_scored_pause_and_records_the_scores(stack):
    """The same phrase, once with server VAD (500 ms of silence) and once with semantic VAD: Smart Turn finds
    "Hello, world." finished at the first scored pause and its words agree, so the turn ends there; the log holds
    the score it ended on, beside the audio it was taken on."""
    ends, sessions = {}, {}
    for name, detection in (("server", {"type": "server_vad"}), ("semantic", {"type": "semantic_vad"})):
        async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
            sessions[name] = (await conn.recv()).session.id
            session = {"type": "transcription", "audio": {"input": {"turn_detection": detection}}}
            await conn.session.update(session=session)
            # In real time: a sure score waits for the words of the pause, which come in the worker's time.
            await stream(conn, pcm24k("hello_world.wav") + silence(2500), pace=1.0)
            events = await events_until(conn, lambda e: e.type == COMPLETED)
        (stopped,) = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
        ends[name] = stopped.audio_end_ms
        assert words(events[-1].transcript) == words("Hello, world.")

    recorded = await read_session(stack.bus, sessions["semantic"])
    scored_at_ms, frames = [], 0
    for _, record in recorded.inputs:
        if isinstance(record, rec.AudioReceived):
            scored_at_ms += [(frames + index + 1) * 512 // 16 for index, p in record.turn_scores if p >= 0.7]
            frames += len(record.speech_probs)
    # It ended on the first sure score, once the words of the pause agreed (those after "Hello," would not have):
    # not after 4 s of silence as an unsure score, nor after 500 ms as server VAD, whose session scored nothing.
    assert scored_at_ms and scored_at_ms[0] <= ends["semantic"] < scored_at_ms[0] + WORDS_WAIT_MS
    assert ends["server"] < scored_at_ms[0] + 500
    server = [r for _, r in (await read_session(stack.bus, sessions["server"])).inputs]
    assert not any(r.turn_scores for r in server if isinstance(r, rec.AudioReceived))  # server VAD: none taken
