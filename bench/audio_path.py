"""What a session's audio costs on its way through Vocalis, apart from the models: three small profiles.

- `read_audio`: an STT worker reading a live decode's audio back from the log as soon as it is asked for (a real
  nats-server, started here): the time per read, and the nats-server CPU it takes.
- the edge's reducer: decoding the audio records it reads back from the log, and reducing them (`step`), per
  second of audio (100 ms appends, as a client streams them).
- live decoding of a 90 s turn that never pauses and whose decodes never agree (no word ever becomes stable):
  the seconds of audio the decodes cover, per second of speech, and the longest decode. Pure state machine, no
  model: each decode comes back, empty, as soon as it is asked for.

    .venv/bin/python -m bench.audio_path --label after      # writes bench/results/audio_path_after.json
"""

import argparse
import asyncio
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from app import runner
from app.bus import Bus, encode
from app.realtime.reducer import decode as edge_decode
from bench.report import percentile, save
from domain import records as rec
from domain.audio_time import MODEL_RATE, VAD_FRAME_SAMPLES
from domain.jobs import TranscribeJob
from domain.replay import advance
from domain.state import SessionState

APPEND_MS = 100
APPEND_SAMPLES = APPEND_MS * MODEL_RATE // 1000
SID = "sess_0123456789abcdef0123"
AT_MS = 1_700_000_000_000


def audio_record(index: int, speech: float = 0.9) -> rec.AudioReceived:
    """The `index`-th 100 ms append: noise (so nothing compresses), and the VAD frames it completes."""
    pcm = np.random.default_rng(index).integers(-3000, 3000, APPEND_SAMPLES, dtype="<i2").tobytes()
    start = index * APPEND_SAMPLES
    frames = (start + APPEND_SAMPLES) // VAD_FRAME_SAMPLES - start // VAD_FRAME_SAMPLES
    return rec.AudioReceived(
        at_ms=AT_MS + index * APPEND_MS, ticks=APPEND_SAMPLES * 3, pcm16k=pcm, speech_probs=(speech,) * frames
    )


def opened() -> rec.SessionOpened:
    return rec.SessionOpened(
        at_ms=AT_MS,
        session_id=SID,
        session_type="transcription",
        dialect="ga",
        default_stt_model="whisper-base",
        max_duration_s=3600,
    )


# --- the STT worker's read ----------------------------------------------------------------------------------


def nats_server_cpu_s() -> float:
    servers = [p for p in psutil.Process().children(recursive=True) if p.name() == "nats-server"]
    return float(sum(p.cpu_times().user + p.cpu_times().system for p in servers))


async def read_audio(window_s: float, reads: int) -> dict[str, Any]:
    """Live decoding as a worker sees it: every 800 ms of audio (8 appends, then a words record and a server
    event, as live decoding writes them), one read of the last `window_s` of it, as soon as it is asked for."""
    with tempfile.TemporaryDirectory() as tmp:
        async with runner.embedded_nats(Path(tmp) / "jetstream") as url:
            bus = await Bus.connect(url, "bench", "bench-audio-path")
            await bus.ensure_streams(max_age_s=3600, max_bytes=-1)
            s = bus.subjects
            per_window = round(window_s * 1000 / APPEND_MS)
            seqs: list[int] = []
            times: list[float] = []
            server_cpu = 0.0
            while len(times) < reads:
                for _ in range(8):
                    i = len(seqs)
                    seqs.append(
                        (await bus.publish(s.session_input(SID, "audio"), encode(audio_record(i)), f"a{i}")).seq
                    )
                await bus.publish(s.session_input(SID, "stt"), b'{"kind":"stt.words"}', f"w{len(seqs)}")
                await bus.publish(s.session_output(SID, "x"), b'{"type":"x"}', f"o{len(seqs)}")
                if len(seqs) < per_window:
                    continue
                cpu_before = nats_server_cpu_s()
                started = time.perf_counter()
                records = await bus.read_audio(SID, seqs[-per_window], seqs[-1])
                times.append(time.perf_counter() - started)
                server_cpu += nats_server_cpu_s() - cpu_before
                assert len(records) == per_window
            await bus.close()
    return {
        "window_s": window_s,
        "reads": reads,
        "p50_ms": round(percentile(times, 50) * 1000, 3),
        "p95_ms": round(percentile(times, 95) * 1000, 3),
        "nats_server_cpu_ms_per_read": round(server_cpu / reads * 1000, 3),
    }


# --- the edge's reducer -------------------------------------------------------------------------------------


def edge_reducer(seconds: int = 10, repeat: int = 20) -> dict[str, Any]:
    """Microseconds per second of audio: decoding its records as the edge's reducer does, and that plus `step`
    (a transcription session, server VAD, in silence: no turn, no job)."""
    payloads = [encode(audio_record(i, speech=0.0)) for i in range(seconds * 1000 // APPEND_MS)]
    state: SessionState = advance(None, opened(), 1).state

    def decode() -> None:
        for payload in payloads:
            edge_decode(payload)

    def decode_and_step() -> None:
        current = state
        for seq, payload in enumerate(payloads, start=2):
            current = advance(current, edge_decode(payload), seq).state

    def per_second(run: Any) -> float:
        best = min(timeit.repeat(run, number=1, repeat=repeat))
        return round(best / seconds * 1e6, 1)

    return {"decode_us_per_audio_s": per_second(decode), "decode_and_step_us_per_audio_s": per_second(decode_and_step)}


# --- live decodes of a long turn ----------------------------------------------------------------------------


def long_turn(seconds: int = 90) -> dict[str, Any]:
    """A turn of `seconds` of speech without a pause whose decodes find no words."""
    state: SessionState = advance(None, opened(), 1).state
    seq, windows = 1, []
    for i in range(seconds * 1000 // APPEND_MS):
        seq += 1
        transition = advance(state, audio_record(i), seq)
        state = transition.state
        for job in transition.jobs:
            assert isinstance(job, TranscribeJob) and job.words
            windows.append((job.end_sample - job.start_sample) / MODEL_RATE)
            seq += 1
            decoded = rec.WordsDecoded(
                at_ms=AT_MS,
                job_id=job.job_id,
                item_id=job.item_id,
                start_sample=job.start_sample,
                end_sample=job.end_sample,
                words=(),
                worker="bench",
            )
            state = advance(state, decoded, seq).state
    return {
        "turn_s": seconds,
        "decodes": len(windows),
        "decoded_audio_s_per_speech_s": round(sum(windows) / seconds, 2),
        "longest_decode_s": round(max(windows), 2),
        "mean_decode_s": round(statistics.mean(windows), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="the results file is audio_path_<label>.json")
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    reads = [asyncio.run(read_audio(window, args.reads)) for window in (4.0, 20.0)]
    edge, turn = edge_reducer(), long_turn()
    for r in reads:
        print(
            f"read_audio {r['window_s']:>4} s window: p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
            f"nats-server CPU {r['nats_server_cpu_ms_per_read']} ms per read"
        )
    print(
        f"edge reducer per second of audio: decode {edge['decode_us_per_audio_s']} us, "
        f"decode + step {edge['decode_and_step_us_per_audio_s']} us"
    )
    print(
        f"{turn['turn_s']} s turn, no stable word: {turn['decodes']} decodes, "
        f"{turn['decoded_audio_s_per_speech_s']} s of audio decoded per second of speech, "
        f"longest decode {turn['longest_decode_s']} s"
    )
    save(f"audio_path_{args.label}", {"read_audio": reads, "edge_reducer": edge, "long_turn": turn})


if __name__ == "__main__":
    main()
