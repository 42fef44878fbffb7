"""A session's state and the pure state machine over its records: `step(state, record, seq)`."""

import msgspec

from domain import conversation, transcription
from domain import events as ev
from domain import records as rec
from domain.audio_time import (
    MODEL_RATE,
    TICKS_PER_MS,
    TICKS_PER_SECOND,
    VAD_FRAME_SAMPLES,
    ms_from_samples,
    ms_from_ticks,
    samples_from_ms,
)
from domain.conversation_state import ConvEntry
from domain.session_config import InvalidUpdate, SessionConfig, Transcription, apply_update, unknown_language
from domain.state import AudioMark, Draft, SessionState, Transition
from domain.turns import Speaking, TurnStarted, TurnStopped, advance, ends_on_score

MIN_COMMIT_MS = 100


def open_session(record: rec.SessionOpened) -> Transition:
    """The initial state of a session, and its `session.created`."""
    stt_model = record.transcription_model
    if record.session_type == "transcription":
        stt_model = stt_model or record.model or record.default_stt_model
    refused = unknown_language(record.language) if record.language is not None else None
    language = None if refused is not None else record.language  # whisper detects it, as if none was given
    transcription = Transcription(model=stt_model, language=language) if stt_model else None
    config = SessionConfig(type=record.session_type, model=record.model, transcription=transcription)
    if record.session_type == "realtime":
        config = msgspec.structs.replace(config, instructions=conversation.DEFAULT_INSTRUCTIONS)
    state = SessionState(
        session_id=record.session_id,
        session_type=record.session_type,
        config=config,
        default_stt_model=record.default_stt_model,
        expires_at=record.at_ms // 1000 + record.max_duration_s,
        max_duration_s=record.max_duration_s,
        llm_context_tokens=record.llm_context_tokens,
    )
    draft = Draft(state, record.at_ms)
    draft.emit(ev.SessionCreated, session_id=state.session_id, expires_at=state.expires_at, session=config)
    if refused is not None:
        draft.error("invalid_value", refused, "language")
    return draft.finish()


def step(state: SessionState, record: rec.Record | rec.ReducerRecord, seq: int) -> Transition:
    """Reduce one record (stream sequence `seq`) into the session."""
    if state.closed:
        return Transition(state)
    draft = Draft(state, record.at_ms)
    match record:
        case rec.AudioReceived() | rec.AudioReceivedUnread():
            _on_audio(draft, record, seq)
        case rec.ClientEventReceived(event=event):
            _on_client_event(draft, event)
        case rec.ClientEventRejected():
            draft.error(record.code, record.message, record.param, record.event_id)
        case rec.WordsDecoded():
            transcription.on_words(draft, record)
            _end_turn_on_words(draft)
        case rec.TranscriptionFailed() if transcription.is_live_job(state, record.job_id):
            transcription.on_failure(draft, record)
        case rec.TranscriptionDeltaProduced():
            if record.item_id in state.announced:
                draft.emit(ev.TranscriptDelta, item_id=record.item_id, delta=record.text)
        case rec.TranscriptionCompleted():
            transcription.complete(draft, record.item_id, record.transcript, record.audio_seconds)
        case rec.TranscriptionFailed():
            transcription.fail(draft, record.item_id, record.message)
        case rec.GenerationDelta():
            conversation.on_generation(draft, record)
        case rec.GenerationDone():
            conversation.on_generation_done(draft, record)
        case rec.GenerationFailed():
            if conversation.generating(draft, record) is not None:
                conversation.fail(draft, record.response_id, "llm_failed", record.message)
        case rec.SpeechSynthesized():
            conversation.on_speech(draft, record)
        case rec.SpeechFailed():
            conversation.fail(draft, record.response_id, "tts_failed", record.message)
        case rec.ItemAudioReceived() | rec.ItemAudioReceivedUnread():
            pass  # read by the transcription of the item that refers to it
        case rec.SessionExpired():
            draft.error("session_expired", f"Your session hit the maximum duration of {_duration(state)}.")
            draft.update(closed=True)
            draft.close = True
        case rec.SessionClosed():
            draft.update(closed=True)
        case rec.SessionOpened():
            draft.error(None, "The session is already open.", error_type="server_error")
    return draft.finish()


def _duration(state: SessionState) -> str:
    seconds = state.max_duration_s
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} seconds"


# --- audio and turns ----------------------------------------------------------------------------------------


def _on_audio(draft: Draft, record: rec.AudioReceived | rec.AudioReceivedUnread, seq: int) -> None:
    state = draft.state
    start = state.samples
    draft.update(
        samples=start + record.samples,
        buffer_ticks=state.buffer_ticks + record.ticks,
        marks=(*state.marks, AudioMark(seq=seq, sample=start)),
    )
    detection = state.config.turn_detection
    scores = dict(record.turn_scores)
    for index, probability in enumerate(record.speech_probs):
        frame_end = (draft.state.frames + 1) * VAD_FRAME_SAMPLES
        draft.update(frames=draft.state.frames + 1)
        if detection is None:
            continue
        before = draft.state.speaking
        speaking, change = advance(
            before,
            frame_end,
            probability,
            detection,
            floor=draft.state.buffer_start,
            complete=scores.get(index),
            heard=transcription.heard(draft.state),
        )
        draft.update(speaking=speaking)
        if speaking is not None and change is None:
            transcription.follow(draft, speaking, frame_end)
        if isinstance(change, TurnStarted):
            item_id = draft.new_id("item")
            draft.update(speech_item_id=item_id, idle_since=None)
            draft.emit(ev.SpeechStarted, item_id=item_id, audio_start_ms=ms_from_samples(change.start_sample))
            transcription.start_turn(draft, item_id, change.start_sample)
            current = conversation.default_response(draft)
            if current is not None and detection.interrupt_response and state.session_type == "realtime":
                conversation.cancel(draft, current.id, "turn_detected")  # barge-in
        elif isinstance(change, TurnStopped) and before is not None:
            _stop_turn(draft, before, change.end_sample)
    if detection is not None and detection.idle_timeout_ms is not None:
        _check_idle(draft, detection.idle_timeout_ms)
    _forget_consumed_audio(draft)


def _stop_turn(draft: Draft, speaking: Speaking, end: int) -> None:
    """The turn detector ended the turn `speaking` at sample `end`: commit it, and answer it."""
    state = draft.state
    item_id = state.speech_item_id or draft.new_id("item")
    draft.emit(ev.SpeechStopped, item_id=item_id, audio_end_ms=ms_from_samples(end))
    _commit(draft, item_id, speaking.start_sample, end, speaking.last_voice_sample)
    detection = state.config.turn_detection
    if state.session_type == "realtime" and detection is not None and detection.create_response:
        conversation.create_response(draft, ev.ResponseParams())


def _end_turn_on_words(draft: Draft) -> None:
    """Semantic VAD: the words of a pause whose score was sure arrived after it; they may end the turn now."""
    state = draft.state
    detection, speaking = state.config.turn_detection, state.speaking
    if detection is None or speaking is None:
        return
    frame_end = state.frames * VAD_FRAME_SAMPLES
    if frame_end > speaking.last_voice_sample and ends_on_score(
        speaking, frame_end, detection, transcription.heard(state)
    ):
        _stop_turn(draft, speaking, frame_end)


def _check_idle(draft: Draft, timeout_ms: int) -> None:
    """The user stayed silent `timeout_ms` after the last answer: commit what there is and answer again."""
    state = draft.state
    idle_since = state.idle_since
    if state.session_type != "realtime" or idle_since is None or state.speaking is not None:
        return
    if state.samples - idle_since < samples_from_ms(timeout_ms) or conversation.default_response(draft):
        return
    item_id = draft.new_id("item")
    draft.emit(
        ev.TimeoutTriggered,
        item_id=item_id,
        audio_start_ms=ms_from_samples(idle_since),
        audio_end_ms=ms_from_samples(state.samples),
    )
    if state.samples > state.buffer_start and state.marks:
        _commit(draft, item_id, state.buffer_start, state.samples)
    conversation.create_response(draft, ev.ResponseParams())


def _commit(draft: Draft, item_id: str, start: int, end: int, voice_until: int | None = None) -> None:
    """Make samples [start, end) a user item (with speech up to `voice_until`, the end unless the VAD knows
    better) and ask for its transcript, or let the turn's live transcription complete it."""
    state = draft.state
    previous = state.last_item_id
    draft.update(
        buffer_start=end,
        buffer_ticks=(state.samples - end) * (TICKS_PER_SECOND // MODEL_RATE),
        speaking=None,
        speech_item_id=None,
        last_item_id=item_id,
    )
    draft.emit(ev.AudioCommitted, item_id=item_id, previous_item_id=previous)
    item = ev.MessageItem(id=item_id, role="user", content=(ev.ContentPart(type="input_audio", transcript=None),))
    if state.session_type == "realtime":
        previous = conversation.insert(draft, ConvEntry(item=item))
    draft.emit(ev.ItemAdded, previous_item_id=previous, item=item)
    draft.emit(ev.ItemDone, previous_item_id=previous, item=item)
    if not transcription.wants_transcript(state):
        transcription.drop_turn(draft)
        return
    announced = (*draft.state.announced, item_id) if state.config.transcription else draft.state.announced
    draft.update(transcribing=(*draft.state.transcribing, item_id), announced=announced)
    if not transcription.end_turn(draft, item_id, end, end if voice_until is None else voice_until):
        draft.jobs.append(transcription.job(draft, item_id, start, end))


def _forget_consumed_audio(draft: Draft) -> None:
    """Bound what a session holds on to. With turn detection on, silence older than the prefix padding can
    never join a turn, so it leaves the buffer; without it, the client's buffer is kept until it commits or
    clears. Marks of audio before the buffer are dropped."""
    state = draft.state
    detection = state.config.turn_detection
    if detection is not None and state.speaking is None:
        floor = state.samples - samples_from_ms(detection.prefix_padding_ms) - VAD_FRAME_SAMPLES
        if floor > state.buffer_start:
            kept_ticks = (state.samples - floor) * (TICKS_PER_SECOND // MODEL_RATE)
            draft.update(buffer_start=floor, buffer_ticks=min(state.buffer_ticks, kept_ticks))
    keep_from = state.speaking.start_sample if state.speaking is not None else draft.state.buffer_start
    marks = state.marks
    first = 0
    while first + 1 < len(marks) and marks[first + 1].sample <= keep_from:
        first += 1
    if first:
        draft.update(marks=marks[first:])


# --- conversation items -------------------------------------------------------------------------------------


def _create_item(draft: Draft, event: ev.ItemCreateRequested) -> None:
    if draft.state.session_type == "transcription":
        draft.error(
            "invalid_value",
            "'conversation.item.create' is not supported in a transcription session.",
            "type",
            event.event_id,
        )
        return
    after = event.previous_item_id
    if after not in (None, "root") and conversation.find(draft, after) is None:
        draft.error("invalid_value", f"Item with id '{after}' not found.", "previous_item_id", event.event_id)
        return
    try:
        item = conversation.build_item(draft, event.item)
    except conversation.ItemError as invalid:
        draft.error("invalid_value", str(invalid), invalid.param, event.event_id)
        return
    previous = conversation.insert(
        draft,
        ConvEntry(item=item, audio=event.item.audio),
        after=None if after == "root" else after,
        at_root=after == "root",
    )
    draft.emit(ev.ItemAdded, previous_item_id=previous, item=item)
    draft.emit(ev.ItemDone, previous_item_id=previous, item=item)
    if event.item.audio is not None:
        conversation.transcribe_item_audio(draft, item.id, event.item.audio)


UNKNOWN_ITEM: dict[type, tuple[str, str]] = {
    ev.ItemRetrieveRequested: ("retrieving", "item_retrieve_invalid_item_id"),
    ev.ItemDeleteRequested: ("deleting", "item_delete_invalid_item_id"),
    ev.ItemTruncateRequested: ("truncating", "item_truncate_invalid_item_id"),
}


def _item_request(
    draft: Draft, event: ev.ItemRetrieveRequested | ev.ItemDeleteRequested | ev.ItemTruncateRequested
) -> None:
    index = conversation.find(draft, event.item_id)
    if index is None:  # OpenAI's codes: clients such as pipecat tell this error from a fatal one by its code
        action, code = UNKNOWN_ITEM[type(event)]
        message = f"Error {action} item: the item with id '{event.item_id}' does not exist."
        draft.error(code, message, "item_id", event.event_id)
        return
    match event:
        case ev.ItemRetrieveRequested():
            draft.emit(ev.ItemRetrieved, item=draft.state.items[index].item)
        case ev.ItemDeleteRequested():
            items = draft.state.items
            draft.update(items=items[:index] + items[index + 1 :])
            draft.emit(ev.ItemDeleted, item_id=event.item_id)
        case ev.ItemTruncateRequested():
            try:
                conversation.truncate(draft, event.item_id, event.content_index, event.audio_end_ms)
            except conversation.ItemError as invalid:
                draft.error("invalid_value", str(invalid), invalid.param, event.event_id)


# --- client events ------------------------------------------------------------------------------------------


def _on_client_event(draft: Draft, event: ev.ClientEvent) -> None:
    state = draft.state
    match event:
        case ev.SessionUpdateRequested():
            try:
                config = apply_update(state.config, event.update, state.default_stt_model)
            except InvalidUpdate as invalid:
                draft.error(invalid.code, invalid.message, invalid.param, event.event_id)
                return
            if config.voice != state.config.voice and any(e.spoken for e in state.items):
                draft.error(
                    "invalid_value",
                    "Cannot change the voice after the assistant has spoken.",
                    "session.audio.output.voice",
                    event.event_id,
                )
                return
            if config.turn_detection is None and state.speaking is not None:
                transcription.drop_turn(draft)
                draft.update(speaking=None, speech_item_id=None)
            draft.update(config=config)
            draft.emit(ev.SessionUpdated, session_id=state.session_id, expires_at=state.expires_at, session=config)
        case ev.AudioCommitRequested():
            buffered_ms = ms_from_ticks(state.buffer_ticks)
            if buffered_ms < MIN_COMMIT_MS or state.samples <= state.buffer_start:
                draft.error(
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small. Expected at least "
                    f"{MIN_COMMIT_MS}ms of audio, but buffer only has "
                    f"{state.buffer_ticks / TICKS_PER_MS:.2f}ms of audio.",
                    None,
                    event.event_id,
                )
                return
            item_id = state.speech_item_id or draft.new_id("item")
            start = state.speaking.start_sample if state.speaking else state.buffer_start
            _commit(draft, item_id, start, state.samples)
        case ev.AudioClearRequested():
            transcription.drop_turn(draft)
            draft.update(buffer_start=state.samples, buffer_ticks=0, speaking=None, speech_item_id=None)
            draft.emit(ev.AudioCleared)
            _forget_consumed_audio(draft)
        case ev.ResponseCreateRequested() if state.session_type == "transcription":
            draft.error(
                "invalid_value",
                "'response.create' is not supported in a transcription session.",
                "type",
                event.event_id,
            )
        case ev.ResponseCreateRequested():
            conversation.create_response(draft, event.response, event.event_id)
        case ev.ResponseCancelRequested():
            target = conversation.active(draft, event.response_id) if event.response_id else None
            target = target or (None if event.response_id else conversation.default_response(draft))
            if target is None:
                draft.error(
                    "response_cancel_not_active", "Cancellation failed: no active response found", None, event.event_id
                )
            else:
                conversation.cancel(draft, target.id, "client_cancelled")
        case ev.ItemCreateRequested():
            _create_item(draft, event)
        case ev.ItemRetrieveRequested() | ev.ItemDeleteRequested() | ev.ItemTruncateRequested():
            _item_request(draft, event)
        case ev.UnservedRequest():
            where = "a transcription session" if state.session_type == "transcription" else "this server yet"
            draft.error(
                "invalid_value",
                f"'{event.event_type}' is not supported in {where}.",
                "type",
                event.event_id,
            )
