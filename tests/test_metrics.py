"""`GET /metrics`: what an edge measures, scraped from a real server after real turns, behind the API key."""

import asyncio

import httpx
import msgspec
import pytest
import websockets
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import EdgeMetrics
from domain import records as rec
from domain.jobs import TRANSCRIPTION_LATE, SynthesizeJob, TranscribeJob
from domain.session_config import SessionConfig
from domain.state import SessionState, Transition, WithdrawJob
from tests.conftest import Stack
from tests.realtime_client import chunks, pcm24k, raw_connect, silence

COMPLETED = "conversation.item.input_audio_transcription.completed"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample by name and labels (the process collector's left out)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("vocalis_")
    }


async def scrape(stack: Stack, **headers: str) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{stack.settings.port}/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_transcription_turn_is_counted_and_timed(stack: Stack):
    async with raw_connect(stack.ws_url) as client:
        await client.next_of("session.created")
        for chunk in chunks(pcm24k("hello_world.wav") + silence(1500)):
            await client.send({"type": "input_audio_buffer.append", "audio": chunk})
        await client.next_of(COMPLETED)
        during = await scrape(stack)
    assert value(during, "vocalis_sessions_open", mode="transcription") == 1
    assert value(during, "vocalis_sessions_open", mode="realtime") == 0
    assert value(during, "vocalis_transcription_seconds_count") == 1, "speech_stopped -> completed, once"
    assert value(during, "vocalis_transcription_first_delta_seconds_count") == 1
    assert 0 < value(during, "vocalis_transcription_seconds_sum") < 30
    assert value(during, "vocalis_jobs_total", kind="stt", outcome="done") >= 1
    assert value(during, "vocalis_job_seconds_count", kind="stt") >= 1
    assert value(during, "vocalis_records_published_total", subject="in") > 10, "the audio, in appends"
    assert value(during, "vocalis_records_published_total", subject="out") > 3
    assert value(during, "vocalis_records_published_total", subject="jobs") >= 1
    assert value(during, "vocalis_partial_decodes_dropped_total") == 0
    # Read from the job consumers: the stack's STT worker is alive, and nothing waits.
    assert value(during, "vocalis_workers_live", kind="stt") >= 1
    assert value(during, "vocalis_workers_live", kind="llm") == 0
    assert ("vocalis_jobs_queued", (("kind", "stt"),)) in during
    assert value(during, "vocalis_jobs_queued", kind="stt") == 0
    assert value(during, "vocalis_jobs_in_flight", kind="stt") == 0

    for _ in range(50):  # the session's end is recorded after the socket closed
        after = await scrape(stack)
        if value(after, "vocalis_sessions_open", mode="transcription") == 0:
            break
        await asyncio.sleep(0.1)
    assert value(after, "vocalis_sessions_open", mode="transcription") == 0


@pytest.mark.vocalis_settings(max_sessions=1)
async def test_a_session_refused_with_503_is_counted(stack: Stack):
    assert value(await scrape(stack), "vocalis_sessions_refused_total") == 0
    async with raw_connect(stack.ws_url) as first:
        await first.next_of("session.created")
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with raw_connect(stack.ws_url):
                pass
        assert refused.value.response.status_code == 503
    assert value(await scrape(stack), "vocalis_sessions_refused_total") == 1


@pytest.mark.vocalis_settings(api_key="m3trics")
async def test_metrics_take_the_api_key_and_the_probes_do_not(stack: Stack):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.settings.port}") as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        probes = {path: (await client.get(path)).status_code for path in ("/live", "/health", "/ready")}
    assert probes == {"/live": 200, "/health": 503, "/ready": 503}, "open (503: the stack runs no LLM or TTS worker)"
    samples = await scrape(stack, authorization="Bearer m3trics")
    assert ("vocalis_sessions_refused_total", ()) in samples


def test_job_ends_are_counted_once_and_only_shed_partial_decodes_as_dropped_not_withdrawn_ones():
    metrics = EdgeMetrics()
    watch = metrics.session("transcription")

    def partial(job_id: str) -> TranscribeJob:
        return TranscribeJob(job_id, "sess", "item", 1, 2, 0, 0, 16000, "whisper-tiny.en", words=True, partial=True)

    def failed(job_id: str, message: str, worker: str = "stt-1") -> rec.TranscriptionFailed:
        return rec.TranscriptionFailed(at_ms=0, job_id=job_id, item_id="item", message=message, worker=worker)

    clause = SynthesizeJob("tts1", "sess", "resp", 0, "Hello.", "jm_kumo")
    asked = rec.SessionExpired(at_ms=0)  # any record: what counts is the transition's jobs
    directives = (partial("p1"), partial("p2"), partial("p3"), partial("p4"), partial("p5"), clause)
    watch.reduced(asked, Transition(None, jobs=directives))  # type: ignore[arg-type]
    none = Transition(None)  # type: ignore[arg-type]
    watch.reduced(asked, Transition(None, jobs=(WithdrawJob("p4"), WithdrawJob("p5"))))  # type: ignore[arg-type]
    watch.reduced(failed("p4", "Withdrawn before a worker took it: no longer needed.", "edge"), none)
    words = {"at_ms": 0, "item_id": "item", "start_sample": 0, "end_sample": 16000, "words": (), "worker": "stt-1"}
    watch.reduced(rec.WordsDecoded(job_id="p5", **words), none)  # taken before it could be withdrawn
    watch.reduced(failed("p1", f"{TRANSCRIPTION_LATE} (the server is busy; 0.4 s past its deadline)."), none)
    watch.reduced(failed("p2", "The server is too busy to take this work now; try again shortly.", "edge"), none)
    watch.reduced(failed("p3", "Transcription failed: out of memory"), none)
    chunk = {"at_ms": 0, "job_id": "tts1", "response_id": "resp", "clause_index": 0, "audio": b"", "worker": "t"}
    watch.reduced(rec.SpeechSynthesized(chunk_index=0, last=False, **chunk), none)
    watch.reduced(rec.SpeechSynthesized(chunk_index=1, last=True, **chunk), none)
    watch.reduced(rec.SpeechSynthesized(chunk_index=1, last=True, **chunk), none)  # one end per job

    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "vocalis_partial_decodes_dropped_total") == 2, "the expired one and the refused one"
    assert value(samples, "vocalis_jobs_total", kind="stt-partial", outcome="failed") == 3
    assert value(samples, "vocalis_jobs_total", kind="stt-partial", outcome="withdrawn") == 1
    assert value(samples, "vocalis_jobs_total", kind="stt-partial", outcome="done") == 1
    assert value(samples, "vocalis_job_seconds_count", kind="stt-partial") == 4, "not the withdrawn one"
    assert value(samples, "vocalis_jobs_total", kind="tts", outcome="done") == 1
    assert value(samples, "vocalis_job_seconds_count", kind="tts") == 1


def test_speculative_responses_are_counted_by_outcome_as_the_session_s_counters_grow():
    metrics = EdgeMetrics()
    watch = metrics.session("realtime")
    state = SessionState("sess", "realtime", SessionConfig(type="realtime"), "whisper-tiny.en", 0, 60)
    record = rec.SessionExpired(at_ms=0)  # any record: what counts is the state after it
    for used, wasted in ((0, 1), (0, 1), (1, 1), (1, 3)):
        watch.reduced(
            record, Transition(msgspec.structs.replace(state, speculations_used=used, speculations_wasted=wasted))
        )
    samples = parse(generate_latest(metrics.registry).decode())
    assert value(samples, "vocalis_speculative_responses_total", outcome="used") == 1
    assert value(samples, "vocalis_speculative_responses_total", outcome="wasted") == 3
