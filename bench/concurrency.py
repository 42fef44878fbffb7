"""Concurrency: how many simultaneous transcription sessions keep the turn latency under a second.

For each N in `--sessions`, N sessions (the official SDK, `?intent=transcription`, server VAD with OpenAI's
defaults) each stream lecture_60s.wav in real time in 100 ms appends, session i starting i * stagger / N after the
first, so that their turns end within the stagger of each other: the bunched worst case, not a random arrival.
Stops after the first N whose p95 reaches `--stop-at-s`. With `--workload independent`, session i streams the
same speech begun at a pause near i / N of its length (and then its beginning), as independent speakers whose turns
end at unrelated moments. With `--workload meeting`, each session talks about a quarter of the time instead, as in
a meeting with one transcription session per participant: 15 s of the lecture, then 45 s of silence, over
`--meeting-s`, session i shifted by i * 60 s / N so that the talkers take turns (about N / 4 talk at any moment).
Per N:

    latency          speech_stopped -> ...transcription.completed, every turn of every session (p50, p95)
    first delta      speech_started -> the turn's first ...transcription.delta (when the server sends deltas)
    CPU              CPU seconds of the server's process tree over the run / N / audio seconds: cores per session;
                     the load generator's own CPU (this process: the SDK clients), apart
    memory           RSS of the server's process tree: peak, and (peak - idle RSS before the run) / N
    WER              in step only: each session's turns' transcripts, joined, against the file's reference
                     transcript (median over the sessions): whether the transcripts stay as good under load

Drives a running `vocalis serve`, whose process tree (itself and its nats-server) is found by the port it listens
on, or given by `--server-pid`. The client runs on the same machine and competes for its cores. Prints a table and
writes bench/results/concurrency_<model>[_<workload>].json and .png.

    .venv/bin/python -m bench.concurrency --url ws://127.0.0.1:8000/v1 --model whisper-base --sessions 1 2 3 4 6 8
    .venv/bin/python -m bench.concurrency --model whisper-base --no-incremental   # each turn decoded once it ends
    .venv/bin/python -m bench.concurrency --workload independent --sessions 4 8 10 12
    .venv/bin/python -m bench.concurrency --workload meeting --sessions 4 8 12 16
"""

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil
from openai import AsyncOpenAI

from bench.report import figure, percentile, save
from tests.realtime_client import REFERENCES, chunks, pcm24k, silence, word_error_rate

CHUNK_S = 0.1
MEETING_TALK_S = 15.0  # a participant speaks this long, then listens three times as long
MEETING_CYCLE_S = 60.0


class ServerProcess:
    """The server's process tree (`vocalis serve` and its children, nats-server included): summed RSS and CPU."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    @classmethod
    def find(cls, url: str, pid: int | None = None) -> "ServerProcess":
        """The process given by `pid`, else the one listening on the URL's port (seeing other users' sockets needs
        root)."""
        if pid is None:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "wss" else 80)
            listeners = {
                c.pid
                for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
            }
            if len(listeners) != 1:
                found = sorted(listeners) or "no process"
                raise SystemExit(f"found {found} listening on port {port}; pass --server-pid")
            pid = listeners.pop()
        return cls(pid)

    def _each(self, measure: Callable[[psutil.Process], float]) -> dict[str, float]:
        """`measure` of every live process of the tree, summed by process name."""
        totals: dict[str, float] = {}
        for process in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # a child may end meanwhile
                name = process.name()
                totals[name] = totals.get(name, 0.0) + measure(process)
        return totals

    def rss_mib_by_name(self) -> dict[str, float]:
        return self._each(lambda p: p.memory_info().rss / 2**20)

    def rss_mib(self) -> float:
        return sum(self.rss_mib_by_name().values())

    def cpu_s_by_name(self) -> dict[str, float]:
        """User + system CPU seconds; children_* holds the CPU of children that ended, so none is lost when one does."""

        def cpu(p: psutil.Process) -> float:
            t = p.cpu_times()
            return t.user + t.system + t.children_user + t.children_system

        return self._each(cpu)

    def cpu_s(self) -> float:
        return sum(self.cpu_s_by_name().values())


@dataclass
class Turn:
    """Client-side times (perf_counter) of one turn's events."""

    started: float | None = None
    stopped: float | None = None
    first_delta: float | None = None
    completed: float | None = None
    failed: bool = False
    transcript: str = ""

    @property
    def done(self) -> bool:
        return self.completed is not None or self.failed


async def paced(connection: Any, pcm: bytes, speed: float = 1.0) -> AsyncIterator[float]:
    """Append `pcm` in 100 ms chunks at `speed` x real time, yielding the audio seconds sent so far. Chunk k goes at
    start + k * 0.1 / speed on the monotonic clock, so time spent sending (or lost to other sessions) is caught up
    rather than added up, as sleep(0.1) after each chunk would."""
    start = time.monotonic()
    for k, chunk in enumerate(chunks(pcm, int(CHUNK_S * 1000))):
        delay = start + k * CHUNK_S / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await connection.input_audio_buffer.append(audio=chunk)
        yield (k + 1) * CHUNK_S


class Session:
    """One transcription session streaming `pcm` at `speed` x real time, timing its turns as its events arrive."""

    def __init__(self, url: str, model: str, pcm: bytes, speed: float = 1.0, incremental: bool = True) -> None:
        self.url, self.model, self.pcm, self.speed, self.incremental = url, model, pcm, speed, incremental
        self.turns: dict[str, Turn] = {}
        self.audio_s = 0.0  # sent so far
        self.errors: list[str] = []

    @property
    def completed(self) -> int:
        return sum(t.completed is not None for t in self.turns.values())

    @property
    def transcript(self) -> str:
        """Its turns' transcripts, in the order they were spoken."""
        spoken = sorted(self.turns.values(), key=lambda t: float("inf") if t.started is None else t.started)
        return " ".join(t.transcript for t in spoken)

    async def run(self, delay_s: float = 0.0, drain_timeout_s: float = 120.0) -> None:
        """Stream after `delay_s`, then wait until every turn that started has its transcript (or the timeout)."""
        client = AsyncOpenAI(api_key="bench", base_url=self.url.replace("ws", "http", 1), websocket_base_url=self.url)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            transcription = {"model": self.model, "incremental": self.incremental}
            input_ = {"transcription": transcription, "turn_detection": {"type": "server_vad"}}
            await conn.session.update(session={"type": "transcription", "audio": {"input": input_}})
            await asyncio.sleep(delay_s)
            sender = asyncio.create_task(self._send(conn))
            deadline = float("inf")
            # speech_started opens a turn, so one whose commit is still on its way under load is waited for too
            while not (sender.done() and all(t.done for t in self.turns.values())) and time.monotonic() < deadline:
                if sender.done() and deadline == float("inf"):
                    deadline = time.monotonic() + drain_timeout_s
                try:
                    event = await asyncio.wait_for(conn.recv(), 0.25)
                except TimeoutError:
                    continue
                self.see(event, time.perf_counter())
            await sender

    async def _send(self, conn: Any) -> None:
        async for sent_s in paced(conn, self.pcm, self.speed):
            self.audio_s = sent_s

    def see(self, event: Any, now: float) -> None:
        kind = event.type
        if kind == "input_audio_buffer.speech_started":
            self.turns.setdefault(event.item_id, Turn()).started = now
        elif kind == "input_audio_buffer.speech_stopped":
            self.turns.setdefault(event.item_id, Turn()).stopped = now
        elif kind == "conversation.item.input_audio_transcription.delta":
            turn = self.turns.get(event.item_id)  # never opens a turn: a delta for an unknown item would never close
            if turn and turn.first_delta is None:
                turn.first_delta = now
        elif kind == "conversation.item.input_audio_transcription.completed":
            turn = self.turns.setdefault(event.item_id, Turn())
            turn.completed, turn.transcript = now, event.transcript
        elif kind == "conversation.item.input_audio_transcription.failed":
            self.turns.setdefault(event.item_id, Turn()).failed = True
        elif kind == "error":
            self.errors.append(str(event.error.message))
            print(f"  error: {event.error.message}")


async def warm_up(url: str, model: str) -> None:
    """One short session, so that loading the model counts in neither the latencies nor the memory growth."""
    await Session(url, model, pcm24k("jfk.wav") + silence(1500), speed=4).run()


async def sample_every(interval_s: float, sample: Callable[[], None]) -> None:
    """Call `sample` every interval_s until cancelled; in a thread, as psutil blocks and events are being timed."""
    while True:
        await asyncio.to_thread(sample)
        await asyncio.sleep(interval_s)


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile, rounded; None (JSON null, unlike NaN) when there are no values."""
    return round(percentile(values, q), 4) if values else None


def show(value: float | None, width: int, digits: int = 3) -> str:
    return f"{'-' if value is None else f'{value:.{digits}f}':>{width}}"


def rotated(speech: bytes, fraction: float) -> bytes:
    """`speech` from its quietest 100 ms near `fraction` of its length to the end, then its beginning up to there:
    the same speech, begun at a pause elsewhere in it."""
    samples = np.frombuffer(speech, dtype="<i2").astype(np.float32)
    window = 2400  # 100 ms at 24 kHz
    target = round(fraction * len(samples) / window)
    near = range(max(0, target - 10), min(len(samples) // window, target + 10))  # within a second of it
    quietest = min(near, key=lambda w: float(np.mean(samples[w * window : (w + 1) * window] ** 2)), default=0)
    cut = 2 * quietest * window  # bytes
    return speech[cut:] + speech[:cut]


def meeting(speech: bytes, shift_s: float, total_s: float) -> bytes:
    """A participant's audio: `MEETING_TALK_S` of `speech` out of every `MEETING_CYCLE_S`, shifted by `shift_s`."""
    per_s = 48_000  # bytes of 24 kHz pcm16 per second
    talk = round(MEETING_TALK_S * per_s)
    pieces = [speech[i : i + talk] for i in range(0, len(speech), talk)]
    out = bytearray(silence(round(1000 * shift_s)))
    while len(out) < total_s * per_s:
        for piece in pieces:
            out += piece + silence(round(1000 * (MEETING_CYCLE_S - len(piece) / per_s)))
    return bytes(out[: round(total_s * per_s)]) + silence(1500)


async def measure(
    server: ServerProcess,
    url: str,
    model: str,
    pcms: list[bytes],
    stagger_s: float,
    incremental: bool,
    reference: str | None = None,
) -> dict[str, Any]:
    """A session per pcm at once: their turn latencies, and the server's CPU and memory over the run (and, given
    the reference transcript of every session's speech, their word error rate)."""
    n = len(pcms)
    await asyncio.sleep(2)  # let the previous run's work finish, so the idle RSS is idle
    idle_mib = peak_mib = server.rss_mib()

    def track_peak() -> None:
        nonlocal peak_mib
        peak_mib = max(peak_mib, server.rss_mib())

    sampler = asyncio.create_task(sample_every(0.5, track_peak))
    client = psutil.Process()
    cpu_before, client_before, wall_before = server.cpu_s(), sum(client.cpu_times()[:2]), time.monotonic()
    sessions = [Session(url, model, pcm, incremental=incremental) for pcm in pcms]
    await asyncio.gather(*(s.run(delay_s=i * stagger_s / n) for i, s in enumerate(sessions)))
    cpu_s, wall_s = server.cpu_s() - cpu_before, time.monotonic() - wall_before
    client_cpu_s = sum(client.cpu_times()[:2]) - client_before
    sampler.cancel()
    track_peak()
    turns = [t for s in sessions for t in s.turns.values()]
    latencies = [t.completed - t.stopped for t in turns if t.completed is not None and t.stopped is not None]
    first_deltas = [t.first_delta - t.started for t in turns if t.first_delta is not None and t.started is not None]
    audio_s = len(pcms[0]) / 48000
    wers = [word_error_rate(reference, s.transcript) for s in sessions] if reference is not None else []
    return {
        "sessions": n,
        "turns": len(turns),
        "transcribed": len(latencies),
        "failed": sum(t.failed for t in turns),
        "errors": sum(len(s.errors) for s in sessions),
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "max_s": pct(latencies, 100),
        "first_delta_p50_s": pct(first_deltas, 50),
        "first_delta_p95_s": pct(first_deltas, 95),
        "cpu_s": round(cpu_s, 2),
        "wall_s": round(wall_s, 2),
        "cores_per_session": round(cpu_s / n / audio_s, 4),
        "client_cpu_s": round(client_cpu_s, 2),
        "client_cores": round(client_cpu_s / wall_s, 3),
        "rss_idle_mib": round(idle_mib, 1),
        "rss_peak_mib": round(peak_mib, 1),
        "rss_increase_per_session_mib": round((peak_mib - idle_mib) / n, 1),
        "wer_median": None if reference is None else round(float(np.median(wers)), 4),
        "wer_max": None if reference is None else round(max(wers), 4),
        "latencies_s": [round(x, 4) for x in latencies],
    }


def under_target(row: dict[str, Any], target_s: float) -> bool:
    return row["p95_s"] is not None and row["p95_s"] < target_s  # no transcript at all is a miss


def plot(model: str, rows: list[dict[str, Any]], stop_at_s: float, incremental: bool, workload: str) -> Any:
    described = {"continuous": "", "independent": ", independent speakers", "meeting": ", meeting"}[workload]
    title = f"Concurrent transcription sessions ({model}{described}{'' if incremental else ', not incremental'})"
    fig, axes = figure(title, "sessions", "speech_stopped -> completed (s)")
    n = [r["sessions"] for r in rows]
    nan = float("nan")  # a gap in the line where a run had no transcript
    axes.plot(n, [nan if r["p95_s"] is None else r["p95_s"] for r in rows], "o-", color="tab:red", label="p95")
    axes.plot(n, [nan if r["p50_s"] is None else r["p50_s"] for r in rows], "o-", color="tab:blue", label="p50")
    axes.axhline(stop_at_s, color="grey", linestyle="--", label=f"{stop_at_s:g} s")
    axes.set_xticks(n)
    highest = max([stop_at_s, *(r["p95_s"] for r in rows if r["p95_s"] is not None)])
    axes.set_ylim(0, highest * 1.3)  # room above the line for the legend
    cpu = axes.twinx()  # a second scale: cores, not seconds
    cores = [r["cores_per_session"] for r in rows]
    cpu.plot(n, cores, "s:", color="tab:green", label="CPU per session")
    cpu.set_ylabel("server CPU per session (cores)")
    cpu.set_ylim(0, max(cores) * 2.5)  # keeps its line in the lower half, clear of the latencies' target line
    lines = axes.get_legend_handles_labels()
    more = cpu.get_legend_handles_labels()
    axes.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    return fig


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1")
    parser.add_argument("--server-pid", type=int, help="default: the process listening on the URL's port")
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    parser.add_argument("--stop-at-s", type=float, default=1.0, help="p95 target; stop after the first N reaching it")
    parser.add_argument("--stagger-s", type=float, default=0.5, help="session i starts i * stagger / N later")
    parser.add_argument("--wav", default="lecture_60s.wav")
    parser.add_argument("--no-incremental", action="store_true", help="transcribe each turn only once it ends")
    parser.add_argument("--workload", choices=("continuous", "independent", "meeting"), default="continuous")
    parser.add_argument("--meeting-s", type=float, default=120.0, help="the length of a meeting session's audio")
    args = parser.parse_args()
    incremental = not args.no_incremental
    server = ServerProcess.find(args.url, args.server_pid)
    speech = pcm24k(args.wav)
    closing = silence(1500)  # closes the last turn
    await warm_up(args.url, args.model)
    rows: list[dict[str, Any]] = []
    reference = REFERENCES.get(args.wav) if args.workload == "continuous" else None  # the others cut the speech up
    header = [("N", 3), ("turns", 7), ("p50 s", 8), ("p95 s", 8), ("delta p50", 10), ("cores/sess", 11)]
    more = [("peak MiB", 10), ("+MiB/sess", 10), ("client", 8), ("WER", 7)]
    print("".join(f"{name:>{width}}" for name, width in [*header, *more]))
    for n in args.sessions:
        if args.workload == "meeting":
            pcms = [meeting(speech, i * MEETING_CYCLE_S / n, args.meeting_s) for i in range(n)]
        elif args.workload == "independent":
            pcms = [rotated(speech, i / n) + closing for i in range(n)]
        else:
            pcms = [speech + closing] * n
        row = await measure(server, args.url, args.model, pcms, args.stagger_s, incremental, reference)
        rows.append(row)
        print(
            f"{n:>3}{row['turns']:>7}{show(row['p50_s'], 8)}{show(row['p95_s'], 8)}{show(row['first_delta_p50_s'], 10)}"
            f"{row['cores_per_session']:>11.3f}{row['rss_peak_mib']:>10.0f}{row['rss_increase_per_session_mib']:>10.1f}"
            f"{row['client_cores']:>8.2f}{show(row['wer_median'], 7)}"
        )
        if not under_target(row, args.stop_at_s):
            break
    under = [r["sessions"] for r in rows if under_target(r, args.stop_at_s)]
    max_sessions = max(under, default=0)
    cores = os.cpu_count() or 1
    print(f"largest N with p95 < {args.stop_at_s:g} s: {max_sessions or 'none'} ({max_sessions / cores:g} per core)")
    workload = "" if args.workload == "continuous" else f"_{args.workload}"
    save(
        f"concurrency_{Path(args.model).name}{workload}{'' if incremental else '_not_incremental'}",
        rows,
        plot(args.model, rows, args.stop_at_s, incremental, args.workload),
        model=args.model,
        incremental=incremental,
        wav=args.wav,
        stagger_s=args.stagger_s,
        stop_at_s=args.stop_at_s,
        max_sessions_under_target=max_sessions,
        sessions_per_core=max_sessions / cores,
        workload=args.workload,
    )


if __name__ == "__main__":
    asyncio.run(main())
