"""The speculative response (`domain.conversation.speculate`): the answer to a turn is started when the turn's
closing decode comes back while the user is silent, and the client hears of it only once the turn has ended."""

from collections.abc import Sequence

from domain import events as ev
from domain import records as rec
from domain.jobs import GenerateJob, SynthesizeJob, TranscribeJob
from domain.session_config import TurnDetectionUpdate
from domain.state import CancelResponse
from tests.test_domain_session import LIVE_TURN, SPOKEN, Sim, heard, only, types

AT = 1_700_000_000_000
PAUSE = 40 + 54 + 8  # the voice (frames 40..93), then 8 frames (256 ms) of its silence: the closing decode is back
END = LIVE_TURN[PAUSE:]  # the rest of the silence: the VAD ends the turn (500 ms)


def speak(sim: Sim, probs: Sequence[float]) -> list[ev.ServerEvent]:
    """Feed frames four to a record; each decode is answered as soon as it is asked for."""
    events: list[ev.ServerEvent] = []
    for i in range(0, len(probs), 4):
        asked = len(sim.jobs)
        events += sim.frames(probs[i : i + 4])[0].events
        for job in sim.jobs[asked:]:
            if isinstance(job, TranscribeJob) and job.words:
                events += sim.words(job, heard(job), as_said=True).events
    return events


def generates(sim: Sim) -> list[GenerateJob]:
    return [j for j in sim.jobs if isinstance(j, GenerateJob)]


def delta(sim: Sim, response_id: str, text: str = "", tool_calls: tuple[rec.ToolCallDelta, ...] = ()) -> None:
    sim.feed(
        rec.GenerationDelta(
            at_ms=AT, job_id="j", response_id=response_id, index=0, worker="w", text=text, tool_calls=tool_calls
        )
    )


def done(sim: Sim, response_id: str, reason: str = "stop") -> None:
    sim.feed(rec.GenerationDone(at_ms=AT, job_id="j", response_id=response_id, finish_reason=reason, worker="w"))


def chunk(sim: Sim, response_id: str, clause: int, index: int, last: bool) -> None:
    sim.feed(
        rec.SpeechSynthesized(
            at_ms=AT,
            job_id="t",
            response_id=response_id,
            clause_index=clause,
            chunk_index=index,
            audio=bytes(4800),
            last=last,
            worker="w",
        )
    )


def paused() -> tuple[Sim, GenerateJob]:
    """A conversation whose user has said SPOKEN and is silent, its closing decode back: the answer is asked for."""
    sim = Sim("realtime", model="gpt-realtime")
    events = speak(sim, LIVE_TURN[:PAUSE])
    assert "input_audio_buffer.speech_stopped" not in types(events)
    (speculative,) = generates(sim)
    assert speculative.messages[-1] == {"role": "user", "content": " ".join(SPOKEN)}
    return sim, speculative


def test_a_turn_that_ends_as_it_was_decoded_gets_the_speculative_answer_at_once():
    sim, job = paused()
    asked = len(sim.jobs)
    before = len(sim.events)
    delta(sim, job.response_id, "Sure thing. I can")
    chunk(sim, job.response_id, 0, 0, last=False)
    assert sim.events[before:] == [], "nothing of a speculation reaches the client"
    (synthesis,) = [j for j in sim.jobs[asked:] if isinstance(j, SynthesizeJob)]
    assert (synthesis.text, synthesis.response_id, synthesis.clause_index) == ("Sure thing.", job.response_id, 0)

    asked = len(sim.jobs)
    ended = speak(sim, END)
    assert not generates(sim)[1:] and not [j for j in sim.jobs[asked:] if isinstance(j, SynthesizeJob)]
    kinds = types(ended)
    assert kinds[kinds.index("input_audio_buffer.speech_stopped") :] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ], "the answer's first audio goes out with speech_stopped"
    (created,) = only(ended, ev.ResponseCreated)
    assert created.response.id == job.response_id
    assert (sim.state.speculations_used, sim.state.speculations_wasted, sim.state.speculation) == (1, 0, None)

    # The response goes on as any other: the rest of the first clause, the next clause, the end.
    chunk(sim, job.response_id, 0, 1, last=True)
    delta(sim, job.response_id, " help with that.")
    done(sim, job.response_id)
    (second,) = [j for j in sim.jobs[asked:] if isinstance(j, SynthesizeJob)]
    assert (second.text, second.clause_index) == ("I can help with that.", 1)
    chunk(sim, job.response_id, 1, 0, last=True)
    (finished,) = only(sim.events, ev.ResponseDone)
    assert finished.response.status == "completed"
    (transcript,) = only(sim.events, ev.OutputAudioTranscriptDone)
    assert transcript.transcript == "Sure thing. I can help with that."


def test_an_answer_finished_while_the_user_was_silent_is_sent_whole_when_the_turn_ends():
    sim, job = paused()
    delta(sim, job.response_id, "Yes.")
    done(sim, job.response_id)
    chunk(sim, job.response_id, 0, 0, last=True)
    kinds = types(speak(sim, END))
    assert kinds[-4:] == [
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert sim.state.responses == ()


def test_a_speculation_is_thrown_away_when_the_user_speaks_again():
    sim, job = paused()
    delta(sim, job.response_id, "Sure thing. I can")
    before = len(sim.events)
    asked = len(sim.jobs)
    transition = sim.frames([0.9] * 4)[0]  # the user goes on
    assert CancelResponse(response_id=job.response_id) in transition.jobs
    assert sim.state.speculation is None and sim.state.speculations_wasted == 1
    delta(sim, job.response_id, " help.")  # late results of the speculation are dropped
    done(sim, job.response_id)
    chunk(sim, job.response_id, 0, 0, last=True)
    assert not [j for j in sim.jobs[asked:] if isinstance(j, SynthesizeJob)]
    assert "response.created" not in types(sim.events[before:])

    for transcribe in [j for j in sim.jobs[asked:] if isinstance(j, TranscribeJob)]:
        sim.words(transcribe, heard(transcribe), as_said=True)
    events = speak(sim, [0.0] * 24)
    (created,) = only(events, ev.ResponseCreated)
    assert created.response.id != job.response_id
    latest = generates(sim)[-1]
    assert latest.response_id == created.response.id and latest.job_id != job.job_id
    assert not only(events, ev.OutputAudioDelta)


def test_a_turn_that_ends_with_another_request_asks_the_llm_again():
    sim, job = paused()
    delta(sim, job.response_id, "Sure.")
    sim.update(instructions="Answer in French.")  # the request the turn's end makes is not the speculation's
    events = speak(sim, END)
    assert not only(events, ev.OutputItemAdded)
    fresh = generates(sim)[-1]
    (created,) = only(events, ev.ResponseCreated)
    assert fresh.response_id == created.response.id != job.response_id
    assert fresh.messages[0]["content"] == "Answer in French."
    assert fresh.messages[-1] == job.messages[-1]
    assert (sim.state.speculations_used, sim.state.speculations_wasted) == (0, 1)


def test_a_speculative_function_call_is_sent_only_when_the_turn_ends():
    sim, job = paused()
    before = len(sim.events)
    call = rec.ToolCallDelta(index=0, id="call_1", name="lookup", arguments='{"q": 1}')
    delta(sim, job.response_id, tool_calls=(call,))
    done(sim, job.response_id, "tool_calls")
    assert sim.events[before:] == []
    kinds = types(speak(sim, END))
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.done"


def test_no_speculation_without_an_automatic_response_or_in_a_transcription_session():
    sim = Sim("realtime", model="gpt-realtime")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", create_response=False))
    speak(sim, LIVE_TURN)
    assert not generates(sim) and sim.state.speculations_wasted == 0
    sim = Sim("transcription")
    speak(sim, LIVE_TURN)
    assert not generates(sim) and sim.state.speculation is None


def test_a_failed_speculation_is_wasted_and_the_turn_asks_again():
    sim, job = paused()
    sim.feed(rec.GenerationFailed(at_ms=AT, job_id=job.job_id, response_id=job.response_id, message="x", worker="w"))
    assert sim.state.speculation is None and sim.state.speculations_wasted == 1
    events = speak(sim, END)
    assert not only(events, ev.ResponseDone)
    assert generates(sim)[-1].response_id == only(events, ev.ResponseCreated)[0].response.id


def test_no_speculation_while_an_answer_is_in_progress():
    sim = Sim("realtime", model="gpt-realtime")
    sim.update(turn_detection=TurnDetectionUpdate(type="server_vad", interrupt_response=False))
    sim.client(ev.ResponseCreateRequested())
    speak(sim, LIVE_TURN[:PAUSE])
    assert len(generates(sim)) == 1 and sim.state.speculation is None
