"""Voice to voice: from the end of the user's voice to the first audio delta of the answer, stage by stage.

Starts `vocalis serve` (its own data directory and NATS) once per LLM: the scripted fake LLM of the tests
(instant replies) and the bundled model. Streams jfk.wav in real time with the turn detection's defaults (server
VAD ends a turn after 500 ms of silence, so the speech's pauses make turns of their own, each answered and barged in
on) and reads the stages of the answer to the last turn from the session's records on the log. Each stage is the
time from the end of the user's voice to the record that marks it:

    end of voice       the last 32 ms frame the VAD heard as voice (probability >= 0.35, as server VAD counts
                       voice while a turn is spoken), at the time its audio reached the log
    turn decided       input_audio_buffer.speech_stopped
    transcript         the decode (stt.words / stt.completed) whose transcript the answer's LLM request used
    first token        the answer's first llm.delta
    first clause text  the llm.delta that completed the answer's first clause (as domain.segmentation cuts it)
    first audio        the answer's first response.output_audio.delta

With speculation the answer's request can go out before the turn is decided, so the stages need not be in order.
Also per turn: the LLM requests the session started speculatively and threw away (`wasted`), and the answer's
prefill (prompt tokens, how many of them the LLM server had cached, and its prompt evaluation time).

With `--transport webrtc` the client is a WebRTC peer (aiortc, as a browser is one): jfk.wav goes on its microphone
track, and the client's own figure is the time from the last `speech_stopped` on the data channel to the first
audible frame of the answer on the remote track, so it includes Opus, the jitter buffer and the real-time pacing.

    .venv/bin/python -m bench.voice_latency --runs 5 [--llms fake bundled] [--turn-detection server_vad]
        [--transport websocket|webrtc]
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from openai import AsyncOpenAI

from app.bus import Bus
from app.log_reader import RecordedSession, read_session
from app.runner import free_port
from bench.report import figure, save
from domain import replay
from domain.segmentation import Segmenter, feed, flush
from tests.fake_llm import FakeLlm
from tests.realtime_client import chunks, pcm24k, silence
from tests.rtc_client import RtcClient

STAGES = (
    ("turn_decided_s", "turn decided"),
    ("transcript_s", "transcript"),
    ("first_token_s", "first token"),
    ("first_clause_text_s", "first clause text"),
    ("first_audio_s", "first audio"),
)
ANSWER = "Sure. Kennedy asked what you can do for your country, not the other way round."
AUDIBLE = 500  # peak of a 16-bit frame of the answer's voice on the WebRTC track (its silence is 0)
VOICE = 0.35  # server VAD's threshold (0.5) less 0.15: a frame it counts as voice while a turn is spoken
FRAME_MS = 32


async def one_turn(url: str, turn_detection: str) -> tuple[str, float]:
    """jfk.wav spoken in real time (its pauses may end turns of their own: every turn is answered, and barged in on,
    as it would be); the session id and the client's time from the last speech_stopped to its answer's first audio
    delta."""
    client = AsyncOpenAI(api_key="bench", base_url=url.replace("ws", "http", 1), websocket_base_url=url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        session_id = (await conn.recv()).session.id
        detection = {"type": turn_detection}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": detection}}})

        async def send() -> None:
            for chunk in chunks(pcm24k("jfk.wav") + silence(2500)):
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        stopped = answer = first_audio = None
        deadline = time.perf_counter() + 120
        while not (sender.done() and first_audio is not None) and time.perf_counter() < deadline:
            try:
                event = await asyncio.wait_for(conn.recv(), 0.2)
            except TimeoutError:
                continue
            if event.type == "input_audio_buffer.speech_stopped":
                stopped, answer, first_audio = time.perf_counter(), None, None
            elif event.type == "response.created" and stopped is not None:
                answer = event.response.id
            elif event.type == "response.output_audio.delta" and event.response_id == answer and first_audio is None:
                first_audio = time.perf_counter() - (stopped or 0.0)
        finish = time.perf_counter() + 15  # the answer's LLM request ends (llm.done says what its prompt cost)
        while first_audio is not None and time.perf_counter() < finish:
            try:
                event = await asyncio.wait_for(conn.recv(), 0.2)
            except TimeoutError:
                continue
            if event.type == "response.done" and event.response.id == answer:
                break
        else:
            await conn.response.cancel()
        sender.cancel()
    if first_audio is None:
        raise RuntimeError(f"{session_id}: no answer after the last turn")
    return session_id, first_audio


class TimedRtcClient(RtcClient):
    """Notes when the first audible frame arrives on the remote track after `listen()`."""

    def __init__(self) -> None:
        super().__init__()
        self.audible_at: float | None = None
        self._listening = False

    def listen(self) -> None:
        self.audible_at, self._listening = None, True

    def _hear(self, samples: np.ndarray) -> None:
        super()._hear(samples)
        if self._listening and self.audible_at is None and int(np.abs(samples.astype(np.int32)).max()) >= AUDIBLE:
            self.audible_at = time.perf_counter()


async def one_call(url: str, turn_detection: str) -> tuple[str, float]:
    """As `one_turn`, over WebRTC: the session id and the client's time from the last speech_stopped to the first
    audible frame of its answer on the track."""
    client = TimedRtcClient()
    try:
        answer = await client.connect(url.replace("ws", "http", 1) + "/realtime")
        if answer.status_code != 201:
            raise RuntimeError(f"the call was refused: {answer.status_code} {answer.text}")
        created = await client.until(lambda e: e["type"] == "session.created")
        detection = {"type": turn_detection}
        client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": detection}}},
            }
        )
        client.microphone.say(pcm24k("jfk.wav") + silence(2500))
        seen, stopped_at, heard = 0, None, None
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline and not (client.microphone.spoken.is_set() and heard is not None):
            await asyncio.sleep(0.01)
            for event in client.events[seen:]:
                if event["type"] == "input_audio_buffer.speech_stopped":
                    stopped_at, heard = time.perf_counter(), None
                    client.listen()
            seen = len(client.events)
            if stopped_at is not None and heard is None and client.audible_at is not None:
                heard = client.audible_at - stopped_at
        await asyncio.sleep(3)  # the answer's LLM request ends (llm.done says what its prompt cost)
    finally:
        await client.close()
    if heard is None:
        raise RuntimeError(f"{created['session']['id']}: no answer heard after the last turn")
    return str(created["session"]["id"]), heard


def stages(session: RecordedSession) -> dict[str, float] | None:
    """The stages of the answer to the session's last turn (seconds from the end of its voice), or None while one is
    missing."""
    records = [(e.at_ms, json.loads(e.data)) for e in session.entries]
    kinds = [d.get("kind") or d.get("type") for _, d in records]
    if "input_audio_buffer.speech_stopped" not in kinds:
        return None
    last_stop = len(kinds) - 1 - kinds[::-1].index("input_audio_buffer.speech_stopped")
    created = next(
        (d for k, (_, d) in zip(kinds[last_stop:], records[last_stop:], strict=True) if k == "response.created"), None
    )
    if created is None:
        return None
    answer = created["response"]["id"]
    at: dict[str, float] = {"turn_decided": records[last_stop][0]}
    segmenter = Segmenter()
    transcript_at = None
    for index, ((at_ms, d), kind) in enumerate(zip(records, kinds, strict=True)):
        if kind == "audio.received" and index < last_stop:
            probs = d.get("speech_probs") or ()
            for i, p in enumerate(probs):
                if p >= VOICE:  # the record's last frame ends when it reached the log
                    at["end_of_voice"] = at_ms - (len(probs) - 1 - i) * FRAME_MS
        elif kind in ("stt.completed", "stt.words") and "first_token" not in at:
            transcript_at = at_ms  # a whole item's transcript, or a decode of a VAD turn
        elif kind in ("llm.delta", "llm.done") and d.get("response_id") == answer:
            if "first_token" not in at:
                at["first_token"] = at_ms
                at["transcript"] = transcript_at if transcript_at is not None else at_ms
            if "first_clause_text" not in at:
                segmenter, clauses = feed(segmenter, d.get("text", "")) if kind == "llm.delta" else flush(segmenter)
                if clauses:
                    at["first_clause_text"] = at_ms
            if kind == "llm.done":
                at["prompt_tokens"] = d.get("input_tokens", 0)
                at["cached_tokens"] = d.get("cached_tokens", 0)
                at["prefill_ms"] = d.get("prefill_ms") or float("nan")
        elif kind == "response.output_audio.delta" and d.get("response_id") == answer:
            at.setdefault("first_audio", at_ms)
    if not {"end_of_voice", "first_clause_text", "first_audio"} <= at.keys():
        return None
    final = None
    for transition in replay.transitions(session.inputs):
        final = transition.state
    row = {key: (at[key.removesuffix("_s")] - at["end_of_voice"]) / 1000 for key, _ in STAGES}
    row["turns"] = kinds.count("input_audio_buffer.speech_stopped")
    row["wasted"] = getattr(final, "speculations_wasted", 0)
    row["speculation_used"] = getattr(final, "speculations_used", 0)
    for key in ("prompt_tokens", "cached_tokens", "prefill_ms"):
        row[key] = at.get(key, float("nan"))
    return row


async def read_stages(bus: Bus, session_id: str) -> dict[str, float]:
    for _ in range(100):
        row = stages(await read_session(bus, session_id))
        if row is not None and "nan" not in str(row.get("prompt_tokens")):
            return row
        await asyncio.sleep(0.1)
    if row is not None:
        return row
    raise RuntimeError(f"the log of {session_id} lacks a stage")


async def measure(
    llm: str, runs: int, fake: FakeLlm | None, turn_detection: str, transport: str = "websocket"
) -> dict[str, object]:
    port, nats_port = free_port(), free_port()
    env = os.environ | {"VOCALIS_PORT": str(port), "VOCALIS_NATS_PORT": str(nats_port), "VOCALIS_LOG_FORMAT": "json"}
    if fake is not None:
        env["VOCALIS_LLM_BASE_URL"] = fake.base_url
    with tempfile.TemporaryDirectory() as data:
        env["VOCALIS_DATA_DIR"] = data
        env.setdefault("VOCALIS_MODEL_DIR", str(Path.home() / ".local/share/vocalis/models"))
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "serve", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(1200):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/live")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            await asyncio.sleep(15 if fake is None else 3)  # the workers load their models
            bus = await Bus.connect((Path(data) / "nats.url").read_text(), "vocalis", "bench")  # with its password
            rows = []
            for _ in range(runs + 1):  # the first run warms up and is not counted
                if fake is not None:
                    fake.replies.clear()
                    for _ in range(10):  # speculative requests thrown away take replies too
                        fake.reply(ANSWER)
                talk = one_call if transport == "webrtc" else one_turn
                session_id, client = await talk(f"ws://127.0.0.1:{port}/v1", turn_detection)
                rows.append({**await read_stages(bus, session_id), "client_stopped_to_audio_s": client})
                await asyncio.sleep(1)  # the cancelled answer's work ends
            await bus.close()
        finally:
            server.send_signal(signal.SIGINT)
            await asyncio.wait_for(server.wait(), 60)
    rows = rows[1:]
    medians = {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
    return {
        "llm": llm,
        "turn_detection": turn_detection,
        "transport": transport,
        "runs": runs,
        "median": medians,
        "runs_detail": rows,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llms", nargs="+", default=["fake", "bundled"], choices=["fake", "bundled"])
    parser.add_argument("--turn-detection", default="server_vad", choices=["server_vad", "semantic_vad"])
    parser.add_argument("--transport", default="websocket", choices=["websocket", "webrtc"])
    parser.add_argument("--name", default="voice_latency", help="the results' file name in bench/results")
    args = parser.parse_args()
    results = []
    for llm in args.llms:
        if llm == "fake":
            async with FakeLlm() as fake:
                results.append(await measure("fake (instant)", args.runs, fake, args.turn_detection, args.transport))
        else:
            bundled = "bundled qwen2.5-coder-1.5b"
            results.append(await measure(bundled, args.runs, None, args.turn_detection, args.transport))
    print(f"from the end of the voice, {args.turn_detection}, over {args.transport} (medians, seconds)")
    print(
        f"{'LLM':<28}"
        + "".join(f"{label:>19}" for _, label in STAGES)
        + f"{'wasted':>8}{'prompt':>8}{'cached':>8}{'prefill ms':>11}{'client':>8}"
    )
    for r in results:
        m = r["median"]
        print(
            f"{r['llm']:<28}"
            + "".join(f"{m[key]:>19.3f}" for key, _ in STAGES)
            + f"{m['wasted']:>8}{m['prompt_tokens']:>8}{m['cached_tokens']:>8}{m['prefill_ms']:>11}"
            + f"{m['client_stopped_to_audio_s']:>8.3f}"
        )
    figure_ = plot(results, args.turn_detection)
    save(args.name, results, figure_, runs=args.runs, turn_detection=args.turn_detection, transport=args.transport)


def plot(results: list[dict[str, Any]], turn_detection: str) -> Any:
    """One group of bars per LLM: when each stage was reached, from the end of the voice (medians)."""
    fig, axes = figure(f"Voice to voice, {turn_detection}: from the end of the voice (medians)", "", "seconds")
    width = 0.8 / len(STAGES)
    for n, (key, label) in enumerate(STAGES):
        xs = [i + (n - len(STAGES) / 2 + 0.5) * width for i in range(len(results))]
        axes.bar(xs, [r["median"][key] for r in results], width=width, label=label)
    axes.set_xticks(range(len(results)), [r["llm"] for r in results])
    axes.legend()
    return fig


if __name__ == "__main__":
    asyncio.run(main())
