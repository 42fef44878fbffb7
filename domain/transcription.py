"""A user item's transcription: the jobs that ask for it, the turn decoded while the user speaks, the results.

A server-VAD turn is a `LiveTurn` from `speech_started` on. While the user speaks, it is decoded again as it
grows (one decode at a time, more often in its first seconds, less often while the STT workers are behind: a decode
that waited for a worker holds the next one back as long again); words two consecutive decodes agree on, and that
the later decode heard `SETTLE_MS` past, become stable and go out as transcript deltas. Later decodes start
`CONTEXT_MS` before the stable words end (whisper hears the words before, and `agreement.unheard` drops them
again), and none hears more than the last `MAX_WINDOW_MS` of the turn. Once the turn's silence has lasted
`CLOSE_AFTER_MS`, one more decode covers the rest of its speech, before the VAD decides that the turn is over;
when it does, that decode completes the transcript: the stable text plus the words after it, less any whisper made
up in the turn's closing silence. Stable text is never revised, so the deltas always add up to the completed
transcript. If speech resumes, the closing decode is one more decode of the growing turn. A closing decode that
comes back while the user is still silent also starts the answer to the turn (`conversation.speculate`), which the
turn's end takes over or speech that resumes throws away.

Without incremental decoding (`transcription.incremental: false`), only the closing decode runs, over the whole
turn.

Whisper cannot tell a language from a second of speech. Without a configured language, the language of the first
decode whose words became stable is used for every later live decode of the session.
"""

from collections.abc import Sequence

import msgspec

from domain import conversation
from domain import events as ev
from domain import records as rec
from domain.agreement import TIME_TOLERANCE, agreed, text_of, unheard
from domain.audio_time import MODEL_RATE, samples_from_ms
from domain.continuation import goes_on
from domain.jobs import PARTIAL_DECODE_WAIT_MS, TRANSCRIPT_WAIT_MS, TRANSCRIPTION_LATE, TranscribeJob
from domain.records import Word
from domain.state import AudioMark, Draft, LiveTurn, SessionState, WithdrawJob
from domain.turns import Heard, Speaking

# The closing decode starts once a turn's silence has lasted this long, so the transcript is ready about
# `silence_duration_ms - CLOSE_AFTER_MS` sooner than if decoding waited for the end of the turn.
CLOSE_AFTER_MS = 150
FIRST_PARTIAL_MS = 600  # of the turn (its prefix padding included) before the first decode: a word or so
# A decode every 400 ms of new audio for the first 2 s of a turn, so its first words come soon; every 800 ms after:
# decodes that differ more agree on fewer mistakes (measured by bench/live_accuracy.py), and cost half as much.
PARTIAL_EVERY_MS = 400
QUICK_FOR_MS = 2000
PARTIAL_EVERY_LATER_MS = 800
# A word is stable only if the decode heard at least this much after it, and it is not the decode's last word:
# whisper may still change a word at the end of what it heard, and punctuates it as the end of the text.
SETTLE_MS = 500
HOLD_BACK = 1
CONTEXT_MS = 3000
# A live decode hears at most this much of its turn, however long the turn goes on without a stable word (noise,
# speech whisper does not follow, or partial decodes held back while the workers are behind): the work per second of
# speech stays bounded, and so does a closing decode's, which would otherwise grow with the words left unstable. The
# latest decode's words that start before the window become stable as they are: no later decode hears them again.
# With one session few windows are longer (4 of about 100 decodes of the lecture; the stable words' last 3 s and
# about 2 s after them is usual), and its word error rate did not change (bench/live_accuracy.py); 20 s let the
# closing decodes of 8 sessions in step on 2 cores reach 9-14 s of audio (bench/concurrency.py, README).
MAX_WINDOW_MS = 6_000
STABLE_TAIL = 40  # words of the stable text kept: to recognise a decode that repeats them, and as its prompt


def wants_transcript(state: SessionState) -> bool:
    """A conversation always needs the words for its LLM; a transcription session only once it has a model."""
    return state.config.transcription is not None or state.session_type == "realtime"


def job(
    draft: Draft, item_id: str, start: int, end: int, words: bool = False, context: str = "", partial: bool = False
) -> TranscribeJob:
    """The job that transcribes samples [start, end) of the session's audio stream; `context` is what was said
    just before (whisper reads it as the prompt, after the session's own)."""
    state = draft.state
    transcription = state.config.transcription
    marks = _marks_covering(state.marks, start, end)
    return TranscribeJob(
        job_id=draft.new_id("job"),
        session_id=state.session_id,
        item_id=item_id,
        first_seq=marks[0].seq,
        last_seq=marks[-1].seq,
        first_sample=marks[0].sample,
        start_sample=start,
        end_sample=end,
        model=state.stt_model,
        language=state.stt_language or (state.heard_language if words else None),
        prompt=" ".join(p for p in (transcription.prompt if transcription else None, context) if p) or None,
        words=words,
        partial=partial,
        deadline_ms=draft.now_ms + (PARTIAL_DECODE_WAIT_MS if partial else TRANSCRIPT_WAIT_MS),
        asked_ms=draft.now_ms,
    )


def _marks_covering(marks: Sequence[AudioMark], start: int, end: int) -> tuple[AudioMark, ...]:
    first = 0
    while first + 1 < len(marks) and marks[first + 1].sample <= start:
        first += 1
    last = first
    while last + 1 < len(marks) and marks[last + 1].sample < end:
        last += 1
    return tuple(marks[first : last + 1])


# --- results ---------------------------------------------------------------------------------------------------


def _without(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(i for i in items if i != item)


def _transcribed(draft: Draft, item_id: str) -> bool:
    """Stop waiting for the item's transcript; whether the client hears about it."""
    state = draft.state
    announced = item_id in state.announced
    draft.update(transcribing=_without(state.transcribing, item_id), announced=_without(state.announced, item_id))
    return announced


def complete(draft: Draft, item_id: str, transcript: str, seconds: float) -> None:
    """The item's transcript is in (once: a result for an item no longer awaited is ignored)."""
    if item_id not in draft.state.transcribing:
        return
    if _transcribed(draft, item_id):
        usage = ev.DurationUsage(seconds=round(seconds, 3))
        draft.emit(ev.TranscriptCompleted, item_id=item_id, transcript=transcript, usage=usage)
    conversation.set_transcript(draft, item_id, transcript)
    conversation.transcript_arrived(draft, item_id)


def fail(draft: Draft, item_id: str, message: str) -> None:
    if item_id not in draft.state.transcribing:
        return
    if _transcribed(draft, item_id):
        error = ev.TranscriptionError(type="server_error", code="transcription_failed", message=message)
        draft.emit(ev.TranscriptFailed, item_id=item_id, error=error)
    conversation.transcript_arrived(draft, item_id)


# --- the turn in progress ---------------------------------------------------------------------------------------


def start_turn(draft: Draft, item_id: str, start: int) -> None:
    conversation.discard_speculation(draft)  # one the last turn's end did not take
    live = LiveTurn(item_id=item_id, start=start, asked_to=start) if wants_transcript(draft.state) else None
    draft.update(live=live)


def follow(draft: Draft, speaking: Speaking, frame_end: int) -> None:
    """One more frame of the turn: decode again while the user speaks, and once more when the silence begins."""
    live = draft.state.live
    if live is None:
        return
    silent_for = frame_end - speaking.last_voice_sample
    if silent_for >= samples_from_ms(CLOSE_AFTER_MS):
        if live.asked_to < speaking.last_voice_sample + samples_from_ms(CLOSE_AFTER_MS):
            live = _ask(draft, live, frame_end, partial=False)
            draft.update(live=msgspec.structs.replace(live, closing=live.asked[-1]))
    elif silent_for == 0 and live.closing is not None:  # speech resumed: that pause did not end the turn
        draft.jobs.append(WithdrawJob(live.closing))
        draft.update(live=msgspec.structs.replace(live, closing=None))
        conversation.discard_speculation(draft)
    elif (
        silent_for == 0
        and _incremental(draft.state)
        and not live.asked
        and frame_end - live.start >= samples_from_ms(FIRST_PARTIAL_MS)
        and frame_end - live.asked_to >= samples_from_ms(_interval_ms(frame_end - live.start))
        and draft.now_ms >= live.partials_from_ms
    ):
        draft.update(live=_ask(draft, live, frame_end, partial=True))


def heard(state: SessionState) -> Heard:
    """What the words of the turn's pause say (`domain.turns`): the closing decode's last word, in English."""
    live = state.live
    if live is None:
        return "no words"
    if live.closing is None or live.closing in live.asked:
        return "pending"
    voice_until = state.speaking.last_voice_sample if state.speaking else live.decoded_to
    transcription = state.config.transcription
    language = (transcription.language if transcription else None) or state.heard_language
    return pause_verdict(live.pending, voice_until, language, before=live.stable_tail)


def pause_verdict(words: Sequence[Word], voice_until: int, language: str | None, before: Sequence[Word] = ()) -> Heard:
    """What a pause's decoded `words` say of the sentence (`before`: the words before them), by its last spoken
    word: whisper may make words up in the silence after the voice (`voice_until`), and those are not counted."""
    spoken = [w for w in words if w.start < voice_until + TIME_TOLERANCE] or before
    return "goes on" if spoken and language in (None, "en") and goes_on(spoken[-1].text) else "may end"


def end_turn(draft: Draft, item_id: str, end: int, voice_until: int) -> bool:
    """The live turn `item_id` is committed as samples up to `end`, with speech up to `voice_until`: complete its
    transcript from the decode that covers its speech, or wait for that decode. False if it was not live."""
    live = draft.state.live
    draft.update(live=None)
    if live is None or live.item_id != item_id:
        return False
    live = msgspec.structs.replace(live, end=end, voice_until=voice_until)
    covering = min(end, voice_until + samples_from_ms(CLOSE_AFTER_MS))
    if live.decoded_to >= covering:
        _withdraw(draft, live.asked)
        _finish(draft, live, live.pending)
        return True
    if not (live.asked and live.asked_to >= covering):
        live = _ask(draft, live, end, partial=False)
    _withdraw(draft, live.asked[:-1])  # decodes of less of the turn than the one it awaits: overtaken
    draft.update(finishing=(*draft.state.finishing, msgspec.structs.replace(live, awaited=live.asked[-1])))
    return True


def _withdraw(draft: Draft, job_ids: Sequence[str]) -> None:
    draft.jobs.extend(WithdrawJob(job_id) for job_id in job_ids)


def drop_turn(draft: Draft) -> None:
    """The turn in progress is gone (buffer cleared, turn detection off): its decodes are no longer wanted."""
    if draft.state.live is not None:
        _withdraw(draft, draft.state.live.asked)
    draft.update(live=None)
    conversation.discard_speculation(draft)


def is_live_job(state: SessionState, job_id: str) -> bool:
    return any(job_id in turn.asked for turn in (state.live, *state.finishing) if turn is not None)


def on_words(draft: Draft, record: rec.WordsDecoded) -> None:
    state = draft.state
    live = state.live
    if live is not None and record.job_id in live.asked:
        live = _heard(draft, live, record)
        draft.update(live=live)
        speaking = state.speaking
        if record.job_id == live.closing and speaking is not None:  # the user is silent: answer what was said
            remainder = _remainder(live, live.pending, speaking.last_voice_sample)
            conversation.speculate(draft, live.item_id, live.stable + remainder)
        return
    for turn in state.finishing:
        if record.job_id == turn.awaited:
            draft.update(finishing=tuple(t for t in state.finishing if t is not turn))
            _finish(draft, turn, unheard(record.words, turn.stable_end, turn.stable_tail))
            return
    # an earlier decode of a committed turn, overtaken by the one it awaits


def on_failure(draft: Draft, record: rec.TranscriptionFailed) -> None:
    state = draft.state
    live = state.live
    if live is not None and record.job_id in live.asked:
        live = msgspec.structs.replace(live, asked=_without(live.asked, record.job_id))
        if record.message.startswith(TRANSCRIPTION_LATE):  # it waited for a worker at least this long, for nothing
            live = msgspec.structs.replace(live, partials_from_ms=draft.now_ms + PARTIAL_DECODE_WAIT_MS)
        draft.update(live=live)
        return
    for turn in state.finishing:
        if record.job_id == turn.awaited:
            draft.update(finishing=tuple(t for t in state.finishing if t is not turn))
            fail(draft, turn.item_id, record.message)
            return


def _interval_ms(turn_samples: int) -> int:
    return PARTIAL_EVERY_MS if turn_samples < samples_from_ms(QUICK_FOR_MS) else PARTIAL_EVERY_LATER_MS


def _incremental(state: SessionState) -> bool:
    transcription = state.config.transcription
    return transcription is not None and transcription.incremental


def _ask(draft: Draft, live: LiveTurn, end: int, partial: bool) -> LiveTurn:
    """Decode the turn up to `end`, from a little before its stable text ends; the stable words before that are
    the prompt."""
    start = max(live.start, live.stable_end - samples_from_ms(CONTEXT_MS)) if live.stable else live.start
    # Never past the last `CONTEXT_MS` the latest decode heard: audio that arrived while a decode ran (a client
    # sending faster than real time, a decode that waited) has been heard by no decode yet, and words made stable
    # as they are were heard with at least that much after them (a first decode of 600 ms hears a word cut short).
    bound = min(end - samples_from_ms(MAX_WINDOW_MS), live.decoded_to - samples_from_ms(CONTEXT_MS))
    if _incremental(draft.state) and start < bound:
        start = bound
        leaving = 0
        while leaving < len(live.pending) and live.pending[leaving].start < start:  # a word cut in two included
            leaving += 1
        if leaving:
            live = _stabilize(draft, live, live.pending[:leaving], language=None)
            live = msgspec.structs.replace(live, pending=live.pending[leaving:])
    context = text_of([w for w in live.stable_tail if w.end <= start]).lstrip()
    decode = job(draft, live.item_id, start, end, words=True, context=context, partial=partial)
    draft.jobs.append(decode)
    return msgspec.structs.replace(live, asked=(*live.asked, decode.job_id), asked_to=end)


def _heard(draft: Draft, live: LiveTurn, record: rec.WordsDecoded) -> LiveTurn:
    """A decode of the live turn: the words it agrees on with the decode before become stable and are sent. One
    that waited for a worker holds the turn's next partial decode back as long again: sessions ask for fewer of them
    while the workers are behind, and a transcript that falls due finds fewer before it."""
    live = msgspec.structs.replace(
        live, asked=_without(live.asked, record.job_id), partials_from_ms=draft.now_ms + record.waited_ms
    )
    if record.end_sample <= live.decoded_to:
        return live  # overtaken by a later decode
    words = unheard(record.words, live.stable_end, live.stable_tail)
    settled = [w for w in words[: len(words) - HOLD_BACK] if w.end <= record.end_sample - samples_from_ms(SETTLE_MS)]
    count = agreed(live.pending, settled) if _incremental(draft.state) else 0
    live = msgspec.structs.replace(live, pending=words[count:], decoded_to=record.end_sample)
    if count == 0:
        return live
    return _stabilize(draft, live, words[:count], record.language)


def _stabilize(draft: Draft, live: LiveTurn, stable: Sequence[Word], language: str | None) -> LiveTurn:
    """`stable` words follow the stable text: they are sent, and never revised."""
    delta = text_of(stable)
    if not live.stable:
        delta = delta.lstrip()
    if draft.state.config.transcription is not None:
        draft.emit(ev.TranscriptDelta, item_id=live.item_id, delta=delta)
    tail = (*live.stable_tail, *stable)[-STABLE_TAIL:]
    if draft.state.heard_language is None and language:
        draft.update(heard_language=language)
    return msgspec.structs.replace(live, stable=live.stable + delta, stable_tail=tail)


def _finish(draft: Draft, turn: LiveTurn, rest: Sequence[Word]) -> None:
    """The transcript is the stable text and the words after it; the client gets those words as the last delta."""
    remainder = _remainder(turn, rest, turn.voice_until)
    if remainder and turn.item_id in draft.state.announced and turn.item_id in draft.state.transcribing:
        draft.emit(ev.TranscriptDelta, item_id=turn.item_id, delta=remainder)
    complete(draft, turn.item_id, turn.stable + remainder, (turn.end - turn.start) / MODEL_RATE)


def _remainder(turn: LiveTurn, rest: Sequence[Word], voice_until: int) -> str:
    """The words after the stable text that complete a turn whose speech ends at `voice_until`."""
    remainder = text_of([w for w in rest if w.start < voice_until + TIME_TOLERANCE])
    return remainder if turn.stable else remainder.lstrip()
