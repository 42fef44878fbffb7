"""Analytics folded from synthetic events: utterances, talk time, pace, interruptions, latencies."""

from domain import records as rec
from domain.analytics import LoggedEvent, fold_event, fold_record, open_summary
from domain.transcripts import to_markdown, to_srt, to_vtt

T0 = 1_000_000


def opened():
    record = rec.SessionOpened(
        at_ms=T0, session_id="sess_a", session_type="realtime", dialect="ga", default_stt_model="m", max_duration_s=60
    )
    return open_summary(record, seq=1)


def run(events):
    summary = opened()
    for seq, (at, event) in enumerate(events, start=2):
        summary = fold_event(summary, event, T0 + at, seq)
    return summary


def turn(item, start, end, text, stopped_at, completed_at):
    return [
        (stopped_at - 500, LoggedEvent("input_audio_buffer.speech_started", item_id=item, audio_start_ms=start)),
        (stopped_at, LoggedEvent("input_audio_buffer.speech_stopped", item_id=item, audio_end_ms=end)),
        (stopped_at + 1, LoggedEvent("input_audio_buffer.committed", item_id=item)),
        (
            completed_at,
            LoggedEvent("conversation.item.input_audio_transcription.completed", item_id=item, transcript=text),
        ),
    ]


def test_utterances_talk_time_pace_and_latency():
    summary = run(turn("i1", 0, 3000, "one two three", 3000, 3400) + turn("i2", 5000, 8000, "four five", 8000, 8250))
    view = summary.view(now_ms=T0 + 10_000)
    assert [(u["start_ms"], u["end_ms"], u["text"]) for u in view["utterances"]] == [
        (0, 3000, "one two three"),
        (5000, 8000, "four five"),
    ]
    assert list(view["utterances"][0]["words"]) == ["one", "two", "three"]
    assert [u["transcription_latency_ms"] for u in view["utterances"]] == [400, 250]
    assert (view["turns"], view["talk_ms"], view["silence_ms"], view["words"]) == (2, 6000, 2000, 5)
    assert view["words_per_minute"] == 50.0  # 5 words in 6 s of speech
    assert (view["state"], view["duration_ms"]) == ("live", 10_000)


def test_interruptions_and_first_audio_latency():
    events = [
        *turn("i1", 0, 1000, "hi", 1000, 1200),
        (1300, LoggedEvent("response.created")),
        (1700, LoggedEvent("response.output_audio.delta")),
        (1800, LoggedEvent("response.output_audio.delta")),
        (2000, LoggedEvent("input_audio_buffer.speech_started", item_id="i2", audio_start_ms=1900)),
        (2100, LoggedEvent("response.done")),
        (2500, LoggedEvent("input_audio_buffer.speech_started", item_id="i3", audio_start_ms=2400)),
    ]
    summary = run(events)
    assert summary.interruptions == 1  # only the speech that started during the response
    assert summary.utterances[0].first_audio_latency_ms == 700


def test_a_record_is_never_counted_twice():
    summary = run(turn("i1", 0, 1000, "hello there", 1000, 1300))
    again = fold_event(summary, LoggedEvent("input_audio_buffer.speech_started", item_id="i9"), T0, summary.last_seq)
    assert again is summary


def test_manual_commits_get_wall_clock_times_and_closing_ends_the_session():
    summary = run(
        [
            (4000, LoggedEvent("input_audio_buffer.committed", item_id="m1")),
            (4300, LoggedEvent("conversation.item.input_audio_transcription.completed", item_id="m1", transcript="hi")),
        ]
    )
    assert (summary.utterances[0].start_ms, summary.utterances[0].end_ms) == (0, 4000)
    closed = fold_record(summary, rec.SessionClosed(at_ms=T0 + 5000, reason="client"), seq=summary.last_seq + 1)
    assert closed.view(now_ms=T0 + 99_000)["duration_ms"] == 5000 and closed.state == "ended"


def test_subtitles_and_markdown():
    summary = run(
        turn("i1", 1500, 3250, " Hello, world. ", 3250, 3500) + turn("i2", 3_723_000, 3_724_000, "Bye", 9000, 9100)
    )
    assert to_srt(summary) == (
        "1\n00:00:01,500 --> 00:00:03,250\nHello, world.\n\n2\n01:02:03,000 --> 01:02:04,000\nBye\n"
    )
    assert to_vtt(summary).startswith("WEBVTT\n\n00:00:01.500 --> 00:00:03.250\nHello, world.\n")
    markdown = to_markdown(summary)
    assert "**[00:00:01]** Hello, world." in markdown and "**[01:02:03]** Bye" in markdown


def test_a_conversation_s_transcript_holds_both_sides_without_transcription_events():
    """A conversation client that did not ask for input transcription still gets both sides in the exports: the
    user's words come from the transcript records its LLM request used, the assistant's from its answer."""
    summary = opened()
    events = [
        (0, LoggedEvent("input_audio_buffer.speech_started", item_id="u1", audio_start_ms=0)),
        (1500, LoggedEvent("input_audio_buffer.speech_stopped", item_id="u1", audio_end_ms=1500)),
        (1501, LoggedEvent("input_audio_buffer.committed", item_id="u1")),
    ]
    for seq, (at, event) in enumerate(events, start=2):
        summary = fold_event(summary, event, T0 + at, seq)
    transcript = rec.TranscriptionCompleted(
        at_ms=T0 + 1502, job_id="j", item_id="u1", transcript="what time is it", audio_seconds=1.5, worker="w"
    )
    summary = fold_record(summary, transcript, seq=5)
    answer = LoggedEvent("response.output_audio_transcript.done", item_id="a1", transcript="It is noon.")
    summary = fold_event(summary, answer, T0 + 2600, seq=6)
    assert [(u.speaker, u.text) for u in summary.utterances] == [
        ("user", "what time is it"),
        ("assistant", "It is noon."),
    ]
    assert summary.word_count == 4 and summary.view(T0 + 3000)["turns"] == 1, "talk figures are the user's"
    markdown = to_markdown(summary)
    assert "User: what time is it" in markdown and "Assistant: It is noon." in markdown
    assert "00:00:02,600 --> 00:00:02,600\nAssistant: It is noon." in to_srt(summary)
