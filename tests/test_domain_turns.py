"""Turn detection (`domain.turns.advance`) over synthetic speech-probability and end-of-turn score sequences.

Frame `i` (0-based) covers 16 kHz samples [512 i, 512 (i + 1)); `advance` is told the sample where it ends.
Expected sample positions below are worked out by hand from the documented rules (16 samples per ms, 512
samples per frame), not read back from the implementation.
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.continuation import goes_on
from domain.session_config import EAGERNESS, TurnDetection
from domain.turns import HYSTERESIS, SCORE_PAUSES_MS, Speaking, TurnStarted, TurnStopped, advance, wants_score

FRAME = 512
SAMPLES_PER_MS = 16


def run(
    probs: list[float],
    config: TurnDetection,
    floor: int = 0,
    first_frame: int = 0,
    scores: dict[int, float] | None = None,
) -> tuple[list[tuple[int, TurnStarted | TurnStopped]], Speaking | None]:
    """Feed `probs` frame by frame (with the end-of-turn `scores` recorded for some frames); the changes with the
    index of the frame that caused them, and the end state.

    After a stop the floor moves to the end of that turn, as the session does."""
    speaking: Speaking | None = None
    changes: list[tuple[int, TurnStarted | TurnStopped]] = []
    for offset, probability in enumerate(probs):
        index = first_frame + offset
        complete = (scores or {}).get(index)
        speaking, change = advance(speaking, (index + 1) * FRAME, probability, config, floor, complete)
        if change is not None:
            changes.append((index, change))
        if isinstance(change, TurnStopped):
            floor = change.end_sample
    return changes, speaking


def silence_frames_to_stop(silence_ms: int) -> int:
    """Silent frames after the last voiced one until the turn stops: the first frame end >= silence after it."""
    return max(1, math.ceil(silence_ms * SAMPLES_PER_MS / FRAME))


# --- start ----------------------------------------------------------------------------------------------------


def test_defaults_match_the_spec() -> None:
    config = TurnDetection()
    assert config.type == "server_vad"
    assert config.threshold == 0.5
    assert config.prefix_padding_ms == 300
    assert config.silence_duration_ms == 500
    assert config.longest_silence_ms == 500


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8, 1.0])
def test_a_turn_starts_at_the_threshold_but_not_below(threshold: float) -> None:
    config = TurnDetection(threshold=threshold, prefix_padding_ms=0)
    below, speaking = run([threshold - 1e-6] * 40, config)
    assert below == []
    assert speaking is None

    changes, speaking = run([0.0] * 5 + [threshold], config)
    assert changes == [(5, TurnStarted(5 * FRAME))]
    assert speaking == Speaking(start_sample=5 * FRAME, last_voice_sample=6 * FRAME)


def test_silence_only_never_starts_a_turn() -> None:
    changes, speaking = run([0.0, 0.01, 0.2, 0.34, 0.49] * 100, TurnDetection())
    assert changes == []
    assert speaking is None


def test_hysteresis_band_does_not_start_a_turn() -> None:
    # 0.4 is within [threshold - 0.15, threshold): it keeps a turn alive but must not open one.
    changes, _ = run([0.4] * 100, TurnDetection(threshold=0.5))
    assert changes == []


def test_start_is_moved_back_by_prefix_padding() -> None:
    # Speech in frame 20: the frame starts at 20 * 512 = 10240; 300 ms of padding is 4800 samples.
    changes, _ = run([0.0] * 20 + [0.9], TurnDetection(prefix_padding_ms=300))
    assert changes == [(20, TurnStarted(10240 - 4800))]


def test_zero_prefix_padding_starts_at_the_first_speech_frame() -> None:
    changes, _ = run([0.0] * 20 + [0.9], TurnDetection(prefix_padding_ms=0))
    assert changes == [(20, TurnStarted(10240))]


def test_prefix_padding_never_reaches_before_the_start_of_the_stream() -> None:
    # Speech in frame 3 (starts at 1536), 300 ms of padding would reach to -3264.
    changes, _ = run([0.0] * 3 + [0.9], TurnDetection(prefix_padding_ms=300))
    assert changes == [(3, TurnStarted(0))]


@pytest.mark.parametrize(
    ("floor", "expected_start"),
    [
        (0, 10240 - 4800),  # floor far behind: full padding
        (5440, 5440),  # floor exactly where padding reaches
        (8000, 8000),  # floor inside the padding: clamped to it
        (10240, 10240),  # floor at the speech frame itself: no padding left
    ],
)
def test_prefix_padding_is_clamped_to_the_floor(floor: int, expected_start: int) -> None:
    speaking, change = advance(None, 21 * FRAME, 0.9, TurnDetection(prefix_padding_ms=300), floor)
    assert change == TurnStarted(expected_start)
    assert speaking == Speaking(start_sample=expected_start, last_voice_sample=21 * FRAME)


# --- stop -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("silence_ms", "frames_needed"),
    [
        (500, 16),  # 8000 samples: 15 frames = 7680 is short, 16 frames = 8192 is enough
        (200, 7),  # 3200 samples: 6 frames = 3072 short, 7 = 3584
        (32, 1),  # exactly one frame
        (1000, 32),  # 16000 samples: 31 frames = 15872 short
        (0, 1),  # the first non-voice frame ends the turn
    ],
)
def test_turn_stops_once_silence_duration_has_passed(silence_ms: int, frames_needed: int) -> None:
    assert silence_frames_to_stop(silence_ms) == frames_needed
    config = TurnDetection(prefix_padding_ms=0, silence_duration_ms=silence_ms)
    speech = [0.9] * 10  # frames 0..9, last voice ends at sample 5120

    changes, speaking = run(speech + [0.0] * (frames_needed - 1), config)
    assert changes == [(0, TurnStarted(0))]
    assert speaking == Speaking(start_sample=0, last_voice_sample=10 * FRAME)

    changes, speaking = run(speech + [0.0] * frames_needed, config)
    stop_frame = 10 + frames_needed - 1
    assert changes == [(0, TurnStarted(0)), (stop_frame, TurnStopped((stop_frame + 1) * FRAME))]
    assert speaking is None
    # The end lies at least silence_duration_ms after the end of speech (spec: "includes silence_duration_ms").
    end = (stop_frame + 1) * FRAME
    assert end - 10 * FRAME >= silence_ms * SAMPLES_PER_MS
    if silence_ms:  # and the frame before the stop was still short of it
        assert end - FRAME - 10 * FRAME < silence_ms * SAMPLES_PER_MS


def test_silent_frames_leave_the_turn_unchanged_until_the_stop() -> None:
    config = TurnDetection()
    speaking, _ = advance(None, FRAME, 0.9, config, 0)
    assert speaking is not None
    for index in range(1, 16):
        after, change = advance(speaking, (index + 1) * FRAME, 0.1, config, 0)
        assert change is None
        assert after == speaking  # start and last voice stay where they were


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_hysteresis_keeps_a_turn_alive_between_threshold_minus_015_and_threshold(threshold: float) -> None:
    config = TurnDetection(threshold=threshold, prefix_padding_ms=0)
    soft = threshold - HYSTERESIS + 0.01  # just inside the band
    assert HYSTERESIS == 0.15
    # Speech, then 200 soft frames (far longer than 500 ms): still one open turn.
    changes, speaking = run([threshold] + [soft] * 200, config)
    assert changes == [(0, TurnStarted(0))]
    assert speaking == Speaking(start_sample=0, last_voice_sample=201 * FRAME)


def test_frames_below_the_band_count_as_silence() -> None:
    config = TurnDetection(threshold=0.5, prefix_padding_ms=0)
    changes, _ = run([0.9] + [0.34] * 16, config)
    assert changes == [(0, TurnStarted(0)), (16, TurnStopped(17 * FRAME))]


def test_a_soft_frame_resets_the_silence_timer() -> None:
    config = TurnDetection(threshold=0.5, prefix_padding_ms=0)
    # Voice in frame 0, 10 silent frames, a soft (hysteresis) frame 11, then silence: the stop is counted from
    # the end of frame 11 (sample 6144) and comes 16 frames later, at frame 27.
    changes, _ = run([0.9] + [0.1] * 10 + [0.4] + [0.1] * 16, config)
    assert changes == [(0, TurnStarted(0)), (27, TurnStopped(28 * FRAME))]
    # Without the soft frame the turn would have ended at frame 16.
    changes, _ = run([0.9] + [0.1] * 10 + [0.1] + [0.1] * 16, config)
    assert changes == [(0, TurnStarted(0)), (16, TurnStopped(17 * FRAME))]


def test_a_new_turn_can_start_right_after_a_stop_and_its_padding_stops_at_the_previous_end() -> None:
    config = TurnDetection(prefix_padding_ms=300)
    # Turn 1: speech frames 20..29, stops at frame 45 (ends at 23552). Turn 2: speech in frame 47.
    probs = [0.0] * 20 + [0.9] * 10 + [0.0] * 16 + [0.0] + [0.9] * 3
    changes, speaking = run(probs, config)
    assert changes == [
        (20, TurnStarted(10240 - 4800)),
        (45, TurnStopped(46 * FRAME)),
        (47, TurnStarted(46 * FRAME)),  # 47 * 512 - 4800 = 19264 would be inside turn 1
    ]
    assert speaking is not None and speaking.start_sample == 46 * FRAME


# --- semantic_vad ---------------------------------------------------------------------------------------------


def test_semantic_vad_eagerness_mapping() -> None:
    assert set(EAGERNESS) == {"low", "medium", "high", "auto"}
    # low waits longest and wants the surest score, high the opposite; auto is medium (spec: "auto=medium").
    longest = {e: TurnDetection(type="semantic_vad", eagerness=e).longest_silence_ms for e in EAGERNESS}  # type: ignore[arg-type]
    assert longest == {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}  # as OpenAI documents
    sure = {e: EAGERNESS[e].complete_at for e in EAGERNESS}
    assert sure["low"] > sure["medium"] == sure["auto"] > sure["high"] > 0


def semantic(eagerness: str = "auto") -> TurnDetection:
    return TurnDetection(type="semantic_vad", eagerness=eagerness, prefix_padding_ms=0)  # type: ignore[arg-type]


def first_score_frame(voice_frames: int) -> int:
    """The index of the frame whose end makes the pause after `voice_frames` voiced frames SCORE_PAUSES_MS[0]."""
    return voice_frames - 1 + math.ceil(SCORE_PAUSES_MS[0] * SAMPLES_PER_MS / FRAME)


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_a_confident_score_ends_the_turn_at_the_scored_frame(eagerness: str) -> None:
    scored = first_score_frame(4)  # 160 ms after speech ending at frame 3: frame 8
    assert scored == 8
    sure = EAGERNESS[eagerness].complete_at
    changes, speaking = run([0.9] * 4 + [0.0] * 20, semantic(eagerness), scores={scored: sure})
    assert changes == [(0, TurnStarted(0)), (scored, TurnStopped((scored + 1) * FRAME))]
    assert speaking is None


@pytest.mark.parametrize("eagerness", ["low", "medium", "high", "auto"])
def test_an_unsure_score_waits_for_the_eagerness_longest_pause(eagerness: str) -> None:
    scored = first_score_frame(4)
    unsure = EAGERNESS[eagerness].complete_at - 0.01
    longest = EAGERNESS[eagerness].longest_pause_ms
    needed = silence_frames_to_stop(longest)
    changes, _ = run([0.9] * 4 + [0.0] * (needed - 1), semantic(eagerness), scores={scored: unsure})
    assert changes == [(0, TurnStarted(0))]
    changes, _ = run([0.9] * 4 + [0.0] * needed, semantic(eagerness), scores={scored: unsure})
    stop = 4 + needed - 1
    assert changes == [(0, TurnStarted(0)), (stop, TurnStopped((stop + 1) * FRAME))]


def test_the_same_score_ends_a_turn_for_high_eagerness_and_not_for_low() -> None:
    score = (EAGERNESS["high"].complete_at + EAGERNESS["low"].complete_at) / 2
    scored = first_score_frame(4)
    high, _ = run([0.9] * 4 + [0.0] * 20, semantic("high"), scores={scored: score})
    low, _ = run([0.9] * 4 + [0.0] * 20, semantic("low"), scores={scored: score})
    assert high[-1] == (scored, TurnStopped((scored + 1) * FRAME))
    assert low == [(0, TurnStarted(0))]


def test_a_score_on_a_voiced_frame_or_outside_a_turn_changes_nothing() -> None:
    # Voice resumed on the scored frame: the turn goes on; before any speech there is no turn to end.
    changes, speaking = run([0.9] * 10, semantic(), scores={5: 1.0})
    assert changes == [(0, TurnStarted(0))] and speaking is not None
    changes, speaking = run([0.0] * 10, semantic(), scores={5: 1.0})
    assert changes == [] and speaking is None


def test_server_vad_ignores_end_of_turn_scores() -> None:
    config = TurnDetection(prefix_padding_ms=0, silence_duration_ms=500)
    changes, _ = run([0.9] * 4 + [0.0] * 10, config, scores={8: 1.0})
    assert changes == [(0, TurnStarted(0))]


def test_semantic_vad_ignores_silence_duration_ms() -> None:
    config = TurnDetection(type="semantic_vad", silence_duration_ms=200, prefix_padding_ms=0)
    changes, _ = run([0.9] * 4 + [0.0] * 20, config)
    assert changes == [(0, TurnStarted(0))]


def test_a_turn_is_scored_once_at_each_scoring_pause_and_never_while_voiced() -> None:
    config = semantic()
    speaking = Speaking(start_sample=0, last_voice_sample=4 * FRAME)
    due = [frame for frame in range(4, 200) if wants_score(speaking, (frame + 1) * FRAME, 0.0, config)]
    expected = [4 - 1 + math.ceil(ms * SAMPLES_PER_MS / FRAME) for ms in SCORE_PAUSES_MS]
    assert due == expected
    assert not wants_score(speaking, (due[0] + 1) * FRAME, 0.9, config)  # voice on that frame: no pause
    assert not wants_score(None, (due[0] + 1) * FRAME, 0.0, config)
    server = TurnDetection(prefix_padding_ms=0)
    assert not any(wants_score(speaking, (frame + 1) * FRAME, 0.0, server) for frame in range(4, 200))


def test_server_vad_ignores_eagerness() -> None:
    config = TurnDetection(type="server_vad", eagerness="high", silence_duration_ms=1000, prefix_padding_ms=0)
    assert config.longest_silence_ms == 1000
    changes, _ = run([0.9] + [0.0] * 31, config)
    assert changes == [(0, TurnStarted(0))]


# --- known defect -----------------------------------------------------------------------------------------------


def test_low_threshold_turn_still_stops_on_silence() -> None:
    config = TurnDetection(threshold=0.1, prefix_padding_ms=0, silence_duration_ms=500)
    changes, _ = run([0.9] * 4 + [0.0] * 16, config)
    assert changes == [(0, TurnStarted(0)), (19, TurnStopped(20 * FRAME))]


# --- properties -----------------------------------------------------------------------------------------------

configs = st.builds(
    TurnDetection,
    type=st.sampled_from(["server_vad", "semantic_vad"]),
    threshold=st.floats(0.2, 1.0),
    prefix_padding_ms=st.integers(0, 1000),
    silence_duration_ms=st.integers(0, 2000),
    eagerness=st.sampled_from(["low", "medium", "high", "auto"]),
)


@settings(max_examples=150, deadline=None)
@given(
    config=configs,
    probs=st.lists(st.one_of(st.sampled_from([0.0, 0.3, 0.45, 0.6, 1.0]), st.floats(0.0, 1.0)), max_size=300),
    floor=st.integers(0, 5000),
)
def test_turns_alternate_and_stay_within_their_bounds(config: TurnDetection, probs: list[float], floor: int) -> None:
    # As in a session, the floor (end of the committed audio) lies before the end of the next frame.
    first_frame = floor // FRAME
    changes, speaking = run(probs, config, floor=floor, first_frame=first_frame)
    open_start: int | None = None
    last_end = floor
    for index, change in changes:
        frame_start, frame_end = index * FRAME, (index + 1) * FRAME
        probability = probs[index - first_frame]
        if isinstance(change, TurnStarted):
            assert open_start is None, "two starts without a stop"
            assert probability >= config.threshold
            assert change.start_sample >= last_end  # never before the floor / previous turn
            assert change.start_sample <= max(frame_start, last_end)
            assert change.start_sample >= frame_start - config.prefix_padding_ms * SAMPLES_PER_MS
            open_start = change.start_sample
        else:
            assert open_start is not None, "a stop without a start"
            assert probability < config.threshold - HYSTERESIS
            assert change.end_sample == frame_end
            assert change.end_sample > open_start
            last_end = change.end_sample
            open_start = None
    assert (speaking is None) == (open_start is None)
    if speaking is not None:
        assert speaking.start_sample == open_start


@pytest.mark.parametrize(
    ("word", "goes"),
    [
        *[(" the", True), (" to.", True), (" Americans,", True), (" Um", True), (" and...", True), (" for", True)],
        *[(" evening?", False), (" country.", False), (" that", False), (" so", False), (" me.", False)],
    ],
)
def test_the_last_word_heard_says_whether_a_sentence_goes_on(word: str, goes: bool) -> None:
    assert goes_on(word) is goes
