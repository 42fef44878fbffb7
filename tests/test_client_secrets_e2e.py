"""Client secrets (`ek_…`) end to end: minted with the server's key (GA and beta), each opens exactly one session,
over WebSocket (the official SDK; a browser's subprotocol form) or WebRTC, with the configuration it was minted
for; a spent or expired key gets 401."""

import asyncio
import json

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from app import log_tools
from app.client_secrets import ClientSecretStore
from app.log_reader import read_session
from domain import records as rec
from domain.events import SessionUpdateRequested
from domain.session_config import SessionUpdate
from tests.realtime_client import sdk
from tests.rtc_client import RtcClient

KEY = "server-key"
server_key = pytest.mark.vocalis_settings(api_key=KEY)


async def mint(stack, body: dict, path: str = "/realtime/client_secrets", key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await http.post(stack.http_url + path, json=body, headers=headers)


async def refused_with(connecting) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connecting:
            pass
    return refused.value.response.status_code


@server_key
async def test_minting_takes_the_server_key_and_never_a_client_secret(stack):
    assert (await mint(stack, {}, key=None)).status_code == 401
    assert (await mint(stack, {}, key="wrong")).status_code == 401
    minted = await mint(stack, {})
    assert minted.status_code == 200
    again = await mint(stack, {}, key=minted.json()["value"])
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_api_key"
    bad = await mint(stack, {"expires_after": {"anchor": "created_at", "seconds": 5}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "expires_after.seconds"
    voice = await mint(stack, {"session": {"type": "realtime", "audio": {"output": {"voice": "nobody"}}}})
    assert voice.status_code == 400 and voice.json()["error"]["param"] == "session.audio.output.voice"


@server_key
async def test_a_client_secret_opens_one_websocket_session_with_its_configuration(stack):
    session = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
    minted = await mint(stack, {"expires_after": {"anchor": "created_at", "seconds": 60}, "session": session})
    body = minted.json()
    key, session_id = body["value"], body["session"]["id"]
    assert key.startswith("ek_") and body["session"]["type"] == "transcription"
    assert body["session"]["audio"]["input"]["turn_detection"] is None
    async with sdk(stack.ws_url, api_key=key).realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        updated = await conn.recv()
    assert created.session.id == session_id and created.session.type == "transcription"
    assert updated.type == "session.updated" and updated.session.audio.input.turn_detection is None
    assert await refused_with(sdk(stack.ws_url, api_key=key).realtime.connect(model="gpt-realtime")) == 401
    recorded = await read_session(stack.bus, session_id)  # the configuration is the first client event, and replays
    first = next(record for _, record in recorded.inputs if isinstance(record, rec.ClientEventReceived))
    assert isinstance(first.event, SessionUpdateRequested) and first.event.update.turn_detection is None
    assert log_tools.replay_recorded(recorded.inputs, recorded.outputs) is None


@server_key
async def test_a_browser_sends_its_client_secret_as_a_subprotocol(stack):
    key = (await mint(stack, {})).json()["value"]
    protocols = ["realtime", f"openai-insecure-api-key.{key}"]
    async with websockets.connect(f"{stack.ws_url}/realtime", subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"
    assert await refused_with(websockets.connect(f"{stack.ws_url}/realtime", subprotocols=protocols)) == 401


@server_key
async def test_a_beta_session_key_opens_a_beta_session(stack):
    minted = await mint(stack, {"instructions": "Be brief.", "voice": "alloy"}, path="/realtime/sessions")
    body = minted.json()
    assert body["object"] == "realtime.session" and body["client_secret"]["value"].startswith("ek_")
    assert body["instructions"] == "Be brief."
    client = sdk(stack.ws_url, api_key=body["client_secret"]["value"])
    async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
        created = await conn.recv()
        updated = await conn.recv()
    assert created.session.id == body["id"]
    assert (updated.type, updated.session.instructions) == ("session.updated", "Be brief.")


async def test_an_expired_client_secret_gets_401_even_without_a_server_key(stack):
    store = stack.services.client_secrets
    minted = await mint(stack, {}, key=None)  # no server key: anyone may mint
    update = (await store.spend(minted.json()["value"].encode())).update  # spent here: it opens nothing any more
    assert await refused_with(sdk(stack.ws_url, api_key=minted.json()["value"]).realtime.connect()) == 401
    key, _ = await store.keep("realtime", update, "sess_expiring", lifetime=1)
    await asyncio.sleep(1.5)
    assert await refused_with(sdk(stack.ws_url, api_key=key).realtime.connect()) == 401
    assert await refused_with(sdk(stack.ws_url, api_key="ek_unknown").realtime.connect()) == 401


@server_key
async def test_a_client_secret_opens_one_webrtc_call(stack):
    minted = await mint(stack, {"session": {"type": "transcription"}})
    key, session_id = minted.json()["value"], minted.json()["session"]["id"]
    client, again = RtcClient(), RtcClient()
    try:
        assert (await client.connect(stack.http_url + "/realtime", key=key)).status_code == 201
        created = await client.until(lambda e: e["type"] == "session.created")
        assert created["session"]["id"] == session_id and created["session"]["type"] == "transcription"
        refused = await again.connect(stack.http_url + "/realtime", key=key)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        hangup_url = stack.http_url.removesuffix("/v1") + client.location + "/hangup"
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert (await http.post(hangup_url)).status_code == 200
            async with asyncio.timeout(30):
                while client.pc.connectionState != "closed":  # the server closed the peer connection
                    await asyncio.sleep(0.05)
            assert (await http.post(hangup_url)).status_code == 404
    finally:
        await client.close()
        await again.close()


async def test_two_edges_spending_one_key_at_once_open_one_session(stack):
    edges = [ClientSecretStore(stack.bus), ClientSecretStore(stack.bus)]
    for _ in range(5):  # spend it from both at once, many times over: one of them, once
        key, _ = await edges[0].keep("realtime", SessionUpdateRequested(update=SessionUpdate()), "sess_race", 60)
        spent = await asyncio.gather(*(edge.spend(key.encode()) for edge in edges for _ in range(3)))
        assert sum(secret is not None for secret in spent) == 1


@server_key
async def test_the_official_sdk_mints_keys_and_places_calls(stack):
    client = sdk(stack.ws_url, api_key=KEY)
    minted = await client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 120},
        session={"type": "realtime", "instructions": "Be brief."},
    )
    assert minted.value.startswith("ek_") and minted.session.instructions == "Be brief."
    beta = await client.beta.realtime.sessions.create(voice="alloy", instructions="Hi.")
    assert beta.client_secret.value.startswith("ek_") and beta.instructions == "Hi."
    transcribing = await client.beta.realtime.transcription_sessions.create(
        input_audio_transcription={"model": "whisper-1", "language": "en"}, turn_detection=None
    )
    transcription_key = transcribing.client_secret.value
    async with sdk(stack.ws_url, api_key=transcription_key).beta.realtime.connect(model="whisper-1") as conn:
        created = await conn.recv()
        updated = await conn.recv()
    assert (created.type, created.session.object) == ("session.created", "realtime.transcription_session")
    assert updated.type == "transcription_session.updated", updated
    assert updated.session.turn_detection is None
    caller = RtcClient()
    try:
        # The server's own call (the unified interface): its key, and the session in a multipart body.
        answer = await client.realtime.calls.with_raw_response.create(
            sdp=await caller.offer(), session={"type": "transcription"}
        )
        assert answer.status_code == 201
        await caller.accept(answer.text)
        created = await caller.until(lambda e: e["type"] == "session.created")
        assert created["session"]["type"] == "transcription"
        await client.realtime.calls.hangup(answer.headers["location"].rsplit("/", 1)[1])
    finally:
        await caller.close()
