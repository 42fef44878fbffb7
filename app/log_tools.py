"""The log as a debugging tool: `vocalis sessions`, `tail`, `replay` and `export`."""

import fnmatch
import json
import re
import wave
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.js import api

from app.analytics import LogEntry, entry_of, session_of, summarize
from app.bus import Bus, decode_record
from app.log_reader import RecordedSession, read_entries, subject_counts
from domain import records as rec
from domain.audio_time import MODEL_RATE, SAMPLES_PER_MS
from domain.events import (
    AnyServerEvent,
    AudioCommitted,
    OutputAudioDelta,
    ResponseCreated,
    SpeechStarted,
    SpeechStopped,
)
from domain.jobs import TranscribeJob
from domain.replay import Divergence, compare, cut_off, replay, transitions
from domain.transcripts import to_markdown, to_srt, to_vtt
from handlers.input_audio.decode import g711_to_pcm16
from handlers.ports import now_ms
from handlers.stt_worker import turn_audio

# --- sessions -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    started_at_ms: int
    mode: str
    duration_ms: int
    turns: int
    state: str


def parse_when(text: str, now_ms: int) -> int:
    """Epoch ms for an ISO time (`2026-11-25T20:00`) or an age (`90s`, `30m`, `2h`, `7d`)."""
    if age := re.fullmatch(r"(\d+)([smhd])", text):
        return now_ms - int(age[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[age[2]] * 1000
    moment = datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


async def list_sessions(
    bus: Bus, since_ms: int | None = None, until_ms: int | None = None, mode: str | None = None
) -> list[SessionRow]:
    """Sessions on the log, newest first."""
    prefix = bus.subjects.prefix
    opened: dict[str, rec.SessionOpened] = {}
    ended: dict[str, int] = {}
    for entry in await read_entries(bus, f"{prefix}.session.*.in.edge"):
        record = decode_record(entry.data)
        if isinstance(record, rec.SessionOpened):
            opened[record.session_id] = record
        elif isinstance(record, rec.SessionClosed | rec.SessionExpired):
            ended.setdefault(session_of(entry.subject), record.at_ms)
    turns = {
        session_of(subject): count
        for subject, count in (
            await subject_counts(bus, f"{prefix}.session.*.out.input_audio_buffer.committed")
        ).items()
    }
    now = now_ms()
    rows = [
        SessionRow(
            session_id=sid,
            started_at_ms=o.at_ms,
            mode=o.session_type,
            duration_ms=ended.get(sid, now) - o.at_ms,
            turns=turns.get(sid, 0),
            state="ended" if sid in ended else "live",
        )
        for sid, o in opened.items()
        if (since_ms is None or o.at_ms >= since_ms)
        and (until_ms is None or o.at_ms <= until_ms)
        and (mode is None or o.session_type == mode)
    ]
    return sorted(rows, key=lambda r: r.started_at_ms, reverse=True)


def format_sessions(rows: list[SessionRow]) -> str:
    lines = [f"{'session':<26}{'started (UTC)':<22}{'mode':<15}{'duration':>10}{'turns':>7}  state"]
    for r in rows:
        started = datetime.fromtimestamp(r.started_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{r.session_id:<26}{started:<22}{r.mode:<15}{r.duration_ms / 1000:>9.1f}s{r.turns:>7}  {r.state}")
    return "\n".join(lines)


# --- tail ---------------------------------------------------------------------------------------------------


ENDINGS = frozenset({"session.closed", "session.expired"})
ENDED_SESSION_QUIET_S = 2.0


def entry_type(entry: LogEntry) -> str:
    body = json.loads(entry.data)
    return str(body.get("kind") if ".in." in entry.subject else body.get("type"))


def describe(entry: LogEntry) -> str:
    """One readable line: audio is summarised, long fields are cut."""
    clock = datetime.fromtimestamp(entry.at_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    where = ".".join(entry.subject.split(".")[3:])
    body: dict[str, Any] = json.loads(entry.data)
    kind = body.pop("kind", None) or body.pop("type", "?")
    for noise in ("v", "at_ms", "event_id"):
        body.pop(noise, None)
    if kind == "audio.received":
        probs = body.get("speech_probs") or [0.0]
        detail = f"{body['ticks'] / 48:.0f} ms of audio, {len(probs)} frames, speech max {max(probs):.2f}"
    else:
        detail = json.dumps(body, separators=(",", ":"))
        detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return f"{clock} {session_of(entry.subject)} {where:<8} {kind} {detail}"


def matches(entry: LogEntry, patterns: list[str]) -> bool:
    return not patterns or any(fnmatch.fnmatch(entry_type(entry), p) for p in patterns)


async def tail(
    bus: Bus,
    session_id: str | None,
    patterns: list[str],
    as_json: bool,
    emit: Callable[[str], None],
    following: Callable[[str], None] = lambda _: None,
) -> None:
    """Follow a session (from its start, until it ends) or every session (from now, until cancelled);
    `following` hears when the following starts."""
    prefix = bus.subjects.prefix
    subject = f"{prefix}.session.{session_id}.>" if session_id else f"{prefix}.session.*.>"
    policy = api.DeliverPolicy.ALL if session_id else api.DeliverPolicy.NEW
    sub = await bus.js.subscribe(subject, ordered_consumer=True, deliver_policy=policy)
    following(f"following session {session_id}" if session_id else "following every session from now")
    ended = False
    try:
        while True:
            try:  # once the session has ended, what it still says (its last events) comes within moments
                message = await sub.next_msg(timeout=ENDED_SESSION_QUIET_S if ended else None)
            except nats.errors.TimeoutError:
                return
            entry = entry_of(message)
            if matches(entry, patterns):
                emit(entry.data.decode() if as_json else describe(entry))
            ended = ended or (session_id is not None and entry_type(entry) in ENDINGS)
    finally:
        await sub.unsubscribe()


# --- replay -------------------------------------------------------------------------------------------------

FIXTURE_VERSION = 1


def check_replayable(inputs: list[tuple[int, rec.Record]], outputs: list[AnyServerEvent]) -> None:
    if not inputs or not isinstance(inputs[0][1], rec.SessionOpened):
        raise ValueError("the log no longer holds this session's opening record (retention); it cannot be replayed")
    heard = any(isinstance(event, AudioCommitted) for event in outputs)
    if heard and not any(isinstance(record, rec.AudioReceived) for _, record in inputs):
        raise ValueError(
            "the session's audio records have expired (VOCALIS_AUDIO_MAX_AGE_S is shorter than the log's "
            "retention); without them it cannot be replayed"
        )


def replay_recorded(inputs: list[tuple[int, rec.Record]], outputs: list[AnyServerEvent]) -> Divergence | None:
    check_replayable(inputs, outputs)
    return compare(outputs, replay(inputs), cut=cut_off(inputs))


def save_fixture(recorded: RecordedSession, path: Path) -> None:
    """A self-contained JSONL file: the inputs with their sequences, then the events they must produce."""
    encode = msgspec.json.encode
    lines = [encode({"vocalis_fixture": FIXTURE_VERSION, "session_id": recorded.session_id})]
    lines += [encode({"seq": seq, "record": record}) for seq, record in recorded.inputs]
    lines += [encode({"expected": event}) for event in recorded.outputs]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


class _FixtureLine(msgspec.Struct):
    seq: int | None = None
    record: rec.Record | None = None
    expected: AnyServerEvent | None = None


def load_fixture(path: Path) -> tuple[list[tuple[int, rec.Record]], list[AnyServerEvent]]:
    header, *body = path.read_text().splitlines()
    if json.loads(header).get("vocalis_fixture") != FIXTURE_VERSION:
        raise ValueError(f"{path} is not a Vocalis session fixture of version {FIXTURE_VERSION}")
    decoder = msgspec.json.Decoder(_FixtureLine)
    inputs: list[tuple[int, rec.Record]] = []
    expected: list[AnyServerEvent] = []
    for line in body:
        item = decoder.decode(line)
        if item.record is not None and item.seq is not None:
            inputs.append((item.seq, item.record))
        elif item.expected is not None:
            expected.append(item.expected)
    return inputs, expected


# --- export -------------------------------------------------------------------------------------------------


def export_jsonl(recorded: RecordedSession) -> str:
    lines = [
        msgspec.json.encode({"seq": e.seq, "subject": e.subject, "at_ms": e.at_ms, "data": msgspec.Raw(e.data)})
        for e in recorded.entries
    ]
    return b"\n".join(lines).decode() + "\n"


def export_text(recorded: RecordedSession, fmt: str) -> str:
    entries = [e for e in recorded.entries if ".out." in e.subject or e.subject.endswith(".in.edge")]
    summary = summarize(entries)
    if summary is None:
        raise ValueError("the log no longer holds this session's opening record; it cannot be summarised")
    return {"srt": to_srt, "vtt": to_vtt, "md": to_markdown}[fmt](summary)


def _write_wav(path: Path, pcm16: bytes, rate: int) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16)
    return path


def export_wav(recorded: RecordedSession, directory: Path) -> list[Path]:
    """One WAV per turn: the user's committed audio (16 kHz, as the models hear it), and each answer's audio as
    the client received it (24 kHz pcm16, or G.711 decoded at 8 kHz)."""
    inputs, outputs = recorded.inputs, recorded.outputs
    check_replayable(inputs, outputs)
    audio = {seq: r for seq, r in inputs if isinstance(r, rec.AudioReceived | rec.ItemAudioReceived)}
    committed: list[str] = []
    heard: dict[str, TranscribeJob] = {}  # the last job of an item is the one whose transcript counts
    for transition in transitions(inputs):
        committed += [e.item_id for e in transition.events if isinstance(e, AudioCommitted)]
        heard |= {job.item_id: job for job in transition.jobs if isinstance(job, TranscribeJob)}
    jobs = [heard[item] for item in committed if item in heard]
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    stream = b"".join(r.pcm16k for r in audio.values() if isinstance(r, rec.AudioReceived))
    # A VAD turn runs from its speech_started to its speech_stopped; its decodes cover parts of it.
    started = {e.item_id: e.audio_start_ms * SAMPLES_PER_MS for e in outputs if isinstance(e, SpeechStarted)}
    stopped = {e.item_id: e.audio_end_ms * SAMPLES_PER_MS for e in outputs if isinstance(e, SpeechStopped)}
    for number, job in enumerate(jobs, 1):
        if isinstance(audio.get(job.first_seq), rec.ItemAudioReceived):
            pcm = (turn_audio(job, [audio[job.first_seq]]) * 32767).astype("<i2").tobytes()
        else:
            start = started.get(job.item_id, job.start_sample)
            pcm = stream[2 * start : 2 * stopped.get(job.item_id, job.end_sample)]
        written.append(_write_wav(directory / f"user-turn-{number:02d}-{job.item_id}.wav", pcm, MODEL_RATE))
    formats = {e.response.id: e.response.output_format for e in outputs if isinstance(e, ResponseCreated)}
    answers: dict[str, bytearray] = {}
    for event in outputs:
        if isinstance(event, OutputAudioDelta):
            answers.setdefault(event.response_id, bytearray()).extend(event.delta)
    for number, (response_id, payload) in enumerate(answers.items(), 1):
        fmt = formats.get(response_id, "pcm16")
        if fmt == "pcm16":
            pcm, rate = bytes(payload), 24_000
        else:
            pcm, rate = (
                g711_to_pcm16(bytes(payload), "g711_ulaw" if fmt == "g711_ulaw" else "g711_alaw").tobytes(),
                8_000,
            )
        written.append(_write_wav(directory / f"assistant-turn-{number:02d}-{response_id}.wav", pcm, rate))
    return written


def export(recorded: RecordedSession, fmt: str, output: Path | None) -> str:
    """The exported document, or (wav) the list of files written under `output`."""
    if not recorded.entries:
        raise ValueError(f"no records of {recorded.session_id} on the log")
    if fmt == "wav":
        return "\n".join(str(p) for p in export_wav(recorded, output or Path(recorded.session_id)))
    return export_jsonl(recorded) if fmt == "jsonl" else export_text(recorded, fmt)
