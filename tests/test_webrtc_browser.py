"""OpenAI's browser flow against Vocalis, in a real Chromium (headless, a fake microphone playing jfk.wav): a client
secret minted with the server's key, then a page of another origin POSTs its offer SDP with it to
`/v1/realtime/calls` (CORS), then events on `oai-events` and audio both ways. Skipped where Chromium or Playwright is
not installed (neither is a dependency of the suite)."""

import asyncio
import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.realtime_client import JFK, word_error_rate

playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium")
JFK_WAV = Path(__file__).resolve().parent / "data" / "jfk.wav"
JFK_SECONDS = 11

# What OpenAI's WebRTC guide does in a browser; nothing here knows it talks to Vocalis but the address.
CALL = """
async ({base, key}) => {
  const pc = new RTCPeerConnection();
  window.events = [];
  const channel = pc.createDataChannel("oai-events");
  channel.onmessage = (e) => window.events.push(JSON.parse(e.data));
  const microphone = await navigator.mediaDevices.getUserMedia({audio: true});
  pc.addTrack(microphone.getTracks()[0]);
  pc.ontrack = (e) => { window.remote = e.track; };
  await pc.setLocalDescription(await pc.createOffer());
  const answer = await fetch(base + "/v1/realtime/calls", {
    method: "POST", body: pc.localDescription.sdp,
    headers: {Authorization: "Bearer " + key, "Content-Type": "application/sdp"},
  });
  if (answer.status !== 201) return {status: answer.status};
  await pc.setRemoteDescription({type: "answer", sdp: await answer.text()});
  window.pc = pc;
  return {status: 201, location: answer.headers.get("Location")};
}
"""
COMPLETED = "conversation.item.input_audio_transcription.completed"
# The user is silent and every turn the VAD heard is transcribed.
ALL_TRANSCRIBED = f"""() => {{
  const count = (type) => window.events.filter((e) => e.type === type).length;
  const stopped = count("input_audio_buffer.speech_stopped");
  return stopped > 0 && count("input_audio_buffer.speech_started") === stopped && count("{COMPLETED}") === stopped;
}}"""
# The audio the browser received and sent, and with which codec.
STATS = """
async () => {
  const out = {};
  (await window.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") { out.received = s.packetsReceived; out.codec = s.codecId; }
    if (s.type === "outbound-rtp" && s.kind === "audio") out.sent = s.packetsSent;
    if (s.type === "codec") out[s.id] = s.mimeType;
  });
  out.state = window.pc.connectionState;
  return out;
}
"""


@contextlib.contextmanager
def page_origin(folder: Path) -> Iterator[str]:
    """A web server of its own for the page: another origin than Vocalis's."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.vocalis_settings(api_key="server-key")
async def test_openai_browser_flow_in_chromium(stack, tmp_path):
    async with httpx.AsyncClient(headers={"Authorization": "Bearer server-key"}) as client:
        minted = await client.post(
            stack.http_url + "/realtime/client_secrets", json={"session": {"type": "transcription"}}
        )
    key = minted.json()["value"]
    (tmp_path / "index.html").write_text("<!doctype html><title>console</title>")
    args = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={JFK_WAV}%noloop",
    ]
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = await browser.new_page()
            with page_origin(tmp_path) as origin:
                await page.goto(origin + "/index.html")  # loopback: a secure context, as getUserMedia wants
            base = f"http://127.0.0.1:{stack.settings.port}"
            call = await page.evaluate(CALL, {"base": base, "key": key})
            assert call["status"] == 201 and call["location"].startswith("/v1/realtime/calls/rtc_")
            await asyncio.sleep(JFK_SECONDS + 2)  # the fake microphone plays the file once, in real time
            await page.wait_for_function(ALL_TRANSCRIBED, timeout=60_000)
            stats = await page.evaluate(STATS)
            events = await page.evaluate("window.events")
        finally:
            await browser.close()
    assert stats["state"] == "connected" and stats["received"] > 0 and stats["sent"] > 0, stats
    assert stats[stats["codec"]] == "audio/opus", stats
    assert events[0]["type"] == "session.created"
    transcript = " ".join(e["transcript"] for e in events if e["type"] == COMPLETED)
    # Chromium's own processing of the microphone (noise suppression, gain) is on, as in a console: a looser bound.
    assert word_error_rate(JFK, transcript) < 0.5, transcript
