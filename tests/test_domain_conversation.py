"""Conversation logic without NATS or models: the LLM request, clause order, truncation, idle timeout."""

import msgspec

from domain import conversation
from domain import events as ev
from domain import records as rec
from domain.jobs import GenerateJob, SynthesizeJob
from domain.session_config import SessionUpdate, TurnDetectionUpdate
from tests.test_domain_session import FIRST_TURN, Sim, only

AT = 1_700_000_000_000


def text_turn(sim: Sim, text: str = "Hi") -> None:
    item = ev.NewItem(type="message", role="user", content=(ev.NewContent(type="input_text", text=text),))
    sim.client(ev.ItemCreateRequested(item=item))


def respond(sim: Sim) -> str:
    sim.client(ev.ResponseCreateRequested())
    return only(sim.events, ev.ResponseCreated)[-1].response.id


def llm(sim: Sim, response_id: str, text: str, done: bool = True) -> None:
    sim.feed(rec.GenerationDelta(at_ms=AT, job_id="j", response_id=response_id, index=0, worker="w", text=text))
    if done:
        sim.feed(rec.GenerationDone(at_ms=AT, job_id="j", response_id=response_id, finish_reason="stop", worker="w"))


def speech(sim: Sim, response_id: str, clause: int, chunk: int, ms: int, last: bool) -> None:
    sim.feed(
        rec.SpeechSynthesized(
            at_ms=AT,
            job_id="t",
            response_id=response_id,
            clause_index=clause,
            chunk_index=chunk,
            audio=bytes(48 * ms),
            last=last,
            worker="w",
        )
    )


def test_chat_messages_map_roles_calls_and_outputs():
    items = (
        ev.MessageItem(id="a", role="system", content=(ev.ContentPart(type="input_text", text="Be kind"),)),
        ev.MessageItem(id="b", role="user", content=(ev.ContentPart(type="input_audio", transcript="weather?"),)),
        ev.FunctionCallItem(id="c", call_id="call_1", name="w", arguments='{"x":1}'),
        ev.FunctionCallItem(id="d", call_id="call_2", name="w", arguments="{}"),
        ev.FunctionCallOutputItem(id="e", call_id="call_1", output="sunny"),
        ev.MessageItem(id="f", role="user", content=(ev.ContentPart(type="input_audio", transcript=None),)),
    )
    messages = conversation.chat_messages("Rules", items)
    assert messages[0] == {"role": "system", "content": "Rules"}
    assert messages[1:3] == ({"role": "system", "content": "Be kind"}, {"role": "user", "content": "weather?"})
    assert [c["id"] for c in messages[3]["tool_calls"]] == ["call_1", "call_2"], "consecutive calls share a message"
    assert messages[4] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert len(messages) == 5, "an item with no words yet is left out"
    assert conversation.chat_tools(({"type": "function", "name": "w", "parameters": {}},)) == (
        {"type": "function", "function": {"name": "w", "parameters": {}}},
    )


def test_clauses_are_spoken_in_order_whatever_order_their_audio_arrives_in():
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "First clause is here. Second clause follows now.")
    jobs = [j for j in sim.jobs if isinstance(j, SynthesizeJob)]
    assert [j.text for j in jobs] == ["First clause is here.", "Second clause follows now."]
    speech(sim, response, 1, 0, 100, last=True)  # the second clause is ready first
    assert not only(sim.events, ev.OutputAudioDelta)
    speech(sim, response, 0, 0, 100, last=False)
    speech(sim, response, 0, 1, 50, last=True)
    deltas = [e for e in sim.events if isinstance(e, ev.OutputAudioDelta | ev.OutputAudioTranscriptDelta)]
    assert [type(e).__name__ for e in deltas] == [
        "OutputAudioTranscriptDelta",
        "OutputAudioDelta",
        "OutputAudioDelta",
        "OutputAudioTranscriptDelta",
        "OutputAudioDelta",
    ]
    assert [e.delta for e in deltas if isinstance(e, ev.OutputAudioTranscriptDelta)] == [
        "First clause is here.",
        " Second clause follows now.",
    ]
    (done,) = only(sim.events, ev.ResponseDone)
    assert done.response.status == "completed"
    assert done.response.output[0].content[0].transcript == "First clause is here. Second clause follows now."


def test_truncation_at_the_audio_s_real_length_is_accepted():
    """Clients count the bytes they played: chunks that are not whole milliseconds must add up exactly."""
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "One two three four.")
    sizes = (4824, 4824, 4824, 48)  # 100.5 ms, three times, then 1 ms: 302.5 ms in all
    for index, size in enumerate(sizes):
        sim.feed(
            rec.SpeechSynthesized(
                at_ms=AT,
                job_id="t",
                response_id=response,
                clause_index=0,
                chunk_index=index,
                audio=bytes(size),
                last=index == len(sizes) - 1,
                worker="w",
            )
        )
    item = only(sim.events, ev.ResponseDone)[0].response.output[0].id
    played_ms = sum(sizes) // 48  # what a client that truncates at the end of playback sends (302)
    sim.client(ev.ItemTruncateRequested(item_id=item, content_index=0, audio_end_ms=played_ms, event_id="end"))
    assert not only(sim.events, ev.ErrorEvent)
    assert only(sim.events, ev.ItemTruncated)[-1].audio_end_ms == played_ms
    entry = next(e for e in sim.state.items if e.item.id == item)
    assert entry.item.content[0].transcript == "One two three"  # 302 of 302.5 ms: the last word not quite over


def test_truncation_keeps_the_words_heard():
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "One two three four. Five six seven eight nine ten eleven twelve.")
    speech(sim, response, 0, 0, 400, last=True)
    speech(sim, response, 1, 0, 800, last=True)
    item = only(sim.events, ev.ResponseDone)[0].response.output[0].id
    sim.client(ev.ItemTruncateRequested(item_id=item, content_index=0, audio_end_ms=800))
    (truncated,) = only(sim.events, ev.ItemTruncated)
    assert truncated.audio_end_ms == 800
    entry = next(e for e in sim.state.items if e.item.id == item)
    assert entry.item.content[0].transcript == "One two three four. Five six seven eight"  # half of clause two
    sim.client(ev.ItemTruncateRequested(item_id=item, content_index=0, audio_end_ms=801, event_id="x"))
    assert only(sim.events, ev.ErrorEvent)[-1].error.param == "audio_end_ms"
    user = sim.state.items[0].item.id
    sim.client(ev.ItemTruncateRequested(item_id=user, content_index=0, audio_end_ms=0, event_id="y"))
    assert only(sim.events, ev.ErrorEvent)[-1].error.param == "item_id"


def test_late_results_of_a_cancelled_response_are_ignored():
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "Hello there. More words to come", done=False)
    sim.client(ev.ResponseCancelRequested())
    (done,) = only(sim.events, ev.ResponseDone)
    assert (done.response.status, done.response.status_details) == (
        "cancelled",
        {"type": "cancelled", "reason": "client_cancelled"},
    )
    assert any(j == conversation.CancelResponse(response_id=response) for j in sim.jobs)
    before = len(sim.events)
    speech(sim, response, 0, 0, 100, last=True)
    llm(sim, response, " and more.")
    assert len(sim.events) == before


def test_idle_timeout_triggers_a_new_response():
    sim = Sim("realtime")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", idle_timeout_ms=6000))
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "")
    assert only(sim.events, ev.ResponseDone)
    sim.frames([0.0] * 180)  # 5.8 s of silence: not yet
    assert not only(sim.events, ev.TimeoutTriggered)
    sim.frames([0.0] * 12)
    (triggered,) = only(sim.events, ev.TimeoutTriggered)
    assert triggered.audio_end_ms - triggered.audio_start_ms >= 6000
    assert len(only(sim.events, ev.ResponseCreated)) == 2
    assert msgspec.json.encode(sim.state.config.turn_detection).count(b"6000") == 1


def test_a_spoken_turn_during_an_answer_interrupts_it():
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "A long answer that is still going", done=False)
    sim.frames(FIRST_TURN)
    kinds = [type(e).__name__ for e in sim.events]
    assert kinds.index("SpeechStarted") < kinds.index("ResponseDone")
    assert only(sim.events, ev.ResponseDone)[0].response.status_details["reason"] == "turn_detected"
    assert any(isinstance(j, GenerateJob) for j in sim.jobs)


def test_an_unknown_item_gets_openai_s_code_for_what_was_asked():
    """Clients tell these errors from fatal ones by their codes (pipecat ends its session on any other)."""
    sim = Sim("realtime")
    for event, code in (
        (ev.ItemRetrieveRequested(item_id="item_gone", event_id="a"), "item_retrieve_invalid_item_id"),
        (ev.ItemDeleteRequested(item_id="item_gone", event_id="b"), "item_delete_invalid_item_id"),
        (
            ev.ItemTruncateRequested(item_id="item_gone", content_index=0, audio_end_ms=0, event_id="c"),
            "item_truncate_invalid_item_id",
        ),
    ):
        sim.client(event)
        error = only(sim.events, ev.ErrorEvent)[-1].error
        assert (error.code, error.param, error.event_id) == (code, "item_id", event.event_id)
        assert "item_gone" in error.message


def test_an_answer_truncated_while_it_is_spoken_keeps_the_cut_when_it_ends():
    """The OpenAI Agents SDK truncates at speech_started, before it cancels: the answer is still running."""
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "One two three four. Five six seven eight nine ten eleven twelve.")
    speech(sim, response, 0, 0, 400, last=True)
    speech(sim, response, 1, 0, 400, last=False)  # half of clause two is out so far: the answer still runs
    item = sim.state.responses[0].message_id
    sim.client(ev.ItemTruncateRequested(item_id=item, content_index=0, audio_end_ms=600, event_id="cut"))
    assert not only(sim.events, ev.ErrorEvent)
    assert only(sim.events, ev.ItemTruncated)[-1].audio_end_ms == 600
    sim.client(ev.ResponseCancelRequested())
    (done,) = only(sim.events, ev.ResponseDone)
    assert done.response.status == "cancelled"
    entry = next(e for e in sim.state.items if e.item.id == item)
    heard = "One two three four. Five six seven eight"  # 200 ms of the 400 sent of clause two: half its words
    assert entry.item.content[0].transcript == heard, "what was heard, not what was sent"


def delta(sim: Sim, response_id: str, text: str, index: int, attempt: int) -> None:
    sim.feed(
        rec.GenerationDelta(
            at_ms=AT, job_id="j", response_id=response_id, index=index, worker="w", text=text, attempt=attempt
        )
    )


def test_a_generation_taken_over_mid_answer_fails_the_response_instead_of_joining_two_samples():
    sim = Sim("realtime")
    text_turn(sim)
    sim.client(ev.SessionUpdateRequested(update=conversation_text_only()))
    response = respond(sim)
    delta(sim, response, "One two", 0, attempt=1)
    delta(sim, response, "Something else", 0, attempt=2)  # the worker died; another took the job over
    delta(sim, response, " three", 1, attempt=1)  # the first attempt's last piece, late
    texts = [e.delta for e in only(sim.events, ev.OutputTextDelta)]
    assert texts == ["One two"]
    (done,) = only(sim.events, ev.ResponseDone)
    assert done.response.status == "failed"
    assert done.response.status_details["error"]["code"] == "generation_interrupted"


def test_a_generation_taken_over_before_anything_was_heard_is_the_answer():
    sim = Sim("realtime")
    text_turn(sim)
    sim.client(ev.SessionUpdateRequested(update=conversation_text_only()))
    response = respond(sim)
    delta(sim, response, "", 0, attempt=1)  # the role chunk, and then the first worker died
    delta(sim, response, "Hello", 0, attempt=2)
    sim.feed(rec.GenerationFailed(at_ms=AT, job_id="j", response_id=response, message="late", worker="w"))
    sim.feed(
        rec.GenerationDone(at_ms=AT, job_id="j", response_id=response, finish_reason="stop", worker="w", attempt=2)
    )
    assert [e.delta for e in only(sim.events, ev.OutputTextDelta)] == ["Hello"]
    (done,) = only(sim.events, ev.ResponseDone)
    assert done.response.status == "completed", "the first attempt's failure, late, is not the answer's"


def test_a_clause_s_chunks_go_out_once_each_in_order_whoever_made_them():
    sim = Sim("realtime")
    text_turn(sim)
    response = respond(sim)
    llm(sim, response, "Only one clause here.")
    speech(sim, response, 0, 1, 20, last=False)  # ahead of its turn
    speech(sim, response, 0, 0, 10, last=False)
    speech(sim, response, 0, 0, 10, last=False)  # again, from a worker that took the clause over
    speech(sim, response, 0, 1, 20, last=False)
    speech(sim, response, 0, 2, 30, last=True)
    assert [len(e.delta) for e in only(sim.events, ev.OutputAudioDelta)] == [48 * 10, 48 * 20, 48 * 30]
    (done,) = only(sim.events, ev.ResponseDone)
    assert done.response.status == "completed"


def conversation_text_only() -> SessionUpdate:
    return SessionUpdate(output_modalities=("text",))
