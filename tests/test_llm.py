"""The LLM path: the streaming chat-completions client against a scripted OpenAI-compatible server, the LLM worker
end to end on a real nats-server (records, failures, cancellation), and the bundled 0.5B model served by llama.cpp."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from app import runner
from app.bus import MSG_ID, Bus, decode_record, encode
from app.log_reader import read_entries
from app.settings import Settings
from domain import records as rec
from domain.jobs import GenerateJob
from handlers.llm import (
    DEFAULT_LLM,
    BundledLlmServer,
    ChatClient,
    Delta,
    Finished,
    LlmError,
    TextDelta,
    ToolCallsDelta,
    resolve_model,
)
from handlers.llm_worker import LlmWorker
from tests.conftest import MODEL_CACHE
from tests.fake_llm import FakeLlm

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def make_job(job_id: str = "job-1", **fields: object) -> GenerateJob:
    values: dict[str, object] = {
        "job_id": job_id,
        "session_id": "sess1",
        "response_id": f"resp_{job_id}",
        "messages": ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}),
        "model": "fake-model",
    }
    values.update(fields)
    return GenerateJob(**values)  # type: ignore[arg-type]


async def collect(client: ChatClient, job: GenerateJob) -> list[Delta]:
    return [delta async for delta in client.stream(job)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas if isinstance(d, TextDelta))


def tool_calls_of(pieces: list[rec.ToolCallDelta]) -> dict[int, dict[str, str]]:
    """Tool calls joined from their streamed pieces, by index."""
    calls: dict[int, dict[str, str]] = {}
    for piece in pieces:
        call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
        call["id"] = piece.id or call["id"]
        call["name"] = piece.name or call["name"]
        call["arguments"] += piece.arguments
    return calls


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm() as llm:
        yield llm


# The client


async def test_client_streams_text_and_usage(fake_llm: FakeLlm) -> None:
    fake_llm.reply("Hello there, friend!", chunk_chars=3)
    deltas = await collect(ChatClient(fake_llm.base_url, "sk-test"), make_job(temperature=0.2))

    assert text_of(deltas) == "Hello there, friend!"
    assert sum(isinstance(d, TextDelta) for d in deltas) == 7  # pieces of three characters, as streamed
    assert deltas[-1] == Finished("stop", input_tokens=3, output_tokens=7)
    body = fake_llm.requests[0]
    assert body["model"] == "fake-model"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2
    assert "tools" not in body and "max_tokens" not in body
    assert fake_llm.headers[0]["authorization"] == "Bearer sk-test"


async def test_client_reports_the_cached_prompt_and_the_prefill_time_where_the_server_says(fake_llm: FakeLlm) -> None:
    fake_llm.reply("Hi.")
    fake_llm.cached_tokens, fake_llm.prefill_ms = 2, 12.5
    deltas = await collect(ChatClient(fake_llm.base_url), make_job())
    assert deltas[-1] == Finished("stop", input_tokens=3, output_tokens=1, cached_tokens=2, prefill_ms=12.5)


async def test_client_streams_tool_calls_with_arguments_in_pieces(fake_llm: FakeLlm) -> None:
    arguments = {"city": "Paris", "unit": "celsius"}
    fake_llm.reply(tool_calls=[("get_weather", arguments), ("get_time", {"zone": "CET"})], chunk_chars=4)
    job = make_job(tools=(WEATHER_TOOL,), tool_choice="required")
    deltas = await collect(ChatClient(fake_llm.base_url, None), job)

    pieces = [piece for d in deltas if isinstance(d, ToolCallsDelta) for piece in d.tool_calls]
    assert len(pieces) > 4 and text_of(deltas) == ""
    calls = tool_calls_of(pieces)
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == arguments
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"zone": "CET"}
    assert calls[0]["id"] and calls[0]["id"] != calls[1]["id"]
    assert deltas[-1].finish_reason == "tool_calls"  # type: ignore[union-attr]
    assert fake_llm.requests[0]["tools"] == [WEATHER_TOOL]
    assert fake_llm.requests[0]["tool_choice"] == "required"
    assert "authorization" not in fake_llm.headers[0]


async def test_client_streams_text_then_a_tool_call(fake_llm: FakeLlm) -> None:
    fake_llm.reply("Let me check.", tool_calls=[("get_weather", {"city": "Oslo"})])
    deltas = await collect(ChatClient(fake_llm.base_url), make_job(tools=(WEATHER_TOOL,)))

    kinds = [type(d).__name__ for d in deltas]
    first_call = kinds.index("ToolCallsDelta")
    assert set(kinds[:first_call]) == {"TextDelta"} and set(kinds[first_call:-1]) == {"ToolCallsDelta"}
    assert text_of(deltas) == "Let me check."
    calls = tool_calls_of([p for d in deltas if isinstance(d, ToolCallsDelta) for p in d.tool_calls])
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert deltas[-1].finish_reason == "tool_calls"  # type: ignore[union-attr]


async def test_client_stops_at_max_tokens_with_length(fake_llm: FakeLlm) -> None:
    fake_llm.reply("one two three four five six", chunk_chars=4)
    deltas = await collect(ChatClient(fake_llm.base_url), make_job(max_tokens=3))

    assert text_of(deltas) == "one two thre"
    assert deltas[-1] == Finished("length", input_tokens=3, output_tokens=3)
    assert fake_llm.requests[0]["max_tokens"] == 3


async def test_client_raises_llm_error_on_http_500_and_on_no_server(fake_llm: FakeLlm) -> None:
    fake_llm.fail(500)
    with pytest.raises(LlmError, match=r"HTTP 500.*scripted failure"):
        await collect(ChatClient(fake_llm.base_url), make_job())
    with pytest.raises(LlmError, match="ConnectError"):
        await collect(ChatClient(f"http://127.0.0.1:{runner.free_port()}/v1"), make_job())


def test_realtime_model_names_mean_the_default() -> None:
    for name in ("gpt-realtime", "gpt-realtime-2025-08-28", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview"):
        assert resolve_model(name, DEFAULT_LLM) == DEFAULT_LLM
    assert resolve_model(None, "m") == "m" and resolve_model("", "m") == "m"
    assert resolve_model("qwen2.5-coder-0.5b", DEFAULT_LLM) == "qwen2.5-coder-0.5b"
    assert resolve_model("gpt-4o-mini", DEFAULT_LLM) == "gpt-4o-mini"  # another endpoint may serve it


# The worker, on a real nats-server


@pytest.fixture
async def bus(nats_url: str, tmp_path: Path) -> AsyncIterator[Bus]:
    bus = await runner.connect(Settings(data_dir=tmp_path), nats_url, "vocalis-llm-test")
    try:
        yield bus
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def worker_running(bus: Bus, client: ChatClient, at_once: int = 1) -> AsyncIterator[LlmWorker]:
    stop = asyncio.Event()
    worker = LlmWorker(bus, client, "llm-test-worker", at_once=at_once)
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def submit(bus: Bus, job: GenerateJob) -> None:
    await bus.js.publish(bus.subjects.jobs("llm", job.session_id), encode(job), headers={MSG_ID: job.job_id})


async def records_until(
    bus: Bus, predicate: Callable[[list[rec.Record]], bool], session_id: str = "sess1", timeout: float = 10
) -> list[rec.Record]:
    deadline = time.monotonic() + timeout
    while True:
        entries = await read_entries(bus, bus.subjects.session_input(session_id, "llm"))
        records = [decode_record(e.data) for e in entries]
        if predicate(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; records so far: {records}")
        await asyncio.sleep(0.05)


def finished(records: list[rec.Record]) -> bool:
    return any(isinstance(r, rec.GenerationDone | rec.GenerationFailed) for r in records)


def deltas_of(records: list[rec.Record], job_id: str) -> list[rec.GenerationDelta]:
    return [r for r in records if isinstance(r, rec.GenerationDelta) and r.job_id == job_id]


async def test_worker_records_text_and_tool_call_deltas_then_done(bus: Bus, fake_llm: FakeLlm) -> None:
    fake_llm.reply("Sure, checking.", tool_calls=[("get_weather", {"city": "Lima"})], chunk_chars=5)
    async with worker_running(bus, ChatClient(fake_llm.base_url, "sk-x")):
        await submit(bus, make_job("job-a", tools=(WEATHER_TOOL,), max_tokens=100))
        records = await records_until(bus, finished)

    deltas = deltas_of(records, "job-a")
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert all(d.response_id == "resp_job-a" and d.worker == "llm-test-worker" for d in deltas)
    assert "".join(d.text for d in deltas) == "Sure, checking."
    calls = tool_calls_of([p for d in deltas for p in d.tool_calls])
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Lima"}
    done = records[-1]
    assert isinstance(done, rec.GenerationDone) and done.job_id == "job-a"
    assert done.finish_reason == "tool_calls" and done.input_tokens == 3 and done.output_tokens == len(deltas)
    assert fake_llm.requests[0]["messages"][1] == {"role": "user", "content": "Hello"}
    # Records carry msg ids derived from the job: the same piece published again is a duplicate.
    subject = bus.subjects.session_input("sess1", "llm")
    assert (await bus.publish(subject, encode(deltas[0]), "job-a.0")).duplicate
    assert (await bus.publish(subject, encode(done), "job-a.done")).duplicate


async def test_worker_records_a_failure_and_goes_on(bus: Bus, fake_llm: FakeLlm) -> None:
    fake_llm.fail(500)
    fake_llm.reply("Back again.")
    async with worker_running(bus, ChatClient(fake_llm.base_url)):
        await submit(bus, make_job("job-f"))
        await submit(bus, make_job("job-g"))
        records = await records_until(bus, lambda rs: sum(finished([r]) for r in rs) == 2)

    failed, done = [r for r in records if finished([r])]
    assert isinstance(failed, rec.GenerationFailed) and failed.job_id == "job-f"
    assert "HTTP 500" in failed.message and not deltas_of(records, "job-f")
    assert isinstance(done, rec.GenerationDone) and done.job_id == "job-g" and done.finish_reason == "stop"
    assert "".join(d.text for d in deltas_of(records, "job-g")) == "Back again."


async def test_worker_cancel_stops_the_stream_mid_reply(bus: Bus, fake_llm: FakeLlm) -> None:
    reply = "word " * 100
    fake_llm.reply(reply, chunk_chars=2, delay_s=0.05)  # 250 pieces: about 12 s in full
    fake_llm.reply("After the cancel.")
    async with worker_running(bus, ChatClient(fake_llm.base_url)):
        await submit(bus, make_job("job-c"))
        await records_until(bus, lambda rs: len(deltas_of(rs, "job-c")) >= 3)
        await bus.nc.publish(bus.subjects.cancel("resp_job-c"), b"")
        cancelled_at = time.monotonic()
        while fake_llm.disconnects == 0:  # the worker closes its HTTP stream
            assert time.monotonic() - cancelled_at < 2, "the stream was not closed"
            await asyncio.sleep(0.01)
        stopped = len(deltas_of(await records_until(bus, lambda rs: True), "job-c"))
        await asyncio.sleep(0.5)  # ten more chunks' time: nothing more is recorded for it
        await submit(bus, make_job("job-d"))
        records = await records_until(bus, finished)

    assert len(deltas_of(records, "job-c")) == stopped < len(reply) // 2
    assert [type(r) for r in records if finished([r])] == [rec.GenerationDone]
    assert records[-1].job_id == "job-d"  # type: ignore[union-attr]
    assert fake_llm.completed == 1
    consumer = await bus.js.consumer_info(bus.subjects.jobs_stream, "llm")
    assert consumer.num_ack_pending == 0 and consumer.num_pending == 0  # the cancelled job was acknowledged


async def test_worker_skips_a_job_cancelled_before_it_starts(bus: Bus, fake_llm: FakeLlm) -> None:
    fake_llm.reply("Only the second job.")
    async with worker_running(bus, ChatClient(fake_llm.base_url)) as worker:
        while worker.unwanted.why(make_job("job-x")) != "cancelled":  # until the worker has subscribed to cancels
            await bus.nc.publish(bus.subjects.cancel("resp_job-x"), b"")
            await asyncio.sleep(0.02)
        await submit(bus, make_job("job-x"))
        await submit(bus, make_job("job-y"))
        records = await records_until(bus, finished)

    assert not deltas_of(records, "job-x") and len(fake_llm.requests) == 1
    assert records[-1].job_id == "job-y"  # type: ignore[union-attr]


async def test_a_worker_streams_several_answers_at_once_from_an_endpoint_and_only_that_many(
    bus: Bus, fake_llm: FakeLlm
) -> None:
    for _ in range(3):
        fake_llm.reply("A slow answer, piece by piece.", chunk_chars=2, delay_s=0.1)  # about 1.5 s each
    async with worker_running(bus, ChatClient(fake_llm.base_url), at_once=2):
        for name in ("job-a", "job-b", "job-c"):
            await submit(bus, make_job(name))
        both = await records_until(bus, lambda rs: bool(deltas_of(rs, "job-a") and deltas_of(rs, "job-b")))
        assert not [r for r in both if isinstance(r, rec.GenerationDone)], "the first two answers stream together"
        assert not deltas_of(both, "job-c"), "a third waits for a free slot"
        records = await records_until(bus, lambda rs: sum(isinstance(r, rec.GenerationDone) for r in rs) == 3)
    assert fake_llm.completed == 3 and len(fake_llm.requests) == 3
    assert all(
        "".join(d.text for d in deltas_of(records, job)) == "A slow answer, piece by piece."
        for job in ("job-a", "job-b", "job-c")
    )


# The bundled model, served by llama.cpp in this process


async def test_worker_with_the_bundled_small_model(bus: Bus) -> None:
    started = time.perf_counter()
    server = await asyncio.to_thread(BundledLlmServer, "qwen2.5-coder-0.5b", MODEL_CACHE, n_ctx=2048)
    try:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        async with httpx.AsyncClient() as anyone:  # another local user, without the key
            assert (await anyone.get(f"{server.base_url}/models")).status_code == 401
        print(f"model ready in {time.perf_counter() - started:.1f} s (load {server.load_seconds:.1f} s)")
        job = make_job(
            "job-real",
            messages=({"role": "user", "content": "Reply with the single word: yes"},),
            model=resolve_model("gpt-realtime", "qwen2.5-coder-0.5b"),
            temperature=0,
            max_tokens=8,
        )
        async with worker_running(bus, ChatClient(server.base_url, server.api_key)):
            await submit(bus, job)
            records = await records_until(bus, finished, timeout=60)
    finally:
        await asyncio.to_thread(server.stop)

    answer = "".join(d.text for d in deltas_of(records, "job-real"))
    done = records[-1]
    assert isinstance(done, rec.GenerationDone), done
    assert answer.strip(), records
    assert done.finish_reason in ("stop", "length")
    assert done.input_tokens > 0 and 0 < done.output_tokens <= 8
    assert done.prefill_ms is not None, "llama.cpp's server says how long the prompt took"
    print(f"answer {answer!r}, usage {done.input_tokens} in / {done.output_tokens} out")


async def test_an_unusable_endpoint_is_found_by_the_start_up_check(fake_llm) -> None:
    assert await ChatClient(fake_llm.base_url).check() is None
    dead = f"http://127.0.0.1:{runner.free_port()}/v1"
    problem = await ChatClient(dead).check()
    assert problem is not None and problem.startswith(f"cannot reach {dead}")
