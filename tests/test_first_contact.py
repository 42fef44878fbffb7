"""What a newcomer meets first: OpenAI-shaped HTTP errors, readiness that names the missing workers, and an error
(not a silent substitute) for a model the server does not serve."""

import httpx
import pytest

from tests.realtime_client import events_until, sdk


async def test_unknown_paths_and_sessions_get_openai_shaped_404s(stack):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.settings.port}") as client:
        for path in ("/v1/nope", "/v1/sessions/sess_nope"):
            response = await client.get(path)
            assert response.status_code == 404
            error = response.json()["error"]
            assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "not_found", None)
            assert error["message"]


async def test_health_and_ready_name_the_worker_kinds_without_a_live_worker(stack):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.settings.port}") as client:
        live = await client.get("/live")
        health = await client.get("/health")
        ready = await client.get("/ready")
    assert (live.status_code, live.json()) == (200, {"status": "ok"}), "workers are not the liveness probe's business"
    assert (health.status_code, ready.status_code) == (503, 503)  # the stack runs an STT worker only
    assert health.json()["status"] == "unhealthy" and health.json()["missing"] == ["llm", "tts"]
    assert health.json()["error"]["code"] == "workers_unavailable" and "llm, tts" in health.json()["error"]["message"]
    assert ready.json()["status"] == "not ready" and ready.json()["waiting_for"] == ["llm", "tts"]
    assert health.json()["workers"]["stt"] >= 1 and ready.json()["workers"]["stt"] >= 1


async def test_ready_once_every_kind_has_a_worker(conversation):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{conversation.stack.settings.port}") as client:
        for _ in range(100):  # the workers of the fixture start fetching within moments
            ready = await client.get("/ready")
            if ready.status_code == 200:
                break
    assert ready.status_code == 200 and ready.json()["waiting_for"] == []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{conversation.stack.settings.port}") as client:
        health = await client.get("/health")
    assert health.status_code == 200 and health.json()["missing"] == []


@pytest.mark.vocalis_settings(workers="stt,analytics")
async def test_a_deployment_that_only_transcribes_is_ready_with_stt_and_refuses_conversations(stack):
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.settings.port}") as client:
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert ready.status_code == 200 and ready.json()["workers"].keys() == {"stt"}
    assert health.status_code == 200 and health.json()["workers"].keys() == {"stt"}
    async with sdk(stack.ws_url).beta.realtime.connect(model="gpt-realtime") as conn:
        refused = await conn.recv()
    assert (refused.type, refused.error.type, refused.error.param) == ("error", "invalid_request_error", "intent")
    assert "runs no llm or tts worker" in refused.error.message
    async with sdk(stack.ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"


async def test_an_unknown_conversation_model_is_an_error_and_openai_names_are_aliases(stack):
    async with sdk(stack.ws_url).realtime.connect(model="foo") as conn:
        events = await events_until(conn, lambda e: e.type == "error")
    error = events[-1].error
    assert (error.code, error.param) == ("invalid_value", "model")
    assert "Unknown model 'foo'" in error.message and "qwen2.5-coder-1.5b" in error.message
    assert events[0].type == "session.created" and events[0].session.model is None, "the session goes on, as default"
    for alias in ("gpt-realtime", "gpt-4o-realtime-preview", "gpt-realtime-mini"):
        async with sdk(stack.ws_url).realtime.connect(model=alias) as conn:
            created = await conn.recv()
            await conn.session.update(session={"type": "realtime", "instructions": "hi"})
            updated = await conn.recv()
        assert (created.type, updated.type) == ("session.created", "session.updated"), alias


async def test_session_update_with_an_unknown_model_is_an_error_and_aliases_pass(stack):
    async with sdk(stack.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.recv()
        await conn.send({"type": "session.update", "event_id": "m1", "session": {"type": "realtime", "model": "foo"}})
        error = await conn.recv()
        await conn.session.update(session={"type": "realtime", "model": "gpt-realtime-mini"})
        updated = await conn.recv()
    assert (error.type, error.error.param, error.error.event_id) == ("error", "session.model", "m1")
    assert "Unknown model 'foo'" in error.error.message
    assert (updated.type, updated.session.model) == ("session.updated", "gpt-realtime-mini")
