"""Edge and bus overhead: the round trip of a client event that needs no model, timed by the client and by the
server's own timestamps.

Drives a running Vocalis (`vocalis serve`) exactly as a client would: the official SDK, in transcription sessions
(no LLM). Every session sends `session.update` and `input_audio_buffer.clear` by turns, each after the reply to
the one before, and times each from the send to its reply (`session.updated`, `input_audio_buffer.cleared`): the
edge, the log on JetStream, the reducer and back, with no model in the way. Then it reads the sessions' records
back from the log and times the same requests on the server, from the `Vocalis-Sent-Ns` header the edge stamps on
each record it publishes (epoch ns) and JetStream's own timestamp of each stored message:

    server           the client event's record handed to NATS -> its reply handed to NATS (the edge sends the reply
                     to the client just before): the edge's and the bus's part of the round trip
    publish          the client event's record handed to NATS -> stored by JetStream
    reduce           stored -> the reply handed to NATS: delivery to the session's reducer, the state machine, the
                     reply rendered and sent

With `--interval-ms`, each session sends a request every that many milliseconds (on a fixed schedule, like a client
appending audio every 100 ms) instead of as soon as it has the previous reply: the load of live sessions rather than
of sessions that do nothing but ask, which measures how long the edge's one event loop queues requests.

Not included: reading and decoding the frame before its record is published (tens of microseconds). Also measures
the CPU seconds of the client (this process, the SDK's sessions) and of the server's process tree (`vocalis serve`
and its nats-server, found by the port it listens on) over each run, since they share the machine. Run at several
numbers of concurrent sessions; prints p50 and p99 per event type and writes bench/results/edge_overhead.json and
.png. The log is found as the log tools find it (VOCALIS_NATS_URL, else the `serve` of VOCALIS_DATA_DIR).

    .venv/bin/python -m bench.edge_overhead --url ws://127.0.0.1:8000/v1 --sessions 1 10 50 --requests 200
    .venv/bin/python -m bench.edge_overhead --sessions 50 --interval-ms 100   # paced, as live sessions are
"""

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import api
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from app import runner
from app.bus import SENT_NS, Bus
from app.settings import Settings
from bench.concurrency import ServerProcess
from bench.report import figure, percentile, save

REPLIES = {"session.update": "session.updated", "input_audio_buffer.clear": "input_audio_buffer.cleared"}
WARMUP = 5  # round trips per event type and session left out: the first ones pay for setting the session up
# Manual commits: nothing else (VAD, transcription) runs in the session while it is measured.
SESSION = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
SPANS = ("client", "server", "publish", "reduce")


@dataclass
class Measured:
    """One run's times in ms per event type and span, and the CPU seconds it took."""

    ms: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {kind: {span: [] for span in SPANS} for kind in REPLIES}
    )
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)


async def round_trip(conn: AsyncRealtimeConnection, event: dict[str, Any]) -> float:
    """Seconds from sending `event` to receiving its reply."""
    start = time.perf_counter()
    await conn.send(event)  # type: ignore[arg-type]  # a plain dict is sent as it is
    while True:
        # Raw bytes and json, not the SDK's pydantic models: the client's parsing is not what is measured.
        reply = json.loads(await conn.recv_bytes())
        if reply["type"] == REPLIES[event["type"]]:
            return time.perf_counter() - start
        if reply["type"] == "error":
            raise RuntimeError(f"{event['type']}: {reply['error']}")


def event_id(kind: str, i: int) -> str:
    return f"evt_{kind}_{i}"


async def one_session(
    url: str, requests: int, ready: asyncio.Barrier, interval_s: float
) -> tuple[str, dict[str, list[float]]]:
    """The session's id and its measured round trips (ms) per event type, after every session has connected; one
    request every `interval_s` (0: each as soon as the one before has its reply)."""
    client = AsyncOpenAI(api_key="bench", base_url=url.replace("ws", "http", 1), websocket_base_url=url)
    times: dict[str, list[float]] = {kind: [] for kind in REPLIES}
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        session_id = json.loads(await conn.recv_bytes())["session"]["id"]  # session.created
        await ready.wait()  # so that the sessions really overlap
        # Sessions spread over the interval, as clients that connected at different times are.
        start = time.monotonic() + random.random() * interval_s
        sent = 0
        for i in range(WARMUP + requests):
            for kind in REPLIES:
                if interval_s and (delay := start + sent * interval_s - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                sent += 1
                body = {"session": SESSION} if kind == "session.update" else {}
                elapsed = await round_trip(conn, {"type": kind, "event_id": event_id(kind, i), **body})
                if i >= WARMUP:
                    times[kind].append(elapsed * 1000)
    return session_id, times


async def records(bus: Bus, session_id: str) -> list[Msg]:
    """The session's records as stored, headers and JetStream metadata included (the log tools keep neither)."""
    sub = await bus.js.pull_subscribe(
        f"{bus.subjects.prefix}.session.{session_id}.>",
        stream=bus.subjects.sessions_stream,
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE),
    )
    found: list[Msg] = []
    try:
        while not found or found[-1].metadata.num_pending:
            try:
                found += await sub.fetch(1000, timeout=2)
            except nats.errors.TimeoutError:
                break
    finally:
        await sub.unsubscribe()
    return found


def server_times(messages: list[Msg], measured: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """Per event type, the server-side spans (ms) of the requests `measured` has (event id: event type): each
    client event's record paired with the next reply of its kind (a session sends one request at a time)."""
    times: dict[str, dict[str, list[float]]] = {kind: {span: [] for span in SPANS[1:]} for kind in REPLIES}
    asked: tuple[str, int, float] | None = None  # the event type, when sent (ns) and stored (ns) of the open request
    for message in messages:
        sent_ns = int((message.headers or {})[SENT_NS])
        stored_ns = message.metadata.timestamp.timestamp() * 1e9  # microseconds, as nats-py parses it
        kind = message.subject.split(".", 3)[3]
        if kind == "in.client":
            event = json.loads(message.data)["event"]
            asked = (measured[event["event_id"]], sent_ns, stored_ns) if event["event_id"] in measured else None
        elif asked is not None and kind == f"out.{REPLIES[asked[0]]}":
            event_type, asked_ns, stored_asked_ns = asked
            times[event_type]["server"].append((sent_ns - asked_ns) / 1e6)
            times[event_type]["publish"].append((stored_asked_ns - asked_ns) / 1e6)
            times[event_type]["reduce"].append((sent_ns - stored_asked_ns) / 1e6)
            asked = None
    return times


async def run(url: str, sessions: int, requests: int, interval_s: float, server: ServerProcess, bus: Bus) -> Measured:
    """Every session's times pooled per event type and span, and the run's CPU: the client's and the server's."""
    ready = asyncio.Barrier(sessions)
    measured = Measured()
    server_cpu, client_cpu, start = server.cpu_s_by_name(), time.process_time(), time.perf_counter()
    done = await asyncio.gather(*(one_session(url, requests, ready, interval_s) for _ in range(sessions)))
    measured.wall_s = time.perf_counter() - start
    measured.client_cpu_s = time.process_time() - client_cpu
    after = server.cpu_s_by_name()
    measured.server_cpu_s = {name: after[name] - server_cpu.get(name, 0.0) for name in after}
    ids = {event_id(kind, i): kind for kind in REPLIES for i in range(WARMUP, WARMUP + requests)}
    for session_id, client_ms in done:
        on_server = server_times(await records(bus, session_id), ids)
        for kind in REPLIES:
            measured.ms[kind]["client"] += client_ms[kind]
            for span, values in on_server[kind].items():
                measured.ms[kind][span] += values
    return measured


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 50], help="concurrent sessions")
    parser.add_argument("--requests", type=int, default=200, help="round trips per event type and session")
    parser.add_argument("--server-pid", type=int, help="the server's process, if not the one listening on --url")
    parser.add_argument("--interval-ms", type=float, default=0, help="a request per session this often (0: at once)")
    args = parser.parse_args()
    server = ServerProcess.find(args.url, args.server_pid)
    settings = Settings.from_env()
    bus = await Bus.connect(runner.recorded_nats_url(settings), settings.subject_prefix, "bench-edge-overhead")
    results: list[dict[str, Any]] = []
    print(f"{'sessions':>8}  {'event':<26}{'span':<9}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    try:
        for sessions in args.sessions:
            measured = await run(args.url, sessions, args.requests, args.interval_ms / 1000, server, bus)
            for kind in REPLIES:
                for span in SPANS:
                    ms = measured.ms[kind][span]
                    row = {
                        "sessions": sessions,
                        "event": kind,
                        "reply": REPLIES[kind],
                        "span": span,
                        "n": len(ms),
                        "p50_ms": round(percentile(ms, 50), 3),
                        "p99_ms": round(percentile(ms, 99), 3),
                        "max_ms": round(max(ms), 3),
                        "wall_s": round(measured.wall_s, 2),  # the whole run, connecting included
                        "client_cpu_s": round(measured.client_cpu_s, 2),
                        "server_cpu_s": {name: round(s, 2) for name, s in measured.server_cpu_s.items()},
                    }
                    results.append(row)
                    stats = "".join(f"{row[k]:>9.2f}" for k in ("p50_ms", "p99_ms", "max_ms"))
                    print(f"{sessions:>8}  {kind:<26}{span:<9}{len(ms):>7}{stats}")
            cpu = ", ".join(f"{name} {s:.1f}" for name, s in measured.server_cpu_s.items())
            print(f"{'':>8}  CPU s over {measured.wall_s:.1f} s: client {measured.client_cpu_s:.1f}; server {cpu}")
    finally:
        await bus.close()
    fig, axes = figure("Client event to its reply, no model", "concurrent sessions", "ms")
    for kind, color in zip(REPLIES, ("tab:blue", "tab:orange"), strict=True):
        for span, style in (("client", "-"), ("server", "--")):
            rows = [r for r in results if r["event"] == kind and r["span"] == span]
            for stat, marker in (("p50_ms", "o"), ("p99_ms", "s")):
                x, y = [r["sessions"] for r in rows], [r[stat] for r in rows]
                axes.plot(x, y, style + marker, color=color, label=f"{kind} {span} {stat[:3]}")
    axes.axhline(5, color="grey", linewidth=0.8, linestyle=":", label="target: server p99 5 ms")
    axes.set_xscale("log")
    axes.set_yscale("log")  # from one session to fifty, the round trip grows by an order of magnitude
    axes.set_xticks(args.sessions, [str(n) for n in args.sessions])
    axes.legend(fontsize=7)
    paced = f"_every_{args.interval_ms:g}ms" if args.interval_ms else ""
    save(
        f"edge_overhead{paced}",
        results,
        fig,
        url=args.url,
        requests=args.requests,
        warmup=WARMUP,
        interval_ms=args.interval_ms,
    )


if __name__ == "__main__":
    asyncio.run(main())
