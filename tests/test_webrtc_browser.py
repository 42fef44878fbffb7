"""OpenAI's browser flow against Vocalis, in a real Chromium (headless, a fake microphone playing jfk.wav): mint a
client secret, POST the offer SDP with it to `/v1/realtime/calls`, then events on `oai-events` and audio both ways.
Skipped where Chromium or Playwright is not installed (neither is a dependency of the suite)."""

import shutil
from pathlib import Path

import httpx
import pytest

from tests.realtime_client import JFK, word_error_rate

playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium")
JFK_WAV = Path(__file__).resolve().parent / "data" / "jfk.wav"

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


async def test_openai_browser_flow_in_chromium(stack):
    async with httpx.AsyncClient() as http:
        minted = await http.post(
            stack.http_url + "/realtime/client_secrets", json={"session": {"type": "transcription"}}
        )
    key = minted.json()["value"]
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
            base = f"http://127.0.0.1:{stack.settings.port}"
            await page.goto(base + "/live")  # a page of the server's origin (getUserMedia wants a secure context)
            call = await page.evaluate(CALL, {"base": base, "key": key})
            assert call["status"] == 201 and call["location"].startswith("/v1/realtime/calls/rtc_")
            await page.wait_for_function(
                "window.events.some((e) => e.type.endsWith('input_audio_transcription.completed'))", timeout=90_000
            )
            stats = await page.evaluate(STATS)
            events = await page.evaluate("window.events")
        finally:
            await browser.close()
    assert stats["state"] == "connected" and stats["received"] > 0 and stats["sent"] > 0, stats
    assert stats[stats["codec"]] == "audio/opus", stats
    assert events[0]["type"] == "session.created"
    first = next(e for e in events if e["type"].endswith("input_audio_transcription.completed"))
    assert word_error_rate(JFK.split(",")[0], first["transcript"]) < 0.5, first["transcript"]
