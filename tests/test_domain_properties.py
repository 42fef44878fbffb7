"""Property-based tests of the session state machine over random record sequences."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from domain import events as ev
from domain import records as rec
from domain.jobs import TranscribeJob
from domain.session import SessionState, open_session, step
from domain.session_config import SessionUpdate, TranscriptionUpdate, TurnDetectionUpdate

FRAME = 512
TICKS_PER_SAMPLE = 3
AT_MS = 1_700_000_000_000
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- actions --------------------------------------------------------------------------------------------------
# Actions are plain tuples; `play` turns them into records, resolving item references against the items the
# session has committed so far, and keeps the audio consistent (each append carries the VAD frames it completes).

probability = st.one_of(st.sampled_from([0.0, 0.05, 0.3, 0.4, 0.6, 0.95, 1.0]), st.floats(0.0, 1.0))
audio_action = st.tuples(
    st.just("audio"),
    st.one_of(st.integers(0, 8192), st.sampled_from([320, 512, 1600, 2048, 4800])),
    st.lists(probability, min_size=1, max_size=6),
)
silence_action = st.tuples(st.just("audio"), st.integers(4096, 16384), st.just([0.0]))
speech_action = st.tuples(st.just("audio"), st.integers(512, 8192), st.just([0.95]))
raw_audio_action = st.tuples(
    st.just("raw_audio"), st.integers(0, 5000), st.lists(probability, max_size=12), st.integers(0, 20_000)
)
event_id = st.one_of(st.none(), st.text("abcdef0123456789_", min_size=1, max_size=8))
turn_detection_update = st.one_of(
    st.none(),
    st.builds(
        TurnDetectionUpdate,
        type=st.sampled_from(["server_vad", "semantic_vad"]),
        threshold=st.one_of(st.floats(0.0, 1.0), st.sampled_from([2.0, -0.5])),
        prefix_padding_ms=st.integers(0, 1200),
        silence_duration_ms=st.integers(0, 1500),
        eagerness=st.sampled_from(["low", "medium", "high", "auto"]),
    ),
    st.builds(TurnDetectionUpdate, type=st.just("server_vad")),
)
session_update = st.one_of(
    st.builds(SessionUpdate, turn_detection=turn_detection_update),
    st.builds(
        SessionUpdate,
        transcription=st.one_of(st.none(), st.builds(TranscriptionUpdate, language=st.sampled_from(["en", None]))),
    ),
    st.builds(SessionUpdate, type=st.sampled_from(["realtime", "transcription"])),
    st.builds(SessionUpdate, instructions=st.text(max_size=5), speed=st.sampled_from([1.0, 0.1, 2.0])),
)
item_ref = st.one_of(st.none(), st.integers(0, 20))
client_actions = st.one_of(
    st.tuples(st.just("commit"), event_id),
    st.tuples(st.just("clear"), event_id),
    st.tuples(st.just("update"), session_update, event_id),
    st.tuples(st.just("unserved"), st.sampled_from(["response.create", "conversation.item.create"]), event_id),
    st.tuples(st.just("rejected"), event_id),
)
# A decode of one of the live jobs so far: words from a small vocabulary (so that decodes agree), spread evenly
# over the job's audio, or shifted back by up to a second.
vocabulary = st.lists(st.sampled_from(["ask", "not", "what", "your", "Country,", "..."]), max_size=6)
words_action = st.tuples(st.just("words"), st.integers(0, 20), vocabulary, st.integers(0, 16_000))
stt_actions = st.one_of(
    words_action,
    st.tuples(st.just("delta"), item_ref, st.text(max_size=4)),
    st.tuples(st.just("completed"), item_ref, st.text(max_size=4), st.floats(0.0, 30.0)),
    st.tuples(st.just("failed"), item_ref),
)
ending_actions = st.sampled_from([("expire",), ("close",)])


def _burst(speech: int, silence: int, chunk: int) -> list[tuple[Any, ...]]:
    """A spoken turn: `speech` samples of speech then `silence` samples of silence, in appends of `chunk`."""
    actions: list[tuple[Any, ...]] = []
    for total, level in ((speech, 0.95), (silence, 0.0)):
        actions += [("audio", min(chunk, total - done), [level]) for done in range(0, total, chunk)]
    return actions


# Speech long enough to start a turn, then enough silence (> 500 ms + a frame) to stop it with the defaults.
burst = st.builds(
    _burst, st.integers(512, 12_000), st.integers(9_000, 20_000), st.sampled_from([320, 1600, 2048, 4800])
)


def sequences(*singles: st.SearchStrategy[tuple[Any, ...]], bursts: bool = True) -> st.SearchStrategy[list[Any]]:
    parts = [s.map(lambda action: [action]) for s in singles]
    if bursts:
        parts += [burst, burst]
    return st.lists(st.one_of(*parts), max_size=25).map(lambda chunks: [a for chunk in chunks for a in chunk])


everything = sequences(
    audio_action,
    silence_action,
    speech_action,
    raw_audio_action,
    client_actions,
    stt_actions,
    stt_actions,
    ending_actions,
)
consistent = sequences(audio_action, silence_action, speech_action, client_actions, stt_actions, stt_actions)
# Audio and results only: no client intervention in a turn.
audio_only = sequences(
    audio_action, silence_action, speech_action, stt_actions, stt_actions, st.tuples(st.just("rejected"), event_id)
)
session_types = st.sampled_from(["transcription", "realtime"])


@dataclass
class Run:
    events: list[ev.ServerEvent] = field(default_factory=list)
    steps: list[tuple[Any, tuple[ev.ServerEvent, ...]]] = field(default_factory=list)  # (action, its events)
    jobs: list[TranscribeJob] = field(default_factory=list)
    states: list[SessionState] = field(default_factory=list)
    audio: dict[int, tuple[int, int]] = field(default_factory=dict)  # seq -> (first sample, sample count)
    transcription_on: list[bool] = field(default_factory=list)  # per commit: did the session transcribe
    closes: list[bool] = field(default_factory=list)


def play(actions: Sequence[tuple[Any, ...]], session_type: str = "transcription", manual: bool = False) -> Run:
    created = open_session(
        rec.SessionOpened(
            at_ms=AT_MS,
            session_id="sess_prop",
            session_type=session_type,  # type: ignore[arg-type]
            dialect="ga",
            default_stt_model="whisper-base",
            max_duration_s=3600,
            model="gpt-realtime" if session_type == "realtime" else None,
            transcription_model="whisper-base",
        )
    )
    run = Run(events=list(created.events))
    state = created.state
    seq = 0
    samples = 0
    items: list[str] = []

    def feed(action: Any, record: rec.Record) -> None:
        nonlocal state, seq
        seq += 1
        snapshot = msgspec.json.encode(state)
        transition = step(state, record, seq)
        assert msgspec.json.encode(state) == snapshot, "step mutated its input"
        state = transition.state
        run.events.extend(transition.events)
        run.steps.append((action, transition.events))
        run.jobs.extend(j for j in transition.jobs if isinstance(j, TranscribeJob))
        run.states.append(state)
        run.closes.append(transition.close)
        for event in transition.events:
            if isinstance(event, ev.AudioCommitted):
                items.append(event.item_id)
                run.transcription_on.append(
                    any(isinstance(job, TranscribeJob) and job.item_id == event.item_id for job in transition.jobs)
                )

    def item(ref: int | None) -> str:
        return items[ref % len(items)] if ref is not None and items else "item_unknown"

    if manual:
        feed(
            ("update",),
            rec.ClientEventReceived(at_ms=AT_MS, event=ev.SessionUpdateRequested(SessionUpdate(turn_detection=None))),
        )
    for action in actions:
        kind = action[0]
        if kind == "audio":
            _, count, pattern = action
            frames = (samples + count) // FRAME - samples // FRAME
            probs = tuple(pattern[i % len(pattern)] for i in range(frames))
            run.audio[seq + 1] = (samples, count)
            samples += count
            record: rec.Record = rec.AudioReceived(
                at_ms=AT_MS, ticks=count * TICKS_PER_SAMPLE, pcm16k=bytes(2 * count), speech_probs=probs
            )
        elif kind == "raw_audio":  # inconsistent on purpose: any byte count, any number of frames, any ticks
            _, count, probs, ticks = action
            record = rec.AudioReceived(at_ms=AT_MS, ticks=ticks, pcm16k=bytes(count), speech_probs=tuple(probs))
        elif kind == "commit":
            record = rec.ClientEventReceived(at_ms=AT_MS, event=ev.AudioCommitRequested(event_id=action[1]))
        elif kind == "clear":
            record = rec.ClientEventReceived(at_ms=AT_MS, event=ev.AudioClearRequested(event_id=action[1]))
        elif kind == "update":
            record = rec.ClientEventReceived(at_ms=AT_MS, event=ev.SessionUpdateRequested(action[1], action[2]))
        elif kind == "unserved":
            record = rec.ClientEventReceived(at_ms=AT_MS, event=ev.UnservedRequest(action[1], action[2]))
        elif kind == "rejected":
            record = rec.ClientEventRejected(at_ms=AT_MS, code="invalid_json", message="m", event_id=action[1])
        elif kind == "words":
            _, ref, texts, shift = action
            live = [j for j in run.jobs if j.words]
            job = live[ref % len(live)] if live else None
            start, end = (job.start_sample, job.end_sample) if job else (0, 1)
            width = (end - start) // max(len(texts), 1)
            words = tuple(
                rec.Word(text=f" {t}", start=max(0, start + i * width - shift), end=start + (i + 1) * width)
                for i, t in enumerate(texts)
            )
            record = rec.WordsDecoded(
                at_ms=AT_MS,
                job_id=job.job_id if job else "j",
                item_id=job.item_id if job else "item_unknown",
                start_sample=start,
                end_sample=end,
                words=words,
                worker="w",
            )
        elif kind == "delta":
            record = rec.TranscriptionDeltaProduced(
                at_ms=AT_MS, job_id="j", item_id=item(action[1]), index=0, text=action[2], worker="w"
            )
        elif kind == "completed":
            record = rec.TranscriptionCompleted(
                at_ms=AT_MS,
                job_id="j",
                item_id=item(action[1]),
                transcript=action[2],
                audio_seconds=action[3],
                worker="w",
            )
        elif kind == "failed":
            record = rec.TranscriptionFailed(at_ms=AT_MS, job_id="j", item_id=item(action[1]), message="x", worker="w")
        elif kind == "expire":
            record = rec.SessionExpired(at_ms=AT_MS)
        elif kind == "close":
            record = rec.SessionClosed(at_ms=AT_MS, reason="bye")
        else:  # pragma: no cover
            raise AssertionError(kind)
        feed(action, record)
    return run


def encoded(run: Run) -> bytes:
    return msgspec.json.encode([run.events, run.jobs, run.states[-1] if run.states else None])


# --- properties -----------------------------------------------------------------------------------------------


@SETTINGS
@given(actions=everything, session_type=session_types)
def test_random_records_never_raise_ids_are_unique_and_replay_is_identical(
    actions: list[tuple[Any, ...]], session_type: str
) -> None:
    first = play(actions, session_type)
    second = play(actions, session_type)
    assert encoded(first) == encoded(second)
    event_ids = [e.event_id for e in first.events]
    assert len(event_ids) == len(set(event_ids))
    item_ids = [e.item_id for e in first.events if isinstance(e, ev.AudioCommitted)]
    job_ids = [j.job_id for j in first.jobs]
    assert len(set(event_ids) | set(item_ids) | set(job_ids)) == len(event_ids) + len(item_ids) + len(job_ids)
    assert types_ok(first.events)


def types_ok(events: Sequence[ev.ServerEvent]) -> bool:
    return types_of(events)[0] == "session.created" and "session.created" not in types_of(events)[1:]


def types_of(events: Sequence[ev.ServerEvent]) -> list[str]:
    return [e.__struct_config__.tag for e in events]  # type: ignore[misc]


@SETTINGS
@given(actions=everything, session_type=session_types)
def test_nothing_follows_the_end_of_a_session(actions: list[tuple[Any, ...]], session_type: str) -> None:
    run = play(actions, session_type)
    ended = False
    for (action, events), close in zip(run.steps, run.closes, strict=True):
        if ended:
            assert events == () and not close
        if action[0] == "expire" and not ended:
            assert types_of(events) == ["error"] and events[0].error.code == "session_expired"  # type: ignore[attr-defined]
            assert close
        ended = ended or action[0] in ("expire", "close")


@SETTINGS
@given(actions=audio_only, session_type=session_types)
def test_each_speech_started_is_stopped_and_committed_before_the_next(
    actions: list[tuple[Any, ...]], session_type: str
) -> None:
    events = play(actions, session_type).events
    open_item: str | None = None
    for index, event in enumerate(events):
        if isinstance(event, ev.SpeechStarted):
            assert open_item is None, "speech_started while a turn is open"
            open_item = event.item_id
        elif isinstance(event, ev.SpeechStopped):
            assert event.item_id == open_item
            following = events[index + 1 : index + 4]
            assert types_of(following) == [
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
            ]
            assert following[0].item_id == open_item  # type: ignore[attr-defined]
            assert following[1].item.id == following[2].item.id == open_item  # type: ignore[attr-defined]
            open_item = None
        elif isinstance(event, ev.AudioCommitted):
            assert open_item is None, "committed without speech_stopped"


@SETTINGS
@given(actions=consistent, session_type=session_types)
def test_a_turn_ends_in_stop_commit_clear_or_vad_off_before_the_next_starts(
    actions: list[tuple[Any, ...]], session_type: str
) -> None:
    run = play(actions, session_type)
    open_item: str | None = None
    for _action, events in run.steps:
        for event in events:
            if isinstance(event, ev.SpeechStarted):
                assert open_item is None
                open_item = event.item_id
            elif isinstance(event, ev.SpeechStopped):
                assert event.item_id == open_item
            elif isinstance(event, ev.AudioCommitted) and open_item is not None:
                assert event.item_id == open_item  # a commit during speech commits the speech item
                open_item = None
            elif isinstance(event, ev.AudioCleared) or (
                isinstance(event, ev.SessionUpdated) and event.session.turn_detection is None
            ):
                open_item = None


@SETTINGS
@given(actions=consistent, session_type=session_types)
def test_audio_offsets_and_ranges_are_ordered(actions: list[tuple[Any, ...]], session_type: str) -> None:
    run = play(actions, session_type)
    starts = {e.item_id: e.audio_start_ms for e in run.events if isinstance(e, ev.SpeechStarted)}
    last_end = 0
    for event in run.events:
        if isinstance(event, ev.SpeechStarted):
            assert event.audio_start_ms >= 0
        if isinstance(event, ev.SpeechStopped):
            assert event.audio_end_ms >= starts[event.item_id]
            assert event.audio_end_ms >= last_end
            last_end = event.audio_end_ms
    # Whole-item jobs are for committed items, their ranges in order without overlap; decodes of a live turn lie
    # within their turn.
    committed = [e.item_id for e in run.events if isinstance(e, ev.AudioCommitted)]
    previous_end = 0
    for job in run.jobs:
        if job.words:
            assert job.item_id in starts and starts[job.item_id] * 16 <= job.start_sample < job.end_sample
            continue
        assert job.item_id in committed
        assert previous_end <= job.start_sample < job.end_sample
        previous_end = job.end_sample
    for state in run.states:
        assert 0 <= state.buffer_start <= state.samples
        assert state.buffer_ticks >= 0
        assert list(state.marks) == sorted(state.marks, key=lambda m: (m.seq, m.sample))


@SETTINGS
@given(actions=consistent, session_type=session_types)
def test_commits_chain_items_and_results_are_final(actions: list[tuple[Any, ...]], session_type: str) -> None:
    run = play(actions, session_type)
    previous: str | None = None
    finished: set[str] = set()
    awaited: set[str] = set()
    live: set[str] = set()
    for index, event in enumerate(run.events):
        if isinstance(event, ev.AudioCommitted):
            assert event.previous_item_id == previous
            added, done = run.events[index + 1 : index + 3]
            assert isinstance(added, ev.ItemAdded) and isinstance(done, ev.ItemDone)
            assert added.item.id == done.item.id == event.item_id
            assert added.previous_item_id == done.previous_item_id == previous
            previous = event.item_id
            if any(job.item_id == event.item_id for job in run.jobs):
                awaited.add(event.item_id)
        elif isinstance(event, ev.SpeechStarted):
            live.add(event.item_id)
        elif isinstance(event, ev.TranscriptDelta | ev.TranscriptCompleted | ev.TranscriptFailed):
            # Deltas of a live turn may come before its commit; the end of a transcription never does.
            in_time = event.item_id in awaited or (isinstance(event, ev.TranscriptDelta) and event.item_id in live)
            assert in_time, "result for an item without a job"
            assert event.item_id not in finished, "result after completed/failed"
            assert event.content_index == 0
            if not isinstance(event, ev.TranscriptDelta):
                finished.add(event.item_id)


@SETTINGS
@given(actions=audio_only)
def test_vad_jobs_read_exactly_the_records_that_hold_their_audio(actions: list[tuple[Any, ...]]) -> None:
    run = play(actions)
    check_jobs_covered(run)


@SETTINGS
@given(
    actions=sequences(
        audio_action,
        silence_action,
        speech_action,
        st.tuples(st.just("commit"), event_id),
        st.tuples(st.just("commit"), event_id),
        st.tuples(st.just("clear"), event_id),
    )
)
def test_manual_jobs_read_exactly_the_records_that_hold_their_audio(actions: list[tuple[Any, ...]]) -> None:
    run = play(actions, manual=True)
    check_jobs_covered(run)


def check_jobs_covered(run: Run) -> None:
    for job in run.jobs:
        seqs = [s for s in sorted(run.audio) if job.first_seq <= s <= job.last_seq]
        assert seqs and seqs[0] == job.first_seq
        assert run.audio[job.first_seq][0] == job.first_sample <= job.start_sample
        position = job.first_sample
        for s in seqs:
            assert run.audio[s][0] == position
            position += run.audio[s][1]
        assert job.end_sample <= position


@settings(max_examples=100, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
@given(actions=consistent)
@example(actions=[("audio", 4096, [0.0])] * 3 + [("commit", None)])  # 384 ms of silence, then a commit
def test_every_job_reads_exactly_the_records_that_hold_its_audio(actions: list[tuple[Any, ...]]) -> None:
    check_jobs_covered(play(actions))


# --- bounded memory -------------------------------------------------------------------------------------------

RECORD_MS = 100
MAX_SPEECH_MS = 1500


@settings(max_examples=25, deadline=None)
@given(
    segments=st.lists(
        st.tuples(st.integers(1, MAX_SPEECH_MS // RECORD_MS), st.integers(6, 40)), min_size=20, max_size=40
    ),
    commits=st.sets(st.integers(0, 39), max_size=5),
)
def test_marks_stay_bounded_over_long_audio(segments: list[tuple[int, int]], commits: set[int]) -> None:
    """Minutes of 100 ms appends: speech bursts of at most 1.5 s, each followed by >= 600 ms of silence."""
    actions: list[tuple[Any, ...]] = []
    for index, (speech_records, silence_records) in enumerate(segments):
        actions += [("audio", RECORD_MS * 16, [0.95])] * speech_records
        actions += [("audio", RECORD_MS * 16, [0.0])] * silence_records
        if index in commits:
            actions.append(("commit", None))
    run = play(actions)
    stops = sum(isinstance(e, ev.SpeechStopped) for e in run.events)
    assert stops == len(segments)
    # A turn spans at most 300 ms padding + 1.5 s speech + 500 ms silence + a frame: ~24 records, plus the
    # record straddling each end.
    longest = max(len(state.marks) for state in run.states)
    assert longest <= 28
    # Between turns only the prefix-padding window is kept: 300 ms + one frame spans at most 5 records.
    idle = [len(s.marks) for s in run.states if s.speaking is None]
    assert max(idle) <= 5


@SETTINGS
@given(actions=sequences(audio_action, silence_action, speech_action, words_action, words_action, words_action))
def test_the_deltas_of_a_live_turn_add_up_to_its_transcript(actions: list[tuple[Any, ...]]) -> None:
    run = play(actions)
    hypothesis_event(f"completed live turns: {min(2, sum(isinstance(e, ev.TranscriptCompleted) for e in run.events))}")
    deltas: dict[str, str] = {}
    for event in run.events:
        if isinstance(event, ev.TranscriptDelta):
            deltas[event.item_id] = deltas.get(event.item_id, "") + event.delta
        elif isinstance(event, ev.TranscriptCompleted) and any(
            j.words and j.item_id == event.item_id for j in run.jobs
        ):
            assert deltas.get(event.item_id, "") == event.transcript
