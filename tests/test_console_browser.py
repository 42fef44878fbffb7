"""The browser console, in a real headless Chromium whose fake microphone plays tests/data/jfk.wav: the page
shows the transcript, plays the assistant's audio, lists every event, and finds the session among the recorded
ones. Each test saves a screenshot under build/screenshots/.

Chromium is Debian's `chromium` (`scripts/install.sh --dev` installs it where it can), driven by Playwright."""

import asyncio
import json
import os
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Conversation, Stack

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright is installed by install.sh --dev")
CHROMIUM = os.environ.get("VOCALIS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no Chromium on this machine: `apt-get install chromium` (scripts/install.sh --dev does, as root)",
        allow_module_level=True,
    )

JFK = Path(__file__).parent / "data" / "jfk.wav"
SCREENSHOTS = Path(__file__).parent.parent / "build" / "screenshots"
REPLY = "Those words were spoken in nineteen sixty one."
# Long enough (about 10 s of speech) to be still playing when the microphone speaks again.
LONG_REPLY = (
    f"{REPLY} It was a cold day in Washington, and the new president spoke for fourteen minutes. "
    "Many people remember this one line above all the others he said that day."
)
pytestmark = pytest.mark.slow


@pytest.fixture
def microphone(tmp_path: Path) -> Path:
    """What the fake microphone says: JFK's speech, 6 s of silence (an answer plays), and his speech again, over
    the answer: a barge-in."""
    with wave.open(str(JFK)) as source:
        params, speech = source.getparams(), source.readframes(source.getnframes())
    said = tmp_path / "microphone.wav"
    with wave.open(str(said), "wb") as out:
        out.setparams(params)
        out.writeframes(speech + bytes(6 * params.framerate * params.sampwidth) + speech)
    return said


@pytest.fixture
async def browser(microphone: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",  # this machine's network is closed: no lookups at start
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",  # grant the microphone without asking
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _talk_through_jfk(page: Any, base_url: str, transport: str) -> str:
    """Connects with `transport`, talks through the fake microphone, and returns the session id once the page has
    the transcript and has played an answer."""
    await page.goto(f"{base_url}/?transport={transport}&mode=conversation&transcription_model=whisper-tiny.en")
    # The choices are what the server serves (GET /v1/models), not the page's fallbacks.
    await page.wait_for_selector('select[name="voice"] option[value="jf_alpha"]', state="attached")
    voices = await page.eval_on_selector_all('select[name="voice"] option', "options => options.map(o => o.value)")
    assert "jm_kumo" in voices and "alloy" not in voices
    await page.click("#connect")
    await page.wait_for_selector('#status[data-state="connected"]', timeout=20_000)
    assert await page.get_attribute("body", "data-transport") == transport
    await page.click("#mic")
    # JFK's speech, in VAD turns, transcribed while the page listens.
    await page.wait_for_function(
        "[...document.querySelectorAll('.turn.user:not(.partial) .text')].some(t => /country/i.test(t.textContent))",
        timeout=60_000,
    )
    await page.wait_for_selector(f'.turn.assistant:not(.partial) .text:text("{REPLY}")', timeout=60_000)
    heard = await _until_heard(page)
    assert heard, "the page played none of the answer's audio"
    return str(await page.get_attribute("body", "data-session"))


async def _until_heard(page: Any) -> dict[str, Any] | None:
    for _ in range(100):
        heard = await page.evaluate("window.vocalis.heard()")
        if heard and (heard.get("playedMs", 0) > 0 or heard.get("energy", 0) > 0):
            return dict(heard)
        await asyncio.sleep(0.2)
    return None


async def test_the_console_talks_over_a_websocket_and_lists_the_recorded_session(
    conversation: Conversation, browser: Any
) -> None:
    stack = conversation.stack
    stack.start_analytics()
    for _ in range(12):  # one answer per VAD turn of JFK's speech
        conversation.llm.reply(LONG_REPLY)
    base_url = f"http://127.0.0.1:{stack.settings.port}"
    page = await browser.new_page()
    page.on("console", lambda message: print("console:", message.text))
    try:
        session_id = await _talk_through_jfk(page, base_url, "websocket")

        # JFK speaks again over the answer: the page stops it and tells the server how much of it was heard.
        truncated = page.locator(".turn.assistant.truncated")
        await truncated.first.wait_for(state="attached", timeout=60_000)
        truncate = page.locator('#event-list li.client[data-type="conversation.item.truncate"]').first
        await truncate.click()
        sent = json.loads(await truncate.locator("pre").text_content() or "{}")
        assert sent["content_index"] == 0 and sent["audio_end_ms"] > 0
        assert await truncated.first.get_attribute("id") == f"item-{sent['item_id']}"

        # The event panel lists both directions, with the audio the page sent and the events of each turn.
        for kind in ("session.created", "input_audio_buffer.append", "input_audio_buffer.speech_stopped"):
            assert await page.locator(f'#event-list li[data-type="{kind}"]').count() > 0, kind
        await page.fill("#event-filter", "transcription.completed")
        visible = page.locator("#event-list li:visible")
        assert await visible.count() > 0
        assert {await row.get_attribute("data-type") for row in await visible.all()} == {
            "conversation.item.input_audio_transcription.completed"
        }
        # Each turn's latency, from speech_stopped to its transcript.
        first = await page.locator("#latency tbody tr").first.locator("td").nth(1).text_content()
        assert first is not None and first.strip().isdigit()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "console-websocket.png", full_page=True)

        await page.click("#mic")
        await page.click("#connect")  # disconnect
        await page.wait_for_selector('#status[data-state="idle"]')
        await page.click('nav button[data-view="sessions"]')
        card = page.locator(f'.session[data-session="{session_id}"]')
        for _ in range(50):  # the analytics subscriber folds the session in as its records arrive
            if await card.count():
                break
            await asyncio.sleep(0.2)
            await page.click("#refresh-sessions")
        assert await card.count() == 1
        assert "country" in (await card.locator(".utterances").text_content() or "").lower()
        await page.screenshot(path=SCREENSHOTS / "console-sessions.png", full_page=True)
        links = {await a.text_content(): await a.get_attribute("href") for a in await card.locator("a").all()}
        assert set(links) == {"SRT", "VTT", "Markdown", "JSONL", "WAV (zip)"}
        async with httpx.AsyncClient(base_url=base_url) as client:
            srt = await client.get(str(links["SRT"]))
            assert srt.status_code == 200 and "-->" in srt.text and "country" in srt.text.lower()
            wav = await client.get(str(links["WAV (zip)"]))
            assert wav.status_code == 200 and wav.content[:2] == b"PK"
    finally:
        await page.close()


async def test_the_console_talks_over_webrtc(conversation: Conversation, browser: Any) -> None:
    stack = conversation.stack
    for _ in range(8):
        conversation.llm.reply(REPLY)
    page = await browser.new_page()
    page.on("console", lambda message: print("console:", message.text))
    try:
        await _talk_through_jfk(page, f"http://127.0.0.1:{stack.settings.port}", "webrtc")
        # Over WebRTC the answer's audio comes on the track, and the data channel carries no audio deltas.
        assert await page.locator('#event-list li[data-type="output_audio_buffer.started"]').count() > 0
        assert await page.locator('#event-list li[data-type="response.output_audio.delta"]').count() == 0
        assert await page.locator('#event-list li[data-type="input_audio_buffer.append"]').count() == 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "console-webrtc.png", full_page=True)
    finally:
        await page.close()


KEY = "sk-console-browser"


@pytest.fixture
def secured(request: pytest.FixtureRequest, certificate: tuple[Path, Path]) -> None:
    """The `stack` requested after this fixture serves https and wants an API key."""
    cert, key = certificate
    request.node.add_marker(pytest.mark.vocalis_settings(tls_certfile=cert, tls_keyfile=key, api_key=KEY))


async def test_the_console_transcribes_over_https_with_the_servers_key(
    secured: None, stack: Stack, browser: Any
) -> None:
    stack.start_analytics()
    context = await browser.new_context(ignore_https_errors=True)  # the test's self-signed certificate
    page = await context.new_page()
    page.on("console", lambda message: print("console:", message.text))
    try:
        base_url = f"https://127.0.0.1:{stack.settings.port}"
        await page.goto(f"{base_url}/?transport=websocket&mode=transcription&transcription_model=whisper-tiny.en")
        await page.fill('input[name="api_key"]', KEY)
        await page.click("#connect")
        await page.wait_for_selector('#status[data-state="connected"]', timeout=20_000)
        await page.click("#mic")
        await page.wait_for_function(
            "[...document.querySelectorAll('.turn.user:not(.partial) .text')]"
            ".some(t => /your country/i.test(t.textContent))",
            timeout=60_000,
        )
        assert await page.locator(".turn.assistant").count() == 0
        session_id = await page.get_attribute("body", "data-session")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "console-transcription-https.png", full_page=True)
        await page.click('nav button[data-view="sessions"]')
        card = page.locator(f'.session[data-session="{session_id}"]')
        for _ in range(50):
            if await card.count():
                break
            await asyncio.sleep(0.2)
            await page.click("#refresh-sessions")
        assert await card.count() == 1  # listed with the key the page was given
    finally:
        await context.close()
