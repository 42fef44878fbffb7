"""Live transcription accuracy: the word error rate of transcripts built while the user speaks, and how soon
their first words come, against decoding each turn once it is over. Deterministic: no server, no clock.

A file is streamed in 100 ms appends through the edge's own audio path (G.711/pcm16 decoding, soxr, silero) into
the real state machine; every decode it asks for is run at once with the real transcriber, so decodes come at the
state machine's own pace (as with a worker that is never busy). The same file is run with incremental decoding on
and off (`transcription.incremental`), each after 0, 100, 200 and 300 ms of leading silence. Reported per model
and file: the mean WER against the reference transcript, the mean decodes run (the CPU cost), the turns whose
deltas do not add up to their transcript (must be 0), and the median audio time from a turn's start
(`audio_start_ms`, prefix padding included) to its first delta. Prints a table and writes
bench/results/live_accuracy.json and .png.

    .venv/bin/python -m bench.live_accuracy [--models whisper-tiny.en whisper-base] [--wavs jfk.wav lecture_60s.wav]
"""

import argparse
import base64
import statistics
from pathlib import Path
from typing import Any

from app.runner import transcriber
from app.settings import Settings
from bench.report import figure, save
from domain import events as ev
from domain import records as rec
from domain.jobs import TranscribeJob
from domain.session import open_session, step
from domain.session_config import SessionUpdate, TranscriptionUpdate
from handlers.input_audio.decode import InputAudio, to_pcm16
from handlers.input_audio.vad import SileroVad
from handlers.stt import Transcriber, WordsRequest
from handlers.stt_worker import turn_audio, words_decoded
from tests.realtime_client import REFERENCES, chunks, pcm24k, silence, word_error_rate

# Each file is run after these leads of silence too: decodes fall elsewhere in the speech, and whisper on a
# few seconds of audio is erratic enough that one phase can mislead.
LEADS_MS = (0, 100, 200, 300)


def run(stt: Transcriber, vad: SileroVad, model: str, wav: str, incremental: bool, lead_ms: int = 0) -> dict[str, Any]:
    """One file, after `lead_ms` of silence (which shifts where the decodes fall in the speech)."""
    opened = rec.SessionOpened(
        at_ms=0,
        session_id="sess_live_accuracy",
        session_type="transcription",
        dialect="ga",
        default_stt_model=model,
        max_duration_s=3600,
        transcription_model=model,
    )
    state = open_session(opened).state
    audio: dict[int, rec.AudioReceived] = {}
    events: list[tuple[int, ev.AnyServerEvent]] = []  # with the 16 kHz sample the stream had reached
    decodes = 0
    seq = 0
    samples = 0

    def feed(record: rec.Record) -> None:
        nonlocal state, seq, decodes
        queue = [record]
        while queue:
            seq += 1
            transition = step(state, queue.pop(0), seq)
            state = transition.state
            events.extend((samples, event) for event in transition.events)
            for job in transition.jobs:
                if isinstance(job, TranscribeJob):
                    decodes += 1
                    queue.append(decode(job))

    def decode(job: TranscribeJob) -> rec.Record:
        pcm = turn_audio(job, [audio[s] for s in range(job.first_seq, job.last_seq + 1) if s in audio])
        ((words, language),) = stt.words([WordsRequest(pcm, job.language, job.prompt)], job.model)
        return words_decoded(job, words, language, started_ms=0, worker="bench", at_ms=0)

    if not incremental:
        update = SessionUpdate(transcription=TranscriptionUpdate(incremental=False))
        feed(rec.ClientEventReceived(at_ms=0, event=ev.SessionUpdateRequested(update=update)))
    source, listener = InputAudio("pcm16"), vad.stream()
    for chunk in chunks(silence(lead_ms) + pcm24k(wav) + silence(1500)):
        for ticks, pcm in source.decode(base64.b64decode(chunk), 60):
            record = rec.AudioReceived(
                at_ms=0, ticks=ticks, pcm16k=to_pcm16(pcm), speech_probs=tuple(listener.feed(pcm))
            )
            audio[seq + 1] = record  # the sequence `feed` gives it
            samples += len(pcm)
            feed(record)

    starts = {e.item_id: e.audio_start_ms for _, e in events if isinstance(e, ev.SpeechStarted)}
    transcripts = {e.item_id: e.transcript for _, e in events if isinstance(e, ev.TranscriptCompleted)}
    deltas: dict[str, str] = {}
    first_delta_ms: dict[str, float] = {}
    for at, event in events:
        if isinstance(event, ev.TranscriptDelta):
            deltas[event.item_id] = deltas.get(event.item_id, "") + event.delta
            first_delta_ms.setdefault(event.item_id, at / 16 - starts.get(event.item_id, 0))
    lags = list(first_delta_ms.values())
    return {
        "model": model,
        "file": wav,
        "incremental": incremental,
        "turns": len(transcripts),
        "wer": round(word_error_rate(REFERENCES[wav], " ".join(transcripts.values())), 4),
        "decodes": decodes,
        "mismatches": sum(deltas.get(item, "") != text for item, text in transcripts.items()),
        "first_delta_p50_ms": round(statistics.median(lags)) if lags else None,
        "transcript": " ".join(transcripts.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["whisper-tiny.en", "whisper-base"])
    parser.add_argument("--wavs", nargs="+", default=["jfk.wav", "lecture_60s.wav"])
    args = parser.parse_args()
    settings = Settings.from_env()
    stt, vad = transcriber(settings), SileroVad()
    rows = []
    header = f"{'model':<17}{'file':<17}{'live':>5}{'turns':>6}{'WER':>7}{'decodes':>8}{'mismatch':>9}"
    print(f"{header}{'1st delta ms':>13}")
    for model in args.models:
        for wav in args.wavs:
            for incremental in (True, False):
                runs = [run(stt, vad, model, wav, incremental, lead) for lead in LEADS_MS]
                lags = [r["first_delta_p50_ms"] for r in runs if r["first_delta_p50_ms"] is not None]
                row = {
                    "model": model,
                    "file": wav,
                    "incremental": incremental,
                    "turns": runs[0]["turns"],
                    "wer": round(statistics.mean(r["wer"] for r in runs), 4),
                    "decodes": round(statistics.mean(r["decodes"] for r in runs), 1),
                    "mismatches": sum(r["mismatches"] for r in runs),
                    "first_delta_p50_ms": round(statistics.median(lags)) if lags else None,
                    "runs": runs,
                }
                rows.append(row)
                lag = "-" if row["first_delta_p50_ms"] is None else str(row["first_delta_p50_ms"])
                print(
                    f"{model:<17}{wav:<17}{'on' if incremental else 'off':>5}{row['turns']:>6}{row['wer']:>7.3f}"
                    f"{row['decodes']:>8.0f}{row['mismatches']:>9}{lag:>13}"
                )
    fig, axes = figure("Live transcription: word error rate", "", "WER")
    labels = [f"{Path(r['model']).name}\n{r['file']}" for r in rows if r["incremental"]]
    for offset, incremental in ((-0.2, True), (0.2, False)):
        values = [r["wer"] for r in rows if r["incremental"] is incremental]
        axes.bar([i + offset for i in range(len(values))], values, width=0.4, label="live" if incremental else "off")
    axes.set_xticks(range(len(labels)), labels)
    axes.legend()
    save("live_accuracy", rows, fig)


if __name__ == "__main__":
    main()
