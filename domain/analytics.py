"""Meeting analytics: a session's utterances, talk time, pace, turns, interruptions and latencies, folded from
its recorded server events (GA shapes) and lifecycle records.

Events are read loosely (`LoggedEvent`): analytics follows every session the log holds, including event types
this build does not emit itself (responses, in conversation mode).
"""

from typing import Any, Literal

import msgspec
from msgspec import Struct

from domain import records as rec


class LoggedEvent(Struct, frozen=True):
    """The fields of a recorded server event that analytics reads."""

    type: str
    item_id: str | None = None
    audio_start_ms: int | None = None
    audio_end_ms: int | None = None
    transcript: str | None = None
    text: str | None = None
    response: dict[str, Any] | None = None


class Utterance(Struct, frozen=True):
    item_id: str
    start_ms: int | None = None  # session audio time
    end_ms: int | None = None
    text: str | None = None
    words: tuple[str, ...] = ()
    status: Literal["speaking", "committed", "completed", "failed"] = "speaking"
    stopped_at_ms: int | None = None  # wall clock of speech_stopped (or the commit)
    transcription_latency_ms: int | None = None  # speech_stopped to transcription completed
    first_audio_latency_ms: int | None = None  # speech_stopped to the answer's first audio (conversation)
    speaker: Literal["user", "assistant"] = "user"


class SessionSummary(Struct, frozen=True):
    session_id: str
    session_type: str
    started_at_ms: int
    ended_at_ms: int | None = None
    utterances: tuple[Utterance, ...] = ()
    interruptions: int = 0
    responding: bool = False
    awaiting_audio: str | None = None  # the utterance whose answer's first audio is awaited
    last_seq: int = 0  # the last log sequence folded in: a redelivered record is not counted twice

    @property
    def state(self) -> str:
        return "live" if self.ended_at_ms is None else "ended"

    @property
    def talk_ms(self) -> int:
        return sum(u.end_ms - u.start_ms for u in self.utterances if u.start_ms is not None and u.end_ms is not None)

    @property
    def audio_ms(self) -> int:
        return max((u.end_ms for u in self.utterances if u.end_ms is not None), default=0)

    @property
    def word_count(self) -> int:
        """The user's words (what talk time measures)."""
        return sum(len(u.words) for u in self.utterances if u.speaker == "user")

    def view(self, now_ms: int) -> dict[str, Any]:
        """The summary as served over HTTP, with the derived figures."""
        body: dict[str, Any] = msgspec.to_builtins(self)
        for private in ("responding", "awaiting_audio", "last_seq"):
            body.pop(private)
        talk = self.talk_ms
        end = self.ended_at_ms if self.ended_at_ms is not None else now_ms
        body |= {
            "state": self.state,
            "duration_ms": end - self.started_at_ms,
            "turns": sum(1 for u in self.utterances if u.status != "speaking" and u.speaker == "user"),
            "talk_ms": talk,
            "silence_ms": max(0, self.audio_ms - talk),
            "words": self.word_count,
            "words_per_minute": round(self.word_count / (talk / 60_000), 1) if talk else None,
        }
        return body


def open_summary(record: rec.SessionOpened, seq: int) -> SessionSummary:
    return SessionSummary(record.session_id, record.session_type, record.at_ms, last_seq=seq)


def fold_record(summary: SessionSummary, record: rec.Record, seq: int) -> SessionSummary:
    """A lifecycle record (`in.edge`) of the session, or a transcript (`in.stt`): a conversation's user turns are
    transcribed for its LLM even when its client did not ask for transcription events."""
    if seq <= summary.last_seq:
        return summary
    if isinstance(record, rec.SessionClosed | rec.SessionExpired) and summary.ended_at_ms is None:
        return msgspec.structs.replace(summary, ended_at_ms=record.at_ms, last_seq=seq)
    if isinstance(record, rec.TranscriptionCompleted):
        utterances = tuple(
            msgspec.structs.replace(
                u, text=record.transcript, words=tuple(record.transcript.split()), status="completed"
            )
            if u.item_id == record.item_id and u.text is None
            else u
            for u in summary.utterances
        )
        return msgspec.structs.replace(summary, utterances=utterances, last_seq=seq)
    return msgspec.structs.replace(summary, last_seq=seq)


def fold_event(summary: SessionSummary, event: LoggedEvent, at_ms: int, seq: int) -> SessionSummary:
    """A recorded server event, stored at wall time `at_ms`."""
    if seq <= summary.last_seq:
        return summary
    changes: dict[str, Any] = {"last_seq": seq}
    utterances = list(summary.utterances)
    index = next((i for i, u in enumerate(utterances) if u.item_id == event.item_id), None)

    def update(**fields: Any) -> None:
        if index is not None:
            utterances[index] = msgspec.structs.replace(utterances[index], **fields)

    match event.type:
        case "input_audio_buffer.speech_started" if event.item_id:
            if summary.responding:
                changes["interruptions"] = summary.interruptions + 1
            utterances.append(Utterance(event.item_id, start_ms=event.audio_start_ms))
        case "input_audio_buffer.speech_stopped":
            update(end_ms=event.audio_end_ms, stopped_at_ms=at_ms)
        case "input_audio_buffer.committed" if event.item_id:
            if index is None:  # a manual commit: its times are the previous end and the commit's wall time
                start = utterances[-1].end_ms if utterances else 0
                end = max(start or 0, at_ms - summary.started_at_ms)
                utterances.append(Utterance(event.item_id, start, end, status="committed", stopped_at_ms=at_ms))
            else:
                update(status="committed")
            changes["awaiting_audio"] = event.item_id
        case "conversation.item.input_audio_transcription.completed":
            text = event.transcript or ""
            stopped = utterances[index].stopped_at_ms if index is not None else None
            latency = at_ms - stopped if stopped is not None else None
            update(text=text, words=tuple(text.split()), status="completed", transcription_latency_ms=latency)
        case "conversation.item.input_audio_transcription.failed":
            update(status="failed")
        case "response.output_audio_transcript.done" | "response.output_text.done" if event.item_id:
            said = event.transcript if event.transcript is not None else (event.text or "")
            heard_at = at_ms - summary.started_at_ms  # the answer is not on the input audio's clock: session time
            words = tuple(said.split())
            utterances.append(
                Utterance(event.item_id, heard_at, heard_at, said, words, "completed", speaker="assistant")
            )
        case "response.created":
            changes["responding"] = True
        case "response.done":
            changes["responding"] = False
        case "response.output_audio.delta" if summary.awaiting_audio:
            waiting = next((i for i, u in enumerate(utterances) if u.item_id == summary.awaiting_audio), None)
            if waiting is not None and (stopped := utterances[waiting].stopped_at_ms) is not None:
                utterances[waiting] = msgspec.structs.replace(
                    utterances[waiting], first_audio_latency_ms=at_ms - stopped
                )
            changes["awaiting_audio"] = None
    return msgspec.structs.replace(summary, utterances=tuple(utterances), **changes)
