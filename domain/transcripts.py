"""A session's utterances as subtitles (SRT, WebVTT) and as a Markdown transcript with times."""

from collections.abc import Iterable

from domain.analytics import SessionSummary, Utterance

Cue = tuple[int, int, str]  # start and end in milliseconds, and the text shown


def _timed(utterances: Iterable[Utterance]) -> list[Cue]:
    """Both sides of a conversation, each line named by its speaker once an assistant has spoken."""
    said = [u for u in utterances if u.text and u.text.strip()]
    named = any(u.speaker == "assistant" for u in said)
    return [
        (
            u.start_ms or 0,
            max(u.end_ms or 0, u.start_ms or 0),
            f"{SPEAKERS[u.speaker]}: {u.text.strip()}" if named else u.text.strip(),  # type: ignore[union-attr]
        )
        for u in said
    ]


SPEAKERS = {"user": "User", "assistant": "Assistant"}


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def srt(cues: Iterable[Cue]) -> str:
    lines = [
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n" for n, (start, end, text) in enumerate(cues, 1)
    ]
    return "\n".join(lines)


def vtt(cues: Iterable[Cue]) -> str:
    lines = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n" for start, end, text in cues]
    return "\n".join(["WEBVTT\n", *lines])


def to_srt(summary: SessionSummary) -> str:
    return srt(_timed(summary.utterances))


def to_vtt(summary: SessionSummary) -> str:
    return vtt(_timed(summary.utterances))


def to_markdown(summary: SessionSummary) -> str:
    lines = [f"# Transcript of {summary.session_id}", ""]
    for start, _end, text in _timed(summary.utterances):
        lines.append(f"**[{_clock(start, '.')[:-4]}]** {text}")
        lines.append("")
    return "\n".join(lines)
