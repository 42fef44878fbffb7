"""Conversation mode: items, and the lifecycle of responses (LLM text streamed into clauses, each clause spoken
by TTS and sent with its transcript, function calls, cancellation, barge-in, truncation), and the answer started
speculatively in a turn's silence, before the turn has ended.

Every function here works on a `Draft`; the results of the model workers arrive as records, so a whole
conversation replays exactly like a transcription session.
"""

from typing import Any, Literal

import msgspec

from domain import context_window
from domain import events as ev
from domain import records as rec
from domain.audio_time import TICKS_PER_MS, ms_covering_ticks, ticks_for_bytes
from domain.conversation_state import Clause, ConvEntry, OutputCall, ResponseState, Speculation, Spoken
from domain.jobs import (
    GENERATE_WAIT_MS,
    SYNTHESIZE_WAIT_MS,
    TRANSCRIPT_WAIT_MS,
    GenerateJob,
    SynthesizeJob,
    TranscribeJob,
)
from domain.segmentation import feed, flush
from domain.session_config import MAX_INSTRUCTIONS_CHARS, InvalidUpdate, RetentionRatio, check_length
from domain.state import CancelResponse, Draft, SessionState

DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Your answers are spoken aloud, so keep them short and conversational: "
    "one to three sentences unless asked for more. Do not use lists, markdown, code, emoji or symbols; say "
    "numbers and units the way a person would say them. If you did not understand, ask briefly."
)
RATE_LIMITS = (
    ev.RateLimit(name="requests", limit=10_000, remaining=9_999, reset_seconds=0.006),
    ev.RateLimit(name="tokens", limit=1_000_000, remaining=1_000_000, reset_seconds=0.0),
)


def conversation_id(session_id: str) -> str:
    return "conv_" + session_id.removeprefix("sess_")


# --- items --------------------------------------------------------------------------------------------------


def find(draft: Draft, item_id: str | None) -> int | None:
    return next((i for i, e in enumerate(draft.state.items) if e.item.id == item_id), None)


def _previous_id(draft: Draft, index: int) -> str | None:
    return draft.state.items[index - 1].item.id if index > 0 else None


def insert(draft: Draft, entry: ConvEntry, after: str | None = None, at_root: bool = False) -> str | None:
    """Insert an item (after `after`, at the start, or at the end); returns the id of the item before it."""
    items = list(draft.state.items)
    if at_root:
        index = 0
    elif after is not None:
        found = find(draft, after)
        index = len(items) if found is None else found + 1
    else:
        index = len(items)
    items.insert(index, entry)
    draft.update(items=tuple(items), last_item_id=items[-1].item.id)
    return _previous_id(draft, index)


def replace_item(draft: Draft, item: ev.Item, spoken: tuple[Spoken, ...] | None = None) -> None:
    index = find(draft, item.id)
    if index is None:
        return
    items = list(draft.state.items)
    entry = items[index]
    items[index] = msgspec.structs.replace(entry, item=item, spoken=entry.spoken if spoken is None else spoken)
    draft.update(items=tuple(items))


def set_transcript(draft: Draft, item_id: str, transcript: str | None) -> None:
    index = find(draft, item_id)
    if index is None:
        return
    item = draft.state.items[index].item
    if isinstance(item, ev.MessageItem):
        content = tuple(
            msgspec.structs.replace(part, transcript=transcript) if part.type == "input_audio" else part
            for part in item.content
        )
        replace_item(draft, msgspec.structs.replace(item, content=content))


class ItemError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


_CONTENT_FOR_ROLE = {
    "system": {"input_text"},
    "user": {"input_text", "input_audio"},
    "assistant": {"output_text", "text"},
}


def build_item(draft: Draft, new: ev.NewItem) -> ev.Item:
    """The conversation item a client's `conversation.item.create` asks for, or ItemError."""
    item_id = new.id or draft.new_id("item")
    if find(draft, item_id) is not None:
        raise ItemError(f"Item with id '{item_id}' already exists.", "item.id")
    match new.type:
        case "message":
            if new.role is None:
                raise ItemError("Missing required parameter: 'item.role'.", "item.role")
            allowed = _CONTENT_FOR_ROLE[new.role]
            parts = []
            for index, part in enumerate(new.content):
                if part.type not in allowed:
                    kinds = ", ".join(sorted(allowed))
                    raise ItemError(
                        f"Invalid value: '{part.type}'. A {new.role} message's content may be: {kinds}.",
                        f"item.content.{index}.type",
                    )
                kind = "output_text" if part.type == "text" else part.type
                transcript = None if kind == "input_audio" else part.transcript
                parts.append(ev.ContentPart(type=kind, text=part.text, transcript=transcript))  # type: ignore[arg-type]
            return ev.MessageItem(id=item_id, role=new.role, content=tuple(parts))
        case "function_call":
            if not new.name:
                raise ItemError("Missing required parameter: 'item.name'.", "item.name")
            return ev.FunctionCallItem(
                id=item_id, call_id=new.call_id or draft.new_id("call"), name=new.name, arguments=new.arguments or ""
            )
        case "function_call_output":
            calls = {e.item.call_id for e in draft.state.items if isinstance(e.item, ev.FunctionCallItem)}
            if new.call_id not in calls:
                raise ItemError(f"No function call with call_id '{new.call_id}' in the conversation.", "item.call_id")
            return ev.FunctionCallOutputItem(id=item_id, call_id=new.call_id or "", output=new.output or "")
    raise ItemError(f"Invalid value: '{new.type}'.", "item.type")


def transcribe_item_audio(draft: Draft, item_id: str, audio: ev.AudioRef) -> None:
    """Audio inside a created item is transcribed like a spoken turn."""
    state = draft.state
    draft.jobs.append(
        TranscribeJob(
            job_id=draft.new_id("job"),
            session_id=state.session_id,
            item_id=item_id,
            first_seq=audio.seq,
            last_seq=audio.seq,
            first_sample=0,
            start_sample=0,
            end_sample=audio.samples,
            model=state.stt_model,
            language=state.stt_language,
            deadline_ms=draft.now_ms + TRANSCRIPT_WAIT_MS,
        )
    )
    announced = state.announced + ((item_id,) if state.config.transcription else ())
    draft.update(transcribing=(*state.transcribing, item_id), announced=announced)


def truncate(draft: Draft, item_id: str, content_index: int, audio_end_ms: int) -> None:
    """Cut an assistant audio item to what the client played: the conversation keeps only heard text."""
    index = find(draft, item_id)
    if index is None:
        raise ItemError(f"Item with id '{item_id}' not found.", "item_id")
    entry = draft.state.items[index]
    item = entry.item
    # An answer still being spoken is cut at what was heard too: its audio so far is in its response's clauses.
    running = next((r for r in draft.state.responses if r.message_id == item_id and _audio(r)), None)
    spoken = entry.spoken or (_spoken(running) if running is not None else ())
    if not (isinstance(item, ev.MessageItem) and item.role == "assistant" and spoken):
        raise ItemError("Only assistant messages with audio can be truncated.", "item_id")
    if content_index != 0:
        raise ItemError(f"Invalid 'content_index': {content_index}. The audio is content 0.", "content_index")
    total = sum(clause.ticks for clause in spoken)
    if not 0 <= audio_end_ms <= ms_covering_ticks(total):
        raise ItemError(
            f"Invalid 'audio_end_ms': {audio_end_ms}. The item has {ms_covering_ticks(total)} ms of audio.",
            "audio_end_ms",
        )
    end = min(audio_end_ms * TICKS_PER_MS, total)
    if running is not None and not entry.spoken:  # the cut holds when the answer finishes
        _store(draft, msgspec.structs.replace(running, heard_ticks=end))
    kept = _heard(spoken, end)
    replace_item(draft, msgspec.structs.replace(item, content=_audio_content(kept)), spoken=kept)
    draft.emit(ev.ItemTruncated, item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms)


def _spoken(r: ResponseState) -> tuple[Spoken, ...]:
    return tuple(Spoken(c.text, c.ticks) for c in r.clauses if c.started)


def _heard(spoken: tuple[Spoken, ...], end: int) -> tuple[Spoken, ...]:
    """The clauses heard by `end` (session ticks into the audio); one heard in part keeps the words said by then."""
    kept: list[Spoken] = []
    elapsed = 0
    for clause in spoken:
        if elapsed + clause.ticks <= end:
            kept.append(clause)
        elif elapsed < end:
            words = clause.text.split()
            heard = words[: len(words) * (end - elapsed) // clause.ticks]
            kept.append(Spoken(" ".join(heard), end - elapsed))
        elapsed += clause.ticks
    return tuple(kept)


def _audio_content(spoken: tuple[Spoken, ...]) -> tuple[ev.ContentPart, ...]:
    return (ev.ContentPart(type="output_audio", transcript=" ".join(c.text for c in spoken if c.text)),)


# --- the LLM request ----------------------------------------------------------------------------------------


def _text_of(item: ev.MessageItem) -> str:
    pieces = [part.text if part.type in ("input_text", "output_text") else part.transcript for part in item.content]
    return " ".join(p for p in pieces if p)


def chat_messages(instructions: str, items: tuple[ev.Item, ...]) -> tuple[dict[str, Any], ...]:
    """Conversation items as Chat Completions messages (consecutive function calls share one message)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        match item:
            case ev.MessageItem():
                text = _text_of(item)
                if text:
                    messages.append({"role": item.role, "content": text})
            case ev.FunctionCallItem():
                call = {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments},
                }
                if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                    messages[-1]["tool_calls"].append(call)
                else:
                    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            case ev.FunctionCallOutputItem():
                messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
    return tuple(messages)


def chat_tools(tools: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "type": "function",
            "function": {k: v for k, v in tool.items() if k in ("name", "description", "parameters")},
        }
        for tool in tools
        if tool.get("type", "function") == "function"
    )


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


# --- responses ----------------------------------------------------------------------------------------------


def active(draft: Draft, response_id: str) -> ResponseState | None:
    return next((r for r in draft.state.responses if r.id == response_id), None)


def default_response(draft: Draft) -> ResponseState | None:
    return next((r for r in draft.state.responses if r.conversation == "auto"), None)


def _store(draft: Draft, response: ResponseState) -> None:
    draft.update(responses=tuple(response if r.id == response.id else r for r in draft.state.responses))


def _view(
    draft: Draft, r: ResponseState, status: str = "in_progress", details: dict[str, Any] | None = None
) -> ev.Response:
    usage = None
    if status != "in_progress":
        usage = ev.Usage(
            total_tokens=r.input_tokens + r.output_tokens, input_tokens=r.input_tokens, output_tokens=r.output_tokens
        )
    return ev.Response(
        id=r.id,
        status=status,  # type: ignore[arg-type]
        output_modalities=r.output_modalities,
        voice=r.voice,
        output_format=r.output_format,
        max_output_tokens=r.max_output_tokens,
        conversation_id=conversation_id(draft.state.session_id) if r.conversation == "auto" else None,
        output=r.finished if status != "in_progress" else (),
        status_details=details,
        metadata=r.metadata,
        usage=usage,
        temperature=r.temperature,
    )


def create_response(draft: Draft, params: ev.ResponseParams, event_id: str | None = None) -> None:
    state = draft.state
    if isinstance(params.instructions, str):
        try:
            check_length(params.instructions, MAX_INSTRUCTIONS_CHARS, "response.instructions")
        except InvalidUpdate as invalid:
            draft.error(invalid.code, invalid.message, invalid.param, event_id)
            return
    if params.conversation == "auto" and (current := default_response(draft)) is not None:
        draft.error(
            "conversation_already_has_active_response",
            f"Conversation already has an active response in progress: {current.id}. Wait until the response "
            "is finished before creating a new one.",
            None,
            event_id,
        )
        return
    oob_input: tuple[ev.Item, ...] | None = None
    if not isinstance(params.input, msgspec.UnsetType):
        picked: list[ev.Item] = []
        for index, new in enumerate(params.input):
            if new.type == "item_reference":
                found = find(draft, new.id)
                if found is None:
                    draft.error(
                        "invalid_value", f"Item with id '{new.id}' not found.", f"response.input.{index}.id", event_id
                    )
                    return
                picked.append(state.items[found].item)
            else:
                try:
                    picked.append(build_item(draft, new))
                except ItemError as invalid:
                    draft.error("invalid_value", str(invalid), f"response.input.{index}", event_id)
                    return
        oob_input = tuple(picked)

    response = _new_response(draft, params, oob_input)
    context = oob_input if oob_input is not None else tuple(e.item for e in state.items)
    waiting = tuple(item.id for item in context if item.id in state.transcribing)
    response = msgspec.structs.replace(response, waiting_for=waiting)
    speculation = _speculation_for(draft, response, context) if params.conversation == "auto" else None
    if speculation is not None:
        response = msgspec.structs.replace(response, id=speculation.response.id)
    draft.update(responses=(*state.responses, response), idle_since=None)
    draft.emit(ev.ResponseCreated, response=_view(draft, response))
    draft.emit(ev.RateLimitsUpdated, rate_limits=RATE_LIMITS)
    if speculation is not None:
        _adopt(draft, response, speculation)
    elif not waiting:
        _dispatch(draft, response)


def _new_response(draft: Draft, params: ev.ResponseParams, oob_input: tuple[ev.Item, ...] | None) -> ResponseState:
    config = draft.state.config

    def pick(value: Any, default: Any) -> Any:
        return default if isinstance(value, msgspec.UnsetType) else value

    return ResponseState(
        id=draft.new_id("resp"),
        conversation=params.conversation,
        output_modalities=pick(params.output_modalities, config.output_modalities),
        voice=pick(params.voice, config.voice),
        speed=config.speed,
        output_format=pick(params.output_format, config.output_format),
        instructions=pick(params.instructions, config.instructions) or "",
        tools=pick(params.tools, config.tools),
        tool_choice=pick(params.tool_choice, config.tool_choice),
        temperature=pick(params.temperature, config.temperature),
        max_output_tokens=pick(params.max_output_tokens, config.max_output_tokens),
        metadata=params.metadata,
        input=oob_input,
    )


def transcript_arrived(draft: Draft, item_id: str) -> None:
    """A user item's transcript (or its failure) is in: requests waiting for it can go."""
    for response in draft.state.responses:
        if item_id in response.waiting_for:
            waiting = tuple(i for i in response.waiting_for if i != item_id)
            response = msgspec.structs.replace(response, waiting_for=waiting)
            _store(draft, response)
            if not waiting:
                _dispatch(draft, response)


def _dispatch(draft: Draft, r: ResponseState) -> None:
    state = draft.state
    context = r.input if r.input is not None else tuple(e.item for e in state.items)
    request = _request(state, r, context, draft.new_id("job"), draft.now_ms)
    if request is None:  # only where the window is known: _fitted sends everything otherwise
        max_tokens = None if r.max_output_tokens == "inf" else int(r.max_output_tokens)
        requested = chat_messages(r.instructions, context)
        limit = context_window.budget(state.llm_context_tokens or 0, max_tokens)
        message = (
            f"The conversation needs about {context_window.tokens(requested, chat_tools(r.tools))} "
            f"tokens, over the {limit} the model's context window leaves for it"
        )
        truncation = state.config.truncation
        message += ", and session.truncation is 'disabled'." if truncation == "disabled" else "."
        error = {"type": "invalid_request_error", "code": "context_length_exceeded", "message": message}
        stop(draft, r.id, "failed", {"type": "failed", "error": error})
        return
    draft.jobs.append(request)
    _store(draft, msgspec.structs.replace(r, dispatched=True))


def _request(
    state: SessionState, r: ResponseState, context: tuple[ev.Item, ...], job_id: str, now_ms: int
) -> GenerateJob | None:
    """The LLM job of response `r` over `context`, or None if the context does not fit the model's window."""
    max_tokens = None if r.max_output_tokens == "inf" else int(r.max_output_tokens)
    tools = chat_tools(r.tools)
    messages = _fitted(state, chat_messages(r.instructions, context), tools, max_tokens)
    if messages is None:
        return None
    return GenerateJob(
        job_id=job_id,
        session_id=state.session_id,
        response_id=r.id,
        messages=messages,
        model=state.config.model or "",
        tools=tools,
        tool_choice=chat_tool_choice(r.tool_choice),
        temperature=r.temperature,
        max_tokens=max_tokens,
        deadline_ms=now_ms + GENERATE_WAIT_MS,
    )


def _fitted(
    state: SessionState, messages: tuple[dict[str, Any], ...], tools: tuple[dict[str, Any], ...], max_tokens: int | None
) -> tuple[dict[str, Any], ...] | None:
    """The request's messages as `session.truncation` fits them into the LLM's context window (when it is known)."""
    if state.llm_context_tokens is None:
        return messages
    limit = context_window.budget(state.llm_context_tokens, max_tokens)
    truncation = state.config.truncation
    if truncation == "disabled":
        return messages if context_window.tokens(messages, tools) <= limit else None
    ratio = truncation.retention_ratio if isinstance(truncation, RetentionRatio) else None
    return context_window.fit(messages, tools, limit, ratio)


def _audio(r: ResponseState) -> bool:
    return "audio" in r.output_modalities


def _part(r: ResponseState, text: str = "") -> ev.Part:
    return ev.Part(type="audio", transcript=text) if _audio(r) else ev.Part(type="text", text=text)


def _content(r: ResponseState, text: str) -> tuple[ev.ContentPart, ...]:
    if _audio(r):
        return (ev.ContentPart(type="output_audio", transcript=text),)
    return (ev.ContentPart(type="output_text", text=text),)


def _add_output(draft: Draft, r: ResponseState, item: ev.Item) -> None:
    draft.emit(ev.OutputItemAdded, response_id=r.id, output_index=r.outputs, item=item)
    if r.conversation == "auto":
        previous = insert(draft, ConvEntry(item=item))
        draft.emit(ev.ItemAdded, previous_item_id=previous, item=item)


def _open_message(draft: Draft, r: ResponseState) -> ResponseState:
    item_id = draft.new_id("item")
    item = ev.MessageItem(id=item_id, role="assistant", content=(), status="in_progress")
    _add_output(draft, r, item)
    r = msgspec.structs.replace(r, message_id=item_id, message_index=r.outputs, outputs=r.outputs + 1)
    draft.emit(
        ev.ContentPartAdded,
        response_id=r.id,
        item_id=item_id,
        output_index=r.message_index,
        content_index=0,
        part=_part(r),
    )
    return r


def generating(
    draft: Draft, record: rec.GenerationDelta | rec.GenerationDone | rec.GenerationFailed
) -> ResponseState | None:
    """The response a generation record is for, if the record comes from the attempt the response follows.

    A job taken over from a worker that stopped is a new attempt, and generates another sample: the response takes
    it only if nothing of the first one was heard; otherwise it fails rather than join two samples into one answer.
    Records of an earlier attempt that still arrive are dropped. Records of a speculation are kept by it."""
    if _speculated(draft, record):
        return None
    r = active(draft, record.response_id)
    if r is None or record.attempt == r.attempt:
        return r
    if record.attempt < r.attempt:
        return None
    if r.text or r.calls:
        message = "The worker generating this response stopped mid-answer; the answer was not finished."
        fail(draft, r.id, "generation_interrupted", message)
        return None
    r = msgspec.structs.replace(r, attempt=record.attempt)
    _store(draft, r)
    return r


def on_generation(draft: Draft, record: rec.GenerationDelta) -> None:
    r = generating(draft, record)
    if r is None:
        return
    if record.text:
        if r.message_id is None:
            r = _open_message(draft, r)
        assert r.message_id is not None
        r = msgspec.structs.replace(r, text=r.text + record.text)
        if _audio(r):
            segmenter, clauses = feed(r.segmenter, record.text)
            r = _speak(draft, msgspec.structs.replace(r, segmenter=segmenter), clauses)
        else:
            draft.emit(
                ev.OutputTextDelta,
                response_id=r.id,
                item_id=r.message_id,
                output_index=r.message_index,
                content_index=0,
                delta=record.text,
            )
    for piece in record.tool_calls:
        call = next((c for c in r.calls if c.index == piece.index), None)
        if call is None:
            call = OutputCall(
                index=piece.index,
                item_id=draft.new_id("item"),
                call_id=piece.id or draft.new_id("call"),
                name=piece.name or "",
                output_index=r.outputs,
            )
            item = ev.FunctionCallItem(id=call.item_id, call_id=call.call_id, name=call.name, status="in_progress")
            _add_output(draft, r, item)
            r = msgspec.structs.replace(r, outputs=r.outputs + 1, calls=(*r.calls, call))
        if piece.arguments:
            draft.emit(
                ev.FunctionCallArgumentsDelta,
                response_id=r.id,
                item_id=call.item_id,
                output_index=call.output_index,
                call_id=call.call_id,
                delta=piece.arguments,
            )
            grown = msgspec.structs.replace(call, arguments=call.arguments + piece.arguments)
            r = msgspec.structs.replace(r, calls=tuple(grown if c.index == call.index else c for c in r.calls))
    _store(draft, r)


def _speak(draft: Draft, r: ResponseState, clauses: tuple[str, ...]) -> ResponseState:
    for text in clauses:
        if len(r.clauses) >= r.presynthesized:  # not asked for already, while the response was a speculation
            draft.jobs.append(_synthesis(draft, r, len(r.clauses), text))
        r = msgspec.structs.replace(r, clauses=(*r.clauses, Clause(text=text)))
    return r


def _synthesis(draft: Draft, r: ResponseState, index: int, text: str) -> SynthesizeJob:
    return SynthesizeJob(
        job_id=draft.new_id("job"),
        session_id=draft.state.session_id,
        response_id=r.id,
        clause_index=index,
        text=text,
        voice=r.voice,
        speed=r.speed,
        audio_format=r.output_format,  # type: ignore[arg-type]
        deadline_ms=draft.now_ms + SYNTHESIZE_WAIT_MS,
    )


def on_generation_done(draft: Draft, record: rec.GenerationDone) -> None:
    r = generating(draft, record)
    if r is None:
        return
    r = msgspec.structs.replace(
        r,
        llm_done=True,
        finish_reason=record.finish_reason,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
    )
    if _audio(r) and r.message_id is not None:
        segmenter, clauses = flush(r.segmenter)
        r = _speak(draft, msgspec.structs.replace(r, segmenter=segmenter), clauses)
    for call in r.calls:
        draft.emit(
            ev.FunctionCallArgumentsDone,
            response_id=r.id,
            item_id=call.item_id,
            output_index=call.output_index,
            call_id=call.call_id,
            name=call.name,
            arguments=call.arguments,
        )
        item = ev.FunctionCallItem(id=call.item_id, call_id=call.call_id, name=call.name, arguments=call.arguments)
        r = _finish_item(draft, r, item, call.output_index)
    _store(draft, msgspec.structs.replace(r, calls=()))
    _maybe_done(draft, r.id)


def on_speech(draft: Draft, record: rec.SpeechSynthesized) -> None:
    if _speculated(draft, record):
        return
    r = active(draft, record.response_id)
    if r is None or r.message_id is None:
        return
    if record.clause_index >= len(r.clauses) or record.chunk_index < r.clauses[record.clause_index].chunks:
        return  # a chunk sent already, made again by a worker that took the clause over
    r = msgspec.structs.replace(r, buffered=(*r.buffered, record))
    while True:  # emit, in clause order, every chunk whose clause is the one being spoken
        current = next((i for i, c in enumerate(r.clauses) if not c.done), None)
        if current is None:
            break
        clause = r.clauses[current]
        chunk = next((b for b in r.buffered if (b.clause_index, b.chunk_index) == (current, clause.chunks)), None)
        if chunk is None:
            break
        ids = {"response_id": r.id, "item_id": r.message_id, "output_index": r.message_index, "content_index": 0}
        if not clause.started:
            spoken_before = any(c.started for c in r.clauses)
            draft.emit(ev.OutputAudioTranscriptDelta, delta=(" " if spoken_before else "") + clause.text, **ids)
        if chunk.audio:
            draft.emit(ev.OutputAudioDelta, delta=chunk.audio, **ids)
        clause = msgspec.structs.replace(
            clause,
            started=True,
            chunks=clause.chunks + 1,
            done=chunk.last,
            ticks=clause.ticks + ticks_for_bytes(len(chunk.audio), r.output_format),
        )
        clauses = tuple(clause if i == current else c for i, c in enumerate(r.clauses))
        r = msgspec.structs.replace(r, clauses=clauses, buffered=tuple(b for b in r.buffered if b is not chunk))
    _store(draft, r)
    _maybe_done(draft, r.id)


def _finish_item(draft: Draft, r: ResponseState, item: ev.Item, output_index: int) -> ResponseState:
    draft.emit(ev.OutputItemDone, response_id=r.id, output_index=output_index, item=item)
    if r.conversation == "auto":
        spoken = _spoken(r) if item.id == r.message_id else None
        if spoken is not None and r.heard_ticks is not None:  # truncated while it was spoken: the cut holds
            spoken = _heard(spoken, r.heard_ticks)
            item = msgspec.structs.replace(item, content=_audio_content(spoken))
        replace_item(draft, item, spoken=spoken)
        index = find(draft, item.id)
        previous = _previous_id(draft, index) if index is not None else None
        draft.emit(ev.ItemDone, previous_item_id=previous, item=item)
    finished = sorted((*r.finished, item), key=lambda i: _output_index(r, i))
    return msgspec.structs.replace(r, finished=tuple(finished))


def _output_index(r: ResponseState, item: ev.Item) -> int:
    if item.id == r.message_id:
        return r.message_index
    return next((c.output_index for c in r.calls if c.item_id == item.id), r.outputs)


def _close_message(draft: Draft, r: ResponseState, status: Literal["completed", "incomplete"]) -> ResponseState:
    if r.message_id is None:
        return r
    ids = {"response_id": r.id, "item_id": r.message_id, "output_index": r.message_index, "content_index": 0}
    if _audio(r):
        text = " ".join(c.text for c in r.clauses if c.started)
        draft.emit(ev.OutputAudioDone, **ids)
        draft.emit(ev.OutputAudioTranscriptDone, transcript=text, **ids)
    else:
        text = r.text
        draft.emit(ev.OutputTextDone, text=text, **ids)
    draft.emit(ev.ContentPartDone, part=_part(r, text), **ids)
    item = ev.MessageItem(id=r.message_id, role="assistant", content=_content(r, text), status=status)
    return _finish_item(draft, r, item, r.message_index)


def _maybe_done(draft: Draft, response_id: str) -> None:
    r = active(draft, response_id)
    if r is None or not r.llm_done or any(not c.done for c in r.clauses):
        return
    r = _close_message(draft, r, "completed")
    if r.finish_reason == "length":
        _end(draft, r, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
    else:
        _end(draft, r, "completed", None)


def _end(draft: Draft, r: ResponseState, status: str, details: dict[str, Any] | None) -> None:
    draft.emit(ev.ResponseDone, response=_view(draft, r, status, details))
    remaining = tuple(x for x in draft.state.responses if x.id != r.id)
    idle = draft.state.samples if r.conversation == "auto" else draft.state.idle_since
    draft.update(responses=remaining, idle_since=idle)


def stop(draft: Draft, response_id: str, status: Literal["cancelled", "failed"], details: dict[str, Any]) -> None:
    """End a response early: open parts and items close as incomplete, and the workers are told to stop."""
    r = active(draft, response_id)
    if r is None:
        return
    r = _close_message(draft, r, "incomplete")
    for call in r.calls:
        item = ev.FunctionCallItem(
            id=call.item_id, call_id=call.call_id, name=call.name, arguments=call.arguments, status="incomplete"
        )
        r = _finish_item(draft, r, item, call.output_index)
    draft.jobs.append(CancelResponse(response_id=r.id))
    _end(draft, r, status, details)


def cancel(draft: Draft, response_id: str, reason: Literal["client_cancelled", "turn_detected"]) -> None:
    stop(draft, response_id, "cancelled", {"type": "cancelled", "reason": reason})


def fail(draft: Draft, response_id: str, code: str, message: str) -> None:
    speculation = draft.state.speculation
    if speculation is not None and speculation.response.id == response_id:
        discard_speculation(draft)  # the response, when the turn ends, asks again
        return
    error = {"type": "server_error", "code": code, "message": message}
    stop(draft, response_id, "failed", {"type": "failed", "error": error})


# --- speculation ----------------------------------------------------------------------------------------------


def speculate(draft: Draft, item_id: str, transcript: str) -> None:
    """The turn `item_id` is silent and its closing decode says `transcript`: start the response it would get if
    the turn ended now (its LLM request, and the speech of its clauses), without telling the client. Only where
    the turn's end creates a response on its own, and no earlier turn's transcript is awaited."""
    discard_speculation(draft)
    state = draft.state
    detection = state.config.turn_detection
    if state.session_type != "realtime" or detection is None or not detection.create_response:
        return
    if default_response(draft) is not None or any(e.item.id in state.transcribing for e in state.items):
        return
    turn = ev.MessageItem(id=item_id, role="user", content=(ev.ContentPart(type="input_audio", transcript=transcript),))
    response = _new_response(draft, ev.ResponseParams(), None)
    request = _request(state, response, (*(e.item for e in state.items), turn), draft.new_id("job"), draft.now_ms)
    if request is None:
        return
    draft.jobs.append(request)
    draft.update(speculation=Speculation(item_id=item_id, response=response, job=request))


def discard_speculation(draft: Draft) -> None:
    """The turn went on, or ended otherwise: the speculation's jobs stop and its results are dropped."""
    speculation = draft.state.speculation
    if speculation is None:
        return
    draft.jobs.append(CancelResponse(response_id=speculation.response.id))
    draft.update(speculation=None, speculations_wasted=draft.state.speculations_wasted + 1)


def _speculation_for(draft: Draft, response: ResponseState, context: tuple[ev.Item, ...]) -> Speculation | None:
    """The speculation `response` takes over: one that made the very request `response` would make now. Any other
    is discarded, as this response is the one the turn gets."""
    speculation = draft.state.speculation
    if speculation is None:
        return None
    spec = speculation.job
    same = not response.waiting_for and msgspec.structs.replace(response, id=speculation.response.id) == (
        speculation.response
    )
    if same:
        request = _request(draft.state, speculation.response, context, spec.job_id, spec.deadline_ms or 0)
        same = request is not None and msgspec.structs.replace(request, deadline_ms=spec.deadline_ms) == spec
    if not same:
        discard_speculation(draft)
        return None
    draft.update(speculation=None, speculations_used=draft.state.speculations_used + 1)
    return speculation


def _adopt(draft: Draft, r: ResponseState, speculation: Speculation) -> None:
    """The response takes over its speculation: what the LLM and TTS made so far goes out now, in log order."""
    _store(draft, msgspec.structs.replace(r, dispatched=True, presynthesized=speculation.clauses))
    for record in speculation.records:
        match record:
            case rec.GenerationDelta():
                on_generation(draft, record)
            case rec.GenerationDone():
                on_generation_done(draft, record)
            case rec.SpeechSynthesized():
                on_speech(draft, record)


def _speculated(
    draft: Draft, record: rec.GenerationDelta | rec.GenerationDone | rec.GenerationFailed | rec.SpeechSynthesized
) -> bool:
    """Keep a record of the speculation (and ask for the speech of the clauses it completes); False if the record
    is not the speculation's."""
    s = draft.state.speculation
    if s is None or record.response_id != s.response.id:
        return False
    if isinstance(record, rec.GenerationFailed):
        discard_speculation(draft)
        return True
    if isinstance(record, rec.SpeechSynthesized):
        draft.update(speculation=msgspec.structs.replace(s, records=(*s.records, record)))
        return True
    if s.attempt and record.attempt != s.attempt:  # another worker took the job over: a new sample
        discard_speculation(draft)
        return True
    s = msgspec.structs.replace(s, records=(*s.records, record), attempt=record.attempt)
    clauses: tuple[str, ...] = ()
    if isinstance(record, rec.GenerationDelta) and record.text:
        s = msgspec.structs.replace(s, text=True)
        if _audio(s.response):
            segmenter, clauses = feed(s.segmenter, record.text)
            s = msgspec.structs.replace(s, segmenter=segmenter)
    elif isinstance(record, rec.GenerationDone) and s.text and _audio(s.response):
        segmenter, clauses = flush(s.segmenter)
        s = msgspec.structs.replace(s, segmenter=segmenter)
    for text in clauses:
        draft.jobs.append(_synthesis(draft, s.response, s.clauses, text))
        s = msgspec.structs.replace(s, clauses=s.clauses + 1)
    draft.update(speculation=s)
    return True
