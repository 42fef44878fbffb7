"""The console's files and the session exports over HTTP, without a browser: the page is open (it asks for the
key itself), everything else stays behind the API key."""

import base64
import wave

import httpx
import pytest
from openai import AsyncOpenAI

from tests.conftest import Stack

KEY = "sk-console-test"


@pytest.mark.vocalis_settings(api_key=KEY)
async def test_the_page_and_its_modules_are_served_without_the_key_and_the_sessions_are_not(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.settings.port}") as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/console/console.js">' in page.text
        for module in ("console.js", "transports.js", "audio.js", "capture-worklet.js"):
            served = await client.get(f"/console/{module}")
            assert served.status_code == 200, module
            assert "javascript" in served.headers["content-type"], module
        assert (await client.get("/console/missing.js")).status_code == 404
        assert (await client.get("/v1/sessions")).status_code == 401
        assert (await client.get("/v1/sessions/sess_x/export?format=srt")).status_code == 401
        keyed = {"Authorization": f"Bearer {KEY}"}
        assert (await client.get("/v1/sessions", headers=keyed)).status_code == 200


async def test_a_session_exports_as_records_subtitles_and_audio(stack: Stack) -> None:
    client = AsyncOpenAI(api_key="any", websocket_base_url=stack.ws_url)
    async with client.realtime.connect(model="gpt-realtime", extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        session_id = created.session.id  # type: ignore[union-attr]
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        with wave.open("tests/data/jfk.wav") as jfk:
            pcm = jfk.readframes(jfk.getnframes())  # 24 kHz pcm16
        for i in range(0, len(pcm), 48_000):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 48_000]).decode())
        await conn.input_audio_buffer.commit()
        async for event in conn:
            if event.type == "conversation.item.input_audio_transcription.completed":
                break
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.settings.port}") as http:
        export = f"/v1/sessions/{session_id}/export"
        records = await http.get(export, params={"format": "jsonl"})
        assert records.status_code == 200
        assert records.headers["content-disposition"] == f'attachment; filename="{session_id}.jsonl"'
        assert any('"session.opened"' in line for line in records.text.splitlines())
        vtt = await http.get(export, params={"format": "vtt"})
        assert vtt.text.startswith("WEBVTT") and "country" in vtt.text.lower()
        wav = await http.get(export, params={"format": "wav"})
        assert wav.headers["content-type"] == "application/zip" and wav.content[:2] == b"PK"
        wrong = await http.get(export, params={"format": "mp4"})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "format"
        missing = await http.get("/v1/sessions/sess_nobody/export", params={"format": "jsonl"})
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
