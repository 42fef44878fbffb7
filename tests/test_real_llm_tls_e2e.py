"""The bundled LLM end to end (llama.cpp through xllamacpp, the small Qwen), and TLS for wss:// clients."""

import asyncio
import dataclasses
import ssl

import pytest

from app import runner
from handlers.llm import BundledLlmServer, ChatClient
from handlers.llm_worker import LlmWorker
from handlers.tts_worker import TtsWorker
from tests.conftest import MODEL_CACHE
from tests.realtime_client import events_until, pcm24k, sdk, silence, stream

SMALL_LLM = "qwen2.5-coder-0.5b"


@pytest.mark.slow
async def test_spoken_question_answered_by_the_bundled_llm(stack, synthesizer):
    server = await asyncio.to_thread(BundledLlmServer, SMALL_LLM, MODEL_CACHE, n_ctx=2048)
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(
            LlmWorker(stack.bus, ChatClient(server.base_url, server.api_key), "llm", default_model=SMALL_LLM).run(stop)
        ),
        asyncio.create_task(TtsWorker(stack.bus, synthesizer, "tts").run(stop)),
    ]
    try:
        async with sdk(stack.ws_url).realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.session.update(session={"type": "realtime", "max_output_tokens": 40})
            await stream(conn, pcm24k("hello_world.wav") + silence(800))
            events = await events_until(conn, lambda e: e.type == "response.done", timeout=120)
    finally:
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        server.stop()
    response = events[-1].response
    assert response.status in ("completed", "incomplete")
    assert response.output and response.output[0].content[0].transcript.strip()
    assert any(e.type == "response.output_audio.delta" for e in events)
    assert response.usage.output_tokens > 0 and response.usage.input_tokens > 0


async def test_wss_with_a_certificate(stack, certificate):
    cert, key = certificate
    settings = dataclasses.replace(stack.settings, port=runner.free_port(), tls_certfile=cert, tls_keyfile=key)
    server = runner.http_server(settings, runner.edge_services(settings, stack.bus))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        url = f"wss://127.0.0.1:{settings.port}/v1"
        async with sdk(url).realtime.connect(
            extra_query={"intent": "transcription"}, websocket_connection_options={"ssl": trust}
        ) as conn:
            assert (await conn.recv()).type == "session.created"
    finally:
        server.should_exit = True
        await serving
