"""The session state machine (`domain.session`) driven by hand-built records.

Audio is given as 16 kHz sample counts: 16 samples per ms, a VAD frame every 512 samples, and 3 session ticks
(1/48 000 s) per 16 kHz sample. Expected numbers are derived by hand from those rules and the spec.
"""

import math
from collections.abc import Sequence

import msgspec
import pytest

from domain import events as ev
from domain import records as rec
from domain.jobs import PARTIAL_DECODE_WAIT_MS, TRANSCRIPTION_LATE, GenerateJob, TranscribeJob
from domain.session import SessionState, Transition, open_session, step
from domain.session_config import (
    EAGERNESS,
    NoiseReduction,
    SessionUpdate,
    Transcription,
    TranscriptionUpdate,
    TurnDetection,
    TurnDetectionUpdate,
)
from domain.state import WithdrawJob
from domain.transcription import MAX_WINDOW_MS
from domain.turns import WORDS_WAIT_MS

SID = "sess_test0001"
FRAME = 512
SAMPLES_PER_MS = 16
TICKS_PER_SAMPLE = 3  # 48 000 / 16 000
AT_MS = 1_700_000_000_000
DEFAULT_STT = "whisper-base"
TD = "session.audio.input.turn_detection"


def opened(session_type: str = "transcription", **fields: object) -> rec.SessionOpened:
    values: dict[str, object] = {
        "at_ms": AT_MS,
        "session_id": SID,
        "session_type": session_type,
        "dialect": "ga",
        "default_stt_model": DEFAULT_STT,
        "max_duration_s": 3600,
    }
    values.update(fields)
    return rec.SessionOpened(**values)  # type: ignore[arg-type]


def types(events: Sequence[ev.ServerEvent]) -> list[str]:
    return [e.__struct_config__.tag for e in events]  # type: ignore[misc]


class Sim:
    """Feeds records with increasing stream sequences, checks that no step mutates its input state, and keeps
    where each audio record's samples lie (seq -> (first sample, sample count))."""

    def __init__(self, session_type: str = "transcription", **fields: object) -> None:
        self.created = open_session(opened(session_type, **fields))
        self.state: SessionState = self.created.state
        self.seq = 0
        self.samples = 0
        self.audio: dict[int, tuple[int, int]] = {}
        self.events: list[ev.ServerEvent] = list(self.created.events)
        self.jobs: list[TranscribeJob] = []
        self.withdrawn: list[str] = []  # ids of the jobs withdrawn
        self.clock = AT_MS  # of the audio and decodes fed

    def feed(self, record: rec.Record) -> Transition:
        self.seq += 1
        before = self.state
        snapshot = msgspec.json.encode(before)
        transition = step(before, record, self.seq)
        assert msgspec.json.encode(before) == snapshot, "step mutated its input state"
        self.state = transition.state
        self.events.extend(transition.events)
        self.jobs.extend(job for job in transition.jobs if not isinstance(job, WithdrawJob))
        self.withdrawn.extend(job.job_id for job in transition.jobs if isinstance(job, WithdrawJob))
        return transition

    def audio_samples(
        self, samples: int, probs: Sequence[float] = (), turn_scores: tuple[tuple[int, float], ...] = ()
    ) -> Transition:
        """Append `samples` of 16 kHz silence-valued pcm; `probs` are the frames this append completes, and
        `turn_scores` the end-of-turn scores recorded with them."""
        frames_done = (self.samples + samples) // FRAME - self.samples // FRAME
        assert len(probs) == frames_done, f"{samples} samples complete {frames_done} frames, got {len(probs)}"
        record = rec.AudioReceived(
            at_ms=self.clock,
            ticks=samples * TICKS_PER_SAMPLE,
            pcm16k=bytes(2 * samples),
            speech_probs=tuple(probs),
            turn_scores=turn_scores,
        )
        self.audio[self.seq + 1] = (self.samples, samples)
        self.samples += samples
        return self.feed(record)

    def audio_ms(self, ms: int, probability: float = 0.0) -> Transition:
        samples = ms * SAMPLES_PER_MS
        frames_done = (self.samples + samples) // FRAME - self.samples // FRAME
        return self.audio_samples(samples, [probability] * frames_done)

    def frames(self, probs: Sequence[float], per_record: int = 4) -> list[Transition]:
        assert self.samples % FRAME == 0
        return [
            self.audio_samples(FRAME * len(chunk), chunk)
            for chunk in (probs[i : i + per_record] for i in range(0, len(probs), per_record))
        ]

    def client(self, event: ev.ClientEvent) -> Transition:
        return self.feed(rec.ClientEventReceived(at_ms=AT_MS, event=event))

    def update(self, event_id: str | None = None, **fields: object) -> Transition:
        return self.client(ev.SessionUpdateRequested(update=SessionUpdate(**fields), event_id=event_id))  # type: ignore[arg-type]

    def commit(self, event_id: str | None = None) -> Transition:
        return self.client(ev.AudioCommitRequested(event_id=event_id))

    def clear(self, event_id: str | None = None) -> Transition:
        return self.client(ev.AudioClearRequested(event_id=event_id))

    def stt_delta(self, item_id: str, text: str, index: int = 0) -> Transition:
        return self.feed(
            rec.TranscriptionDeltaProduced(
                at_ms=AT_MS, job_id="job_x", item_id=item_id, index=index, text=text, worker="w"
            )
        )

    def stt_completed(self, item_id: str, transcript: str, seconds: float = 1.0) -> Transition:
        return self.feed(
            rec.TranscriptionCompleted(
                at_ms=AT_MS, job_id="job_x", item_id=item_id, transcript=transcript, audio_seconds=seconds, worker="w"
            )
        )

    def stt_failed(self, item_id: str, message: str) -> Transition:
        return self.feed(
            rec.TranscriptionFailed(at_ms=AT_MS, job_id="job_x", item_id=item_id, message=message, worker="w")
        )

    def words(self, job: TranscribeJob, text: str, language: str | None = "en", as_said: bool = False) -> Transition:
        """A decode of a live turn's job: the words of `text`, evenly spread over the job's audio, or where
        `SPOKEN` says they were said (`as_said`)."""
        spoken = text.split()
        step = (job.end_sample - job.start_sample) // max(len(spoken), 1)
        if not as_said:
            spans = [(job.start_sample + i * step, job.start_sample + (i + 1) * step) for i in range(len(spoken))]
        else:
            first = SPOKEN.index(spoken[0]) if spoken else 0
            spans = [(20480 + (first + i) * WORD, 20480 + (first + i + 1) * WORD) for i in range(len(spoken))]
        words = tuple(rec.Word(text=f" {w}", start=s, end=e) for w, (s, e) in zip(spoken, spans, strict=True))
        return self.decoded(job, words, language)

    def decoded(
        self, job: TranscribeJob, words: tuple[rec.Word, ...], language: str | None = "en", waited_ms: int = 0
    ) -> Transition:
        return self.feed(
            rec.WordsDecoded(
                at_ms=self.clock,
                job_id=job.job_id,
                item_id=job.item_id,
                start_sample=job.start_sample,
                end_sample=job.end_sample,
                words=words,
                worker="w",
                language=language,
                waited_ms=waited_ms,
            )
        )

    def assert_job_covered(self, job: TranscribeJob) -> None:
        """The audio records first_seq..last_seq, read in order, start at first_sample and hold the job's range."""
        seqs = [s for s in sorted(self.audio) if job.first_seq <= s <= job.last_seq]
        assert seqs and seqs[0] == job.first_seq and seqs[-1] == job.last_seq
        assert self.audio[job.first_seq][0] == job.first_sample
        position = job.first_sample
        for s in seqs:
            start, length = self.audio[s]
            assert start == position, "the records of a job must be contiguous"
            position += length
        assert job.first_sample <= job.start_sample < job.end_sample <= position
        # No record outside the range is needed: the first holds start, the last holds end - 1.
        assert self.audio[job.first_seq][0] + self.audio[job.first_seq][1] > job.start_sample
        assert self.audio[job.last_seq][0] < job.end_sample


def only(events: Sequence[ev.ServerEvent], kind: type[ev.ServerEvent]) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def manual_session(session_type: str = "transcription", **fields: object) -> Sim:
    sim = Sim(session_type, **fields)
    sim.update(turn_detection=None)
    return sim


# --- session.created ------------------------------------------------------------------------------------------


def test_open_emits_exactly_session_created_first() -> None:
    created = open_session(opened("transcription"))
    assert types(created.events) == ["session.created"]
    event = created.events[0]
    assert isinstance(event, ev.SessionCreated)
    assert event.session_id == SID
    assert event.expires_at == AT_MS // 1000 + 3600
    assert event.event_id.startswith("event_")
    assert event.session.type == "transcription"
    assert event.session.transcription == Transcription(model=DEFAULT_STT)
    assert event.session.turn_detection == TurnDetection()
    assert created.jobs == ()
    assert created.close is False
    assert created.state.closed is False


def test_transcription_session_uses_requested_model_and_language() -> None:
    created = open_session(opened("transcription", transcription_model="whisper-small", language="de"))
    assert created.events[0].session.transcription == Transcription(model="whisper-small", language="de")  # type: ignore[union-attr]


def test_realtime_session_has_no_input_transcription_unless_asked() -> None:
    plain = open_session(opened("realtime", model="gpt-realtime"))
    session = plain.events[0].session  # type: ignore[union-attr]
    assert session.type == "realtime"
    assert session.model == "gpt-realtime"
    assert session.transcription is None  # spec 4.1: audio.input.transcription defaults to null
    assert session.output_modalities == ("audio",)
    with_stt = open_session(opened("realtime", model="gpt-realtime", transcription_model="whisper-base"))
    assert with_stt.events[0].session.transcription == Transcription(model="whisper-base")  # type: ignore[union-attr]


# --- server VAD turns -----------------------------------------------------------------------------------------

# 40 silent frames, 20 speech frames, then silence; records of 4 frames (2048 samples), seq k starts at
# sample (k - 1) * 2048.
#   speech onset: frame 40 starts at 20480; minus 300 ms (4800) -> start_sample 15680 -> audio_start_ms 980
#   last voice ends at 60 * 512 = 30720; the stop is the first frame end >= 30720 + 8000 -> 76 * 512 = 38912,
#   frame 75 (the last frame of record seq 19) -> audio_end_ms 2432
#   the job needs records from the one holding 15680 (seq 8, starts 14336) to the one holding 38911 (seq 19).
FIRST_TURN = [0.0] * 40 + [0.9] * 20 + [0.0] * 16


def test_vad_turn_event_sequence_and_job() -> None:
    sim = Sim("transcription")
    transitions = sim.frames(FIRST_TURN)
    assert len(transitions) == 19
    by_seq = {i + 1: t for i, t in enumerate(transitions)}
    # Silence yields nothing; speech_started in the record holding frame 40 (seq 11).
    assert [s for s, t in by_seq.items() if t.events] == [11, 19]
    (started,) = by_seq[11].events
    assert isinstance(started, ev.SpeechStarted)
    assert started.audio_start_ms == 980
    assert started.item_id.startswith("item_")

    stop = by_seq[19]
    assert types(stop.events) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    stopped, committed, added, done = stop.events
    assert isinstance(stopped, ev.SpeechStopped)
    assert stopped.audio_end_ms == 2432
    assert isinstance(committed, ev.AudioCommitted) and isinstance(added, ev.ItemAdded)
    assert isinstance(done, ev.ItemDone)
    item_id = started.item_id
    assert stopped.item_id == committed.item_id == added.item.id == done.item.id == item_id
    assert committed.previous_item_id is None and added.previous_item_id is None and done.previous_item_id is None
    assert added.item.role == "user"
    assert isinstance(added.item, ev.MessageItem)
    assert added.item.content == (ev.ContentPart(type="input_audio", transcript=None),)

    # While the user spoke, one decode of the turn's first 600 ms (to the end of frame 49, 25600); 150 ms into
    # the silence (last voice at frame 60, 30720; frame 65 ends at 33280), the closing decode of the whole turn.
    # The commit waits for that one rather than asking again, and withdraws the partial decode, which it overtakes.
    partial, closing = sim.jobs
    assert stop.jobs == (WithdrawJob(partial.job_id),)
    for job in (partial, closing):
        assert job.item_id == item_id and job.words
        assert job.session_id == SID
        assert job.model == DEFAULT_STT
        assert job.job_id.startswith("job_")
        sim.assert_job_covered(job)
    assert (partial.start_sample, partial.end_sample) == (15680, 25600)
    assert (closing.start_sample, closing.end_sample) == (15680, 33280)
    assert partial.partial and not closing.partial, "the closing decode goes before partial decodes of other turns"
    assert (closing.first_seq, closing.last_seq, closing.first_sample) == (8, 17, 14336)
    assert sim.state.transcribing == (item_id,)
    assert sim.state.speaking is None
    assert sim.state.live is None and [t.awaited for t in sim.state.finishing] == [closing.job_id]


def test_audio_offsets_are_cumulative_session_time_across_turns() -> None:
    sim = Sim("transcription")
    # Turn 1 as above (ends at 38912 = 2432 ms). 60 more silent frames (76..135), speech frames 136..145,
    # silence. Turn 2 onset 136 * 512 = 69632 -> start 69632 - 4800 = 64832 (4052 ms); last voice ends at
    # 146 * 512 = 74752 -> stop at 162 * 512 = 82944 (5184 ms).
    probs = FIRST_TURN + [0.0] * 60 + [0.9] * 10 + [0.0] * 18
    sim.frames(probs)
    started = only(sim.events, ev.SpeechStarted)
    stopped = only(sim.events, ev.SpeechStopped)
    committed = only(sim.events, ev.AudioCommitted)
    assert [e.audio_start_ms for e in started] == [980, 4052]
    assert [e.audio_end_ms for e in stopped] == [2432, 5184]
    # Buffer-relative time would have given 4052 - 2432 = 1620 for the second start.
    assert [s.item_id for s in started] == [s.item_id for s in stopped] == [c.item_id for c in committed]
    assert started[0].item_id != started[1].item_id
    assert committed[1].previous_item_id == committed[0].item_id
    # Each turn: a decode while speaking, 600 ms into the turn, and the closing one, 150 ms after its last voice
    # (turn 2: 74752 + 2400 -> frame 151 ends at 77312).
    jobs = sim.jobs
    expected = [(15680, 25600), (15680, 33280), (64832, 74752), (64832, 77312)]
    assert [(j.start_sample, j.end_sample) for j in jobs] == expected
    for job in jobs:
        sim.assert_job_covered(job)


def test_prefix_padding_of_the_next_turn_is_clamped_to_the_previous_turn_end() -> None:
    sim = Sim("transcription")
    # Turn 1 stops at frame 75 (end 38912); two silent frames; speech at frame 78: 78 * 512 - 4800 = 35136 would
    # reach into turn 1, so the start is 38912 (2432 ms).
    sim.frames(FIRST_TURN + [0.0] * 2 + [0.9] * 10 + [0.0] * 20)
    started = only(sim.events, ev.SpeechStarted)
    stopped = only(sim.events, ev.SpeechStopped)
    assert [e.audio_start_ms for e in started] == [980, 2432]
    assert started[1].audio_start_ms == stopped[0].audio_end_ms
    assert sim.jobs[-1].start_sample == 38912


def test_vad_turn_in_realtime_session_is_transcribed_silently_and_answered() -> None:
    sim = Sim("realtime", model="gpt-realtime")
    sim.frames(FIRST_TURN)
    assert types(sim.events[1:]) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
    ]
    (job,) = sim.jobs  # the LLM needs the words even when the client did not ask for transcription events
    assert isinstance(job, TranscribeJob) and job.item_id == only(sim.events, ev.AudioCommitted)[0].item_id
    (generate,) = sim.stt_completed(job.item_id, "hello").jobs  # the request waited for the transcript
    assert isinstance(generate, GenerateJob)
    assert generate.messages[-1] == {"role": "user", "content": "hello"}
    assert sim.state.transcribing == ()


def test_updated_threshold_and_silence_drive_detection() -> None:
    sim = Sim("transcription")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", threshold=0.7, silence_duration_ms=200))
    sim.frames([0.6] * 40)  # below the new threshold: nothing
    assert only(sim.events, ev.SpeechStarted) == []
    # Speech at frames 40..43, then 0.5 (below 0.7 - 0.15): 200 ms (3200) after 44 * 512 -> stop at frame 50.
    sim.frames([0.8] * 4 + [0.5] * 8)
    stopped = only(sim.events, ev.SpeechStopped)
    assert [e.audio_end_ms for e in stopped] == [51 * FRAME // SAMPLES_PER_MS]


def semantic_pause(sim: Sim, score: float, eagerness: str = "auto") -> TranscribeJob | None:
    """Speech for 256 ms, then silence up to frame 12, which the edge scored: the turn's closing decode."""
    sim.update(turn_detection=TurnDetectionUpdate(type="semantic_vad", eagerness=eagerness))
    sim.frames([0.9] * 8)
    sim.audio_samples(FRAME * 5, [0.0] * 5, turn_scores=((4, score),))  # frame 12: 160 ms into the pause
    closing = [job for job in sim.jobs if job.words and not job.partial]  # asked 150 ms into the pause
    return closing[0] if closing else None


def said(sim: Sim, job: TranscribeJob, text: str) -> Transition:
    """The decode `job`'s words: `text`, spread over the speech before the pause (the first 256 ms)."""
    spoken = text.split()
    width = 8 * FRAME // len(spoken)
    return sim.decoded(job, tuple(rec.Word(f" {w}", i * width, (i + 1) * width) for i, w in enumerate(spoken)))


def stopped_at(sim: Sim) -> list[int]:
    return [e.audio_end_ms for e in only(sim.events, ev.SpeechStopped)]


def test_semantic_vad_ends_a_turn_when_the_words_of_a_sure_pause_arrive() -> None:
    sim = Sim("realtime")
    closing = semantic_pause(sim, EAGERNESS["auto"].complete_at)
    assert closing is not None and stopped_at(sim) == []  # sure, but the words of the pause are not back yet
    sim.frames([0.0] * 3)
    said(sim, closing, "Could you book a table tomorrow evening?")
    assert stopped_at(sim) == [16 * 32]  # at the audio the session had when they came: frame 15's end
    # and the answer follows, to the words of the closing decode
    (generate,) = [job for job in sim.jobs if isinstance(job, GenerateJob)]
    assert generate.messages[-1]["content"] == "Could you book a table tomorrow evening?"


@pytest.mark.parametrize("last", ["for", "the", "to.", "Americans,", "um"])
def test_semantic_vad_waits_when_the_words_of_the_pause_say_the_sentence_goes_on(last: str) -> None:
    sim = Sim("realtime")
    closing = semantic_pause(sim, 0.99)
    assert closing is not None
    said(sim, closing, f"Could you book a table {last}")
    sim.frames([0.0] * 200)
    # Sure as the score was, the turn lasts its eagerness's longest pause (auto: 4 s after the speech ended).
    assert stopped_at(sim) == [math.ceil((256 + EAGERNESS["auto"].longest_pause_ms) / 32) * 32]


def test_semantic_vad_reads_the_last_word_spoken_not_one_whisper_made_up_in_the_pause() -> None:
    sim = Sim("realtime")
    closing = semantic_pause(sim, 0.99)
    assert closing is not None
    spoken = tuple(rec.Word(f" {w}", i * 512, (i + 1) * 512) for i, w in enumerate(["Book", "a", "table", "for"]))
    made_up = rec.Word(" Thanks.", 12 * FRAME, 13 * FRAME)  # in the pause: the voice ended with frame 8
    sim.decoded(closing, (*spoken, made_up))
    sim.frames([0.0] * 20)
    assert stopped_at(sim) == []  # "for": the sentence goes on


def test_semantic_vad_does_not_wait_for_late_words_longer_than_words_wait_ms() -> None:
    sim = Sim("realtime")
    semantic_pause(sim, 0.99)
    sim.frames([0.0] * 200)  # the worker never answers
    assert stopped_at(sim) == [math.ceil((256 + WORDS_WAIT_MS) / 32) * 32]


def test_semantic_vad_takes_a_score_alone_where_nothing_is_transcribed() -> None:
    ends = {}
    for eagerness in ("low", "high"):
        sim = Sim("transcription")
        sim.update(transcription=None)  # no words to wait for
        assert semantic_pause(sim, 0.6, eagerness) is None
        sim.frames([0.0] * 300)
        ends[eagerness] = stopped_at(sim)
    # 0.6 is sure enough for high (ends with the scored frame, 13 * 32 ms) but not for low, which waits out its
    # longest pause of 8 s after the speech.
    assert ends == {"high": [13 * 32], "low": [math.ceil((256 + EAGERNESS["low"].longest_pause_ms) / 32) * 32]}


def test_semantic_vad_high_eagerness_goes_by_the_sound_alone() -> None:
    sim = Sim("realtime")
    closing = semantic_pause(sim, EAGERNESS["high"].complete_at, "high")
    assert closing is not None  # asked, but not waited for
    assert stopped_at(sim) == [13 * 32]


def test_speech_resuming_after_a_sure_score_keeps_the_turn_going() -> None:
    sim = Sim("realtime")
    semantic_pause(sim, 0.99)
    sim.frames([0.9] * 8 + [0.0] * 20)  # the words never came; the speaker went on, then paused unscored
    assert stopped_at(sim) == []


def test_manual_commit_during_vad_speech_commits_the_speech_item() -> None:
    sim = Sim("transcription")
    sim.frames([0.0] * 40 + [0.9] * 8)
    (started,) = only(sim.events, ev.SpeechStarted)
    transition = sim.commit("c1")
    assert types(transition.events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert transition.events[0].item_id == started.item_id  # type: ignore[attr-defined]
    (job,) = transition.jobs
    assert (job.start_sample, job.end_sample) == (15680, 48 * FRAME)
    sim.assert_job_covered(job)
    # The turn is over: silence afterwards does not stop it a second time.
    sim.frames([0.0] * 40)
    assert only(sim.events, ev.SpeechStopped) == []
    assert len(only(sim.events, ev.AudioCommitted)) == 1


def test_clear_during_speech_discards_the_turn() -> None:
    sim = Sim("transcription")
    sim.frames([0.0] * 8 + [0.9] * 8)
    (first,) = only(sim.events, ev.SpeechStarted)
    cleared = sim.clear("clr")
    assert types(cleared.events) == ["input_audio_buffer.cleared"]
    sim.frames([0.0] * 30)
    assert only(sim.events, ev.AudioCommitted) == []
    assert sim.jobs == []
    # The next turn is a new item and cannot reach back before the clear (16 * 512 = 8192 samples = 512 ms).
    sim.frames([0.9] * 4 + [0.0] * 16)
    started = only(sim.events, ev.SpeechStarted)
    assert len(started) == 2 and started[1].item_id != first.item_id
    assert started[1].audio_start_ms >= 512
    (committed,) = only(sim.events, ev.AudioCommitted)
    assert committed.item_id == started[1].item_id
    assert sim.jobs[0].start_sample >= 8192


# --- manual commits -------------------------------------------------------------------------------------------


def test_turn_detection_null_gives_no_speech_events_and_commit_makes_the_item() -> None:
    sim = Sim("transcription")
    updated = sim.update(turn_detection=None)
    assert types(updated.events) == ["session.updated"]
    assert updated.events[0].session.turn_detection is None  # type: ignore[attr-defined]
    first_audio_seq = sim.seq + 1
    appends = sim.frames([0.99] * 40)  # loud speech, but no VAD
    assert all(t.events == () and t.jobs == () for t in appends)
    transition = sim.commit("c1")
    assert types(transition.events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    committed = transition.events[0]
    assert isinstance(committed, ev.AudioCommitted)
    assert committed.previous_item_id is None
    (job,) = transition.jobs
    assert job.item_id == committed.item_id
    assert (job.start_sample, job.end_sample) == (0, 40 * FRAME)
    assert (job.first_seq, job.last_seq, job.first_sample) == (first_audio_seq, sim.seq - 1, 0)
    sim.assert_job_covered(job)
    assert not any(isinstance(e, ev.SpeechStarted | ev.SpeechStopped) for e in sim.events)


def test_consecutive_manual_commits_chain_items_and_ranges() -> None:
    sim = manual_session()
    sim.audio_ms(300)
    first = sim.commit()
    sim.audio_ms(250)
    second = sim.commit()
    assert second.events[0].previous_item_id == first.events[0].item_id  # type: ignore[attr-defined]
    assert second.events[1].previous_item_id == first.events[0].item_id  # type: ignore[attr-defined]
    assert (first.jobs[0].start_sample, first.jobs[0].end_sample) == (0, 4800)
    assert (second.jobs[0].start_sample, second.jobs[0].end_sample) == (4800, 8800)
    for job in sim.jobs:
        sim.assert_job_covered(job)


def test_commit_of_nothing_is_empty_with_the_spec_message() -> None:
    sim = Sim("transcription")
    transition = sim.commit("evt_client_1")
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.type == "invalid_request_error"
    assert error.error.code == "input_audio_buffer_commit_empty"
    assert error.error.event_id == "evt_client_1"
    assert error.error.param is None
    assert error.error.message == (
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
        "but buffer only has 0.00ms of audio."
    )
    assert transition.jobs == ()


@pytest.mark.parametrize("vad", [True, False])
def test_commit_under_100_ms_is_empty_and_keeps_the_buffer(vad: bool) -> None:
    sim = Sim("transcription") if vad else manual_session()
    sim.audio_samples(99 * SAMPLES_PER_MS, [0.0] * 3)  # 1584 samples: 3 frames
    transition = sim.commit("short")
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.code == "input_audio_buffer_commit_empty"
    assert error.error.event_id == "short"
    assert "99.00ms" in error.error.message
    # One more ms makes it 100 ms: the commit takes the whole buffer from sample 0.
    sim.audio_samples(SAMPLES_PER_MS)
    transition = sim.commit("enough")
    assert types(transition.events)[0] == "input_audio_buffer.committed"
    (job,) = transition.jobs
    assert (job.start_sample, job.end_sample) == (0, 100 * SAMPLES_PER_MS)
    sim.assert_job_covered(job)


def test_buffer_length_is_counted_in_input_ticks() -> None:
    # 100 ms of input audio (4800 ticks) whose 16 kHz rendition the resampler has not fully delivered yet.
    sim = manual_session()
    record = rec.AudioReceived(at_ms=AT_MS, ticks=100 * 48, pcm16k=bytes(2 * 1500), speech_probs=(0.0, 0.0))
    sim.feed(record)
    transition = sim.commit()
    assert types(transition.events)[0] == "input_audio_buffer.committed"
    assert (transition.jobs[0].start_sample, transition.jobs[0].end_sample) == (0, 1500)


@pytest.mark.parametrize("size", range(12))
def test_the_edge_reduces_audio_records_without_decoding_their_audio(size: int) -> None:
    # Read back as the edge reads them, audio records step the session exactly as when read whole.
    sim = Sim("transcription")
    sim.audio_ms(200)
    record = rec.AudioReceived(at_ms=AT_MS, ticks=3 * size, pcm16k=bytes(range(size)), speech_probs=(0.9,) * 2)
    unread = msgspec.json.decode(msgspec.json.encode(record), type=rec.ReducerRecord)
    assert isinstance(unread, rec.AudioReceivedUnread)
    assert unread.samples == record.samples == size // 2
    assert step(sim.state, unread, 2) == step(sim.state, record, 2)


def test_clear_then_commit_is_empty() -> None:
    sim = manual_session()
    sim.audio_ms(500)
    cleared = sim.clear("clr1")
    assert types(cleared.events) == ["input_audio_buffer.cleared"]
    assert cleared.jobs == ()
    transition = sim.commit("c2")
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.code == "input_audio_buffer_commit_empty"
    assert error.error.event_id == "c2"
    assert "0.00ms" in error.error.message
    # New audio after the clear is committed alone: from sample 8000 (500 ms) on.
    sim.audio_ms(200)
    transition = sim.commit()
    (job,) = transition.jobs
    assert (job.start_sample, job.end_sample) == (8000, 11200)
    sim.assert_job_covered(job)


# --- session.update -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"turn_detection": TurnDetectionUpdate(type="server_vad", threshold=2.0)}, f"{TD}.threshold"),
        ({"turn_detection": TurnDetectionUpdate(type="server_vad", threshold=-0.1)}, f"{TD}.threshold"),
        ({"turn_detection": TurnDetectionUpdate(type="server_vad", prefix_padding_ms=-1)}, f"{TD}.prefix_padding_ms"),
        (
            {"turn_detection": TurnDetectionUpdate(type="server_vad", silence_duration_ms=10_001)},
            f"{TD}.silence_duration_ms",
        ),
        ({"turn_detection": TurnDetectionUpdate(type="server_vad", idle_timeout_ms=100)}, f"{TD}.idle_timeout_ms"),
        ({"type": "realtime"}, "session.type"),
    ],
)
def test_invalid_update_is_an_error_and_changes_nothing(fields: dict[str, object], param: str) -> None:
    sim = Sim("transcription")
    before = sim.state
    transition = sim.update(event_id="upd_1", **fields)
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.type == "invalid_request_error"
    assert error.error.code == "invalid_value"
    assert error.error.param == param
    assert error.error.event_id == "upd_1"
    # Only the id counter moved (the error needed an event id).
    assert msgspec.structs.replace(sim.state, next_id=before.next_id) == before


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"speed": 3.0}, "session.audio.output.speed"),
        ({"max_output_tokens": 5000}, "session.max_output_tokens"),
        ({"type": "transcription"}, "session.type"),
    ],
)
def test_invalid_realtime_update_is_all_or_nothing(fields: dict[str, object], param: str) -> None:
    sim = Sim("realtime", model="gpt-realtime")
    before = sim.state.config
    transition = sim.update(event_id="u", instructions="be brief", voice="ash", **fields)
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.param == param
    assert sim.state.config == before  # the valid fields of the same update were not applied either
    assert sim.state.config.instructions != "be brief"


def test_partial_turn_detection_update_keeps_other_fields() -> None:
    sim = Sim("realtime", model="gpt-realtime", transcription_model="whisper-base")
    sim.update(voice="ash", instructions="hi")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", threshold=0.7, silence_duration_ms=800))
    transition = sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", prefix_padding_ms=100))
    (updated,) = transition.events
    assert isinstance(updated, ev.SessionUpdated)
    assert updated.session_id == SID
    td = updated.session.turn_detection
    assert td == TurnDetection(type="server_vad", threshold=0.7, prefix_padding_ms=100, silence_duration_ms=800)
    # The full effective session is reported, not only the change.
    assert updated.session.voice == "ash"
    assert updated.session.instructions == "hi"
    assert updated.session.transcription == Transcription(model="whisper-base")
    assert sim.state.config == updated.session


def test_turn_detection_type_change_starts_from_that_types_defaults() -> None:
    sim = Sim("transcription")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", threshold=0.8, silence_duration_ms=900))
    sim.update(turn_detection=TurnDetectionUpdate(type="semantic_vad", eagerness="high"))
    assert sim.state.config.turn_detection == TurnDetection(type="semantic_vad", eagerness="high")


def test_update_merges_transcription_and_clears_nullable_fields() -> None:
    sim = Sim("transcription", transcription_model="whisper-small")
    sim.update(transcription=TranscriptionUpdate(language="fr"), noise_reduction=NoiseReduction(type="near_field"))
    assert sim.state.config.transcription == Transcription(model="whisper-small", language="fr")
    assert sim.state.config.noise_reduction == NoiseReduction(type="near_field")
    sim.update(noise_reduction=None)
    assert sim.state.config.noise_reduction is None
    assert sim.state.config.transcription == Transcription(model="whisper-small", language="fr")
    # Turning transcription on in a realtime session falls back to the server's default model.
    realtime = Sim("realtime", model="gpt-realtime")
    realtime.update(transcription=TranscriptionUpdate(language="en"))
    assert realtime.state.config.transcription == Transcription(model=DEFAULT_STT, language="en")


def test_disabling_turn_detection_mid_speech_ends_vad_and_commit_still_works() -> None:
    sim = Sim("transcription")
    sim.frames([0.0] * 4 + [0.9] * 8)
    assert len(only(sim.events, ev.SpeechStarted)) == 1
    sim.update(turn_detection=None)
    assert sim.state.speaking is None
    sim.frames([0.0] * 40)
    assert only(sim.events, ev.SpeechStopped) == []
    transition = sim.commit()
    assert types(transition.events)[0] == "input_audio_buffer.committed"
    # The whole buffer, speech included, is the item.
    (job,) = transition.jobs
    assert (job.start_sample, job.end_sample) == (0, 52 * FRAME)
    sim.assert_job_covered(job)


# --- transcription results ------------------------------------------------------------------------------------


def committed_item(sim: Sim) -> str:
    sim.audio_ms(500)
    transition = sim.commit()
    return transition.events[0].item_id  # type: ignore[attr-defined,no-any-return]


def test_transcription_delta_and_completed_for_an_awaited_item() -> None:
    sim = manual_session()
    item = committed_item(sim)
    delta = sim.stt_delta(item, "Hello")
    (event,) = delta.events
    assert isinstance(event, ev.TranscriptDelta)
    assert (event.item_id, event.delta, event.content_index) == (item, "Hello", 0)
    sim.stt_delta(item, " world", index=1)
    completed = sim.stt_completed(item, "Hello world", seconds=1.23456)
    (done,) = completed.events
    assert isinstance(done, ev.TranscriptCompleted)
    assert (done.item_id, done.transcript, done.content_index) == (item, "Hello world", 0)
    assert done.usage == ev.DurationUsage(seconds=1.235)
    assert sim.state.transcribing == ()


def test_completed_is_emitted_once_and_later_results_are_ignored() -> None:
    sim = manual_session()
    item = committed_item(sim)
    assert len(sim.stt_completed(item, "first").events) == 1
    state = sim.state
    for transition in (sim.stt_completed(item, "again"), sim.stt_delta(item, "late"), sim.stt_failed(item, "x")):
        assert transition.events == () and transition.jobs == ()
    assert sim.state == state
    assert len(only(sim.events, ev.TranscriptCompleted)) == 1


def test_results_for_unknown_items_are_ignored() -> None:
    sim = manual_session()
    committed_item(sim)
    state = sim.state
    for transition in (
        sim.stt_delta("item_unknown", "x"),
        sim.stt_completed("item_unknown", "x"),
        sim.stt_failed("item_unknown", "x"),
    ):
        assert transition.events == ()
    assert sim.state == state


def test_conversation_transcripts_are_silent_without_input_transcription() -> None:
    sim = Sim("realtime", model="gpt-realtime")  # no input transcription configured
    sim.update(turn_detection=None)
    item = committed_item(sim)
    assert [j.item_id for j in sim.jobs] == [item]
    assert sim.stt_delta(item, "x").events == ()
    assert sim.stt_completed(item, "x").events == ()  # the transcript goes into the conversation only
    assert sim.stt_completed(item, "x").events == ()


def test_transcription_failure() -> None:
    sim = manual_session()
    item = committed_item(sim)
    transition = sim.stt_failed(item, "model crashed")
    (failed,) = transition.events
    assert isinstance(failed, ev.TranscriptFailed)
    assert failed.item_id == item
    assert failed.content_index == 0
    assert failed.error.type == "server_error"
    assert failed.error.code == "transcription_failed"
    assert "model crashed" in failed.error.message
    assert sim.stt_completed(item, "too late").events == ()
    # Not an `error` event: the session goes on.
    assert not transition.close
    assert types(sim.commit().events) == ["error"]  # empty buffer, but answered
    sim.audio_ms(200)
    assert types(sim.commit().events)[0] == "input_audio_buffer.committed"


def test_results_of_several_items_may_arrive_out_of_order() -> None:
    sim = manual_session()
    first, second = committed_item(sim), committed_item(sim)
    assert sim.state.transcribing == (first, second)
    assert sim.stt_completed(second, "two").events[0].item_id == second  # type: ignore[attr-defined]
    assert sim.stt_completed(first, "one").events[0].item_id == first  # type: ignore[attr-defined]
    assert sim.state.transcribing == ()


# --- errors, expiry, close ------------------------------------------------------------------------------------


def test_rejected_client_event_becomes_an_error_echoing_it() -> None:
    sim = Sim("transcription")
    record = rec.ClientEventRejected(
        at_ms=AT_MS, code="invalid_value", message="bad audio", param="audio", event_id="evt_9"
    )
    (error,) = sim.feed(record).events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error == ev.ErrorDetail(
        type="invalid_request_error", code="invalid_value", message="bad audio", param="audio", event_id="evt_9"
    )


@pytest.mark.parametrize("session_type", ["transcription", "realtime"])
def test_unserved_request_is_an_invalid_value_error_on_type(session_type: str) -> None:
    sim = Sim(session_type, model="gpt-realtime")
    transition = sim.client(ev.UnservedRequest(event_type="response.create", event_id="r1"))
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.code == "invalid_value"
    assert error.error.param == "type"
    assert error.error.event_id == "r1"
    assert "response.create" in error.error.message
    assert not transition.close


@pytest.mark.parametrize(("seconds", "wording"), [(3600, "60 minutes"), (1800, "30 minutes"), (90, "90 seconds")])
def test_expiry_is_a_session_expired_error_and_closes(seconds: int, wording: str) -> None:
    sim = Sim("transcription", max_duration_s=seconds)
    transition = sim.feed(rec.SessionExpired(at_ms=AT_MS))
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.code == "session_expired"
    assert error.error.message == f"Your session hit the maximum duration of {wording}."
    assert transition.close is True
    assert sim.state.closed is True


def feed_everything(sim: Sim, item: str) -> list[Transition]:
    return [
        sim.audio_ms(500, 0.9),
        sim.commit("c"),
        sim.clear(),
        sim.update(instructions="x"),
        sim.client(ev.UnservedRequest(event_type="response.create")),
        sim.feed(rec.ClientEventRejected(at_ms=AT_MS, code="invalid_json", message="m")),
        sim.stt_delta(item, "x"),
        sim.stt_completed(item, "x"),
        sim.stt_failed(item, "x"),
        sim.feed(rec.SessionExpired(at_ms=AT_MS)),
        sim.feed(rec.SessionClosed(at_ms=AT_MS, reason="again")),
    ]


@pytest.mark.parametrize(
    "ending", [rec.SessionClosed(at_ms=AT_MS, reason="client_disconnected"), rec.SessionExpired(at_ms=AT_MS)]
)
def test_nothing_is_emitted_after_the_session_ends(ending: rec.Record) -> None:
    sim = manual_session()
    item = committed_item(sim)
    closing = sim.feed(ending)
    if isinstance(ending, rec.SessionClosed):
        assert closing.events == ()
    assert sim.state.closed
    state = sim.state
    for transition in feed_everything(sim, item):
        assert transition.events == () and transition.jobs == () and transition.close is False
        assert transition.state == state


def test_a_second_session_opened_record_is_a_server_error() -> None:
    sim = Sim("transcription")
    transition = sim.feed(opened("transcription"))
    (error,) = transition.events
    assert isinstance(error, ev.ErrorEvent)
    assert error.error.type == "server_error"
    assert sim.state.config == sim.created.state.config


# --- ids ------------------------------------------------------------------------------------------------------


def scenario(session_id: str = SID) -> tuple[list[ev.ServerEvent], list[TranscribeJob]]:
    sim = Sim("transcription", session_id=session_id)
    sim.frames(FIRST_TURN + [0.0] * 4 + [0.9] * 10 + [0.0] * 18)
    items = [e.item_id for e in only(sim.events, ev.AudioCommitted)]
    sim.stt_delta(items[0], "a")
    sim.stt_completed(items[0], "a")
    sim.stt_failed(items[1], "b")
    sim.commit("c")
    sim.update(turn_detection=None)
    sim.audio_ms(300)
    sim.commit()
    sim.client(ev.UnservedRequest(event_type="response.create"))
    sim.feed(rec.SessionExpired(at_ms=AT_MS))
    return sim.events, sim.jobs


def test_ids_are_deterministic_and_unique() -> None:
    events, jobs = scenario()
    again, jobs_again = scenario()
    assert msgspec.json.encode(events) == msgspec.json.encode(again)
    assert msgspec.json.encode(jobs) == msgspec.json.encode(jobs_again)
    event_ids = [e.event_id for e in events]
    assert len(event_ids) == len(set(event_ids)) > 10
    assert all(i.startswith("event_") for i in event_ids)
    item_ids = [e.item_id for e in only(events, ev.AudioCommitted)]
    job_ids = [j.job_id for j in jobs]
    assert len(item_ids) == 3 and all(i.startswith("item_") for i in item_ids)
    assert all(i.startswith("job_") for i in job_ids)
    everything = event_ids + item_ids + job_ids
    assert len(everything) == len(set(everything))
    # Another session gets other ids.
    other, _ = scenario("sess_other")
    assert not set(event_ids) & {e.event_id for e in other}


# --- what the input buffer holds ---------------------------------------------------------------------------
# With turn detection on, silence older than the prefix padding can never join a turn, so it leaves the buffer
# (memory stays bounded). Whatever the buffer holds, a job must read exactly the records that hold its audio.

PADDING = 300 * 16


def test_manual_commit_in_vad_mode_commits_what_the_buffer_still_holds() -> None:
    sim = Sim("transcription")  # server_vad on, no speech detected
    sim.frames([0.0] * 80, per_record=4)  # 20 records, 2.56 s
    (job,) = sim.commit("c").jobs
    assert (job.start_sample, job.end_sample) == (80 * FRAME - PADDING - FRAME, 80 * FRAME)
    sim.assert_job_covered(job)


def test_commit_after_disabling_vad_keeps_everything_since() -> None:
    sim = Sim("transcription")
    sim.frames([0.0] * 80)
    sim.update(turn_detection=None)
    sim.frames([0.0] * 8)
    (job,) = sim.commit().jobs
    assert (job.start_sample, job.end_sample) == (80 * FRAME - PADDING - FRAME, 88 * FRAME)
    sim.assert_job_covered(job)


def test_larger_prefix_padding_after_silence_reaches_back_only_to_the_buffer() -> None:
    sim = Sim("transcription")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", prefix_padding_ms=0))
    sim.frames([0.0] * 80)
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", prefix_padding_ms=1000))
    sim.frames([0.9] * 8 + [0.0] * 16)
    (started,) = only(sim.events, ev.SpeechStarted)
    assert started.audio_start_ms == (80 * FRAME - FRAME) // 16  # the buffer kept one frame at padding 0
    (job,) = sim.jobs
    sim.assert_job_covered(job)


# --- live transcription ---------------------------------------------------------------------------------------

# An utterance for the live decodes: nine words of 175 ms from sample 20480 (frame 40) on; speech frames 40..93
# (to 48128).
SPOKEN = ["ask", "not", "what", "your", "country", "can", "do", "for", "you"]
WORD = 2800
LIVE_TURN = [0.0] * 40 + [0.9] * 54 + [0.0] * 20


def heard(job: TranscribeJob) -> str:
    """What a decode of the job's audio hears: the words that lie wholly inside it."""
    return " ".join(
        w
        for i, w in enumerate(SPOKEN)
        if job.start_sample <= 20480 + i * WORD and 20480 + (i + 1) * WORD <= job.end_sample
    )


def speak(sim: Sim, probs: Sequence[float], answer: bool = True) -> list[ev.ServerEvent]:
    """Feed frames a record at a time; each decode is answered as soon as it is asked for (if `answer`)."""
    events: list[ev.ServerEvent] = []
    for i in range(0, len(probs), 4):
        asked = len(sim.jobs)
        events += sim.frames(probs[i : i + 4])[0].events
        for job in sim.jobs[asked:]:
            if answer and job.words:
                events += sim.words(job, heard(job), as_said=True).events
    return events


def test_words_two_decodes_agree_on_go_out_while_the_user_speaks():
    sim = Sim("transcription")
    events = speak(sim, LIVE_TURN)
    kinds = types(events)
    stopped_at = kinds.index("input_audio_buffer.speech_stopped")
    deltas = [e.delta for e in only(events, ev.TranscriptDelta)]
    early = [e.delta for e in only(events[:stopped_at], ev.TranscriptDelta)]
    assert len(early) >= 3, "stable words go out while the user speaks"
    (completed,) = only(events, ev.TranscriptCompleted)
    assert completed.transcript == " ".join(SPOKEN)
    assert "".join(deltas) == completed.transcript
    assert not deltas[0].startswith(" ") and all(d.startswith(" ") for d in deltas[1:])
    # The closing decode came back before the VAD ended the turn: the transcript completes with the stop.
    assert kinds[stopped_at:] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        *(["conversation.item.input_audio_transcription.delta"] * (len(deltas) - len(early))),
        "conversation.item.input_audio_transcription.completed",
    ]
    assert all(job.words for job in sim.jobs) and sim.state.finishing == () and sim.state.transcribing == ()


def test_a_decode_is_asked_for_only_when_the_last_one_is_back():
    sim = Sim("transcription")
    speak(sim, LIVE_TURN[:80], answer=False)
    (partial,) = sim.jobs  # speech goes on, but the first decode is still out
    sim.words(partial, heard(partial))
    speak(sim, LIVE_TURN[80:84], answer=False)
    assert len(sim.jobs) == 2


def test_the_commit_waits_for_the_closing_decode_and_ignores_older_ones():
    sim = Sim("transcription")
    speak(sim, LIVE_TURN[:88], answer=False)
    speak(sim, LIVE_TURN[88:], answer=False)  # silence: the closing decode; then the stop
    partial, closing = sim.jobs
    assert only(sim.events, ev.AudioCommitted) and not only(sim.events, ev.TranscriptDelta)
    assert sim.words(partial, heard(partial)).events == ()  # overtaken by the closing decode
    done = sim.words(closing, heard(closing))
    assert [e.delta for e in only(done.events, ev.TranscriptDelta)] == [" ".join(SPOKEN)]
    assert [e.transcript for e in only(done.events, ev.TranscriptCompleted)] == [" ".join(SPOKEN)]


def test_words_made_up_in_the_closing_silence_are_dropped():
    sim = Sim("transcription")
    speak(sim, LIVE_TURN, answer=False)
    closing = sim.jobs[-1]
    # A word after the last voice (frame 93 ends at 48128), as whisper invents them in silence.
    made_up = rec.Word(text=" thanks", start=50000, end=50600)
    words = (rec.Word(text=" ask", start=20480, end=23280), made_up)
    done = sim.decoded(closing, words)
    assert [e.transcript for e in only(done.events, ev.TranscriptCompleted)] == ["ask"]


def test_speech_that_resumes_after_the_closing_decode_is_decoded_again():
    sim = Sim("transcription")
    # Speech, 320 ms of silence (the closing decode goes out), speech again, then the end of the turn.
    speak(sim, [0.0] * 40 + [0.9] * 20 + [0.0] * 10 + [0.9] * 10 + [0.0] * 20, answer=False)
    assert len(only(sim.events, ev.SpeechStarted)) == 1
    *_, first_closing, second_closing = sim.jobs
    assert first_closing.end_sample < second_closing.end_sample
    assert first_closing.job_id in sim.withdrawn, "withdrawn when the speech resumed: that pause did not end the turn"
    assert [t.awaited for t in sim.state.finishing] == [second_closing.job_id]
    assert sim.words(first_closing, "ask not").events == ()
    done = sim.words(second_closing, "ask not what")
    assert [e.transcript for e in only(done.events, ev.TranscriptCompleted)] == ["ask not what"]


def test_a_withdrawn_decode_of_the_live_turn_lets_the_next_one_be_asked():
    sim = Sim("transcription")
    # Speech, 320 ms of silence (the closing decode goes out), then speech again, for long: it is withdrawn.
    speak(sim, [0.0] * 40 + [0.9] * 20 + [0.0] * 10 + [0.9] * 40, answer=False)
    partial, closing = sim.jobs
    assert sim.withdrawn == [closing.job_id] and not closing.partial
    sim.words(partial, heard(partial))
    asked = len(sim.jobs)
    sim.feed(
        rec.TranscriptionFailed(
            at_ms=AT_MS, job_id=closing.job_id, item_id=closing.item_id, message="Withdrawn", worker="edge"
        )
    )
    assert not only(sim.events, ev.TranscriptFailed), "a withdrawn decode of the live turn fails nothing"
    sim.audio_samples(FRAME * 30, [0.9] * 30)
    assert len(sim.jobs) > asked and sim.jobs[-1].partial, "decoding goes on while the user speaks"


def test_partial_decodes_thin_out_while_the_workers_are_behind():
    sim = Sim("transcription")
    probs = [0.0] * 40 + [0.9] * 200
    speak(sim, probs[:80], answer=False)
    (partial,) = sim.jobs
    sim.clock += 1800
    sim.decoded(partial, (), waited_ms=1500)  # it waited 1.5 s for a worker
    speak(sim, probs[80:120], answer=False)  # 1.3 s more speech, at that time
    assert len(sim.jobs) == 1, "the next partial decode waits as long as the last one did"
    sim.clock += 1500
    speak(sim, probs[120:124], answer=False)
    (late,) = sim.jobs[1:]
    assert late.partial and late.asked_ms == sim.clock
    sim.feed(
        rec.TranscriptionFailed(
            at_ms=sim.clock, job_id=late.job_id, item_id=late.item_id, message=f"{TRANSCRIPTION_LATE}.", worker="w"
        )
    )
    speak(sim, probs[124:160], answer=False)
    assert len(sim.jobs) == 2, "one not started by its deadline holds the next back as long"
    sim.clock += PARTIAL_DECODE_WAIT_MS
    speak(sim, probs[160:164], answer=False)
    assert len(sim.jobs) == 3 and sim.jobs[-1].partial


def test_without_incremental_decoding_only_the_closing_decode_runs():
    sim = Sim("transcription")
    sim.update(transcription=TranscriptionUpdate(incremental=False))
    events = speak(sim, LIVE_TURN)
    (job,) = sim.jobs
    assert (job.start_sample, job.words) == (15680, True)
    assert types(events)[-2:] == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert only(events, ev.TranscriptCompleted)[0].transcript == " ".join(SPOKEN)


def test_a_cleared_turn_ignores_its_decodes():
    sim = Sim("transcription")
    speak(sim, LIVE_TURN[:80], answer=False)
    (partial,) = sim.jobs
    sim.clear()
    assert sim.state.live is None
    assert sim.words(partial, heard(partial)).events == ()


def test_the_language_of_the_first_stable_words_is_kept_for_later_decodes():
    sim = Sim("transcription")
    speak(sim, LIVE_TURN[:80], answer=False)
    first = sim.jobs[0]
    assert first.language is None
    sim.words(first, heard(first), language="de")  # nothing stable yet: no language kept
    assert sim.state.heard_language is None
    speak(sim, LIVE_TURN[80:84], answer=False)
    second = sim.jobs[1]
    sim.words(second, heard(second), language="en")
    assert sim.state.heard_language == "en"
    speak(sim, LIVE_TURN[84:], answer=False)
    assert sim.jobs[-1].language == "en"


def test_a_failed_closing_decode_fails_the_item():
    sim = Sim("transcription")
    speak(sim, LIVE_TURN, answer=False)
    closing = sim.jobs[-1]
    failed = sim.feed(
        rec.TranscriptionFailed(at_ms=AT_MS, job_id=closing.job_id, item_id=closing.item_id, message="boom", worker="w")
    )
    assert types(failed.events) == ["conversation.item.input_audio_transcription.failed"]
    assert sim.state.transcribing == () and sim.state.finishing == ()


# A turn of 90 s that never pauses (2812 frames of speech), then the silence that ends it.
LONG_TURN = [0.9] * 2812 + [0.0] * 20
SLOT = 8000  # a made-up word every 500 ms of the turn


def test_a_long_turn_whose_decodes_find_nothing_is_decoded_in_windows_of_bounded_length():
    sim = Sim("transcription")
    for i in range(0, len(LONG_TURN), 4):
        asked = len(sim.jobs)
        sim.frames(LONG_TURN[i : i + 4])
        for job in sim.jobs[asked:]:
            sim.decoded(job, ())
    windows = [job.end_sample - job.start_sample for job in sim.jobs]
    assert len(windows) > 100 and max(windows) == MAX_WINDOW_MS * SAMPLES_PER_MS
    # The work per second of speech stays bounded: no decode of a long turn covers it from its start.
    assert sum(windows) / (len(LONG_TURN) * FRAME) < MAX_WINDOW_MS / 800
    for job in sim.jobs:
        sim.assert_job_covered(job)
    (completed,) = only(sim.events, ev.TranscriptCompleted)
    assert completed.transcript == ""


def unagreed_long_turn(frames_at_once: int) -> Sim:
    """LONG_TURN, `frames_at_once` frames at a time, each decode asked meanwhile answered after them with a word
    every 500 ms that no other decode agrees on."""
    sim = Sim("transcription")
    for i in range(0, len(LONG_TURN), frames_at_once):
        asked = len(sim.jobs)
        sim.frames(LONG_TURN[i : i + frames_at_once])
        for job in sim.jobs[asked:]:
            slots = range(-(-job.start_sample // SLOT), job.end_sample // SLOT)
            words = tuple(rec.Word(f" d{len(sim.jobs)}s{n}", n * SLOT, n * SLOT + SLOT // 2) for n in slots)
            sim.decoded(job, tuple(w for w in words if w.end <= job.end_sample))
    return sim


def assert_a_word_from_each_slot_in_order(transcript: str) -> None:
    """Nothing is lost, nothing said twice: a word from each 500 ms of the turn, in order."""
    heard_slots = [int(word.split("s")[1]) for word in transcript.split()]
    assert heard_slots == list(range(heard_slots[0], heard_slots[-1] + 1)), "speech lost or said twice"
    assert heard_slots[0] <= 1 and heard_slots[-1] >= len(LONG_TURN) * FRAME // SLOT - 3


def test_speech_that_arrives_while_a_decode_runs_is_heard_by_a_later_decode_however_much_of_it_there_is():
    # A client sending faster than real time: 300 frames (9.6 s, more than a window) arrive while each decode runs.
    sim = unagreed_long_turn(300)
    (completed,) = only(sim.events, ev.TranscriptCompleted)
    assert_a_word_from_each_slot_in_order(completed.transcript)


def test_words_of_a_long_turn_that_leave_the_window_unagreed_become_stable():
    sim = unagreed_long_turn(4)
    assert max(job.end_sample - job.start_sample for job in sim.jobs) <= MAX_WINDOW_MS * SAMPLES_PER_MS
    (completed,) = only(sim.events, ev.TranscriptCompleted)
    assert "".join(e.delta for e in only(sim.events, ev.TranscriptDelta)) == completed.transcript
    assert_a_word_from_each_slot_in_order(completed.transcript)
