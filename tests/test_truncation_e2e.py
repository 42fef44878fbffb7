"""`session.truncation` over the SDK with the scripted LLM: a 200-turn conversation, and every request fits."""

import pytest

from domain.context_window import budget, tokens
from tests.realtime_client import events_until, sdk

CONTEXT = 1024  # tokens: small, so the conversation outgrows it within a few turns
TURNS = 200


async def _turn(conn, text: str):
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )
    await conn.response.create()
    return (await events_until(conn, lambda e: e.type == "response.done"))[-1].response


@pytest.mark.slow
@pytest.mark.vocalis_settings(llm_context=CONTEXT)
async def test_a_200_turn_conversation_always_fits_the_context_window(conversation):
    llm = conversation.llm
    async with sdk(conversation.ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "instructions": "Answer briefly."}
        )
        for n in range(TURNS):
            llm.reply(f"Answer {n}: " + "that is fine " * 6, chunk_chars=40)
            response = await _turn(conn, f"Question {n}: " + "tell me a little more " * 6)
            assert response.status == "completed", response.status_details

        # With truncation disabled, a conversation this long is not sent at all: the response fails, clearly.
        await conn.session.update(session={"type": "realtime", "truncation": "disabled"})
        failed = await _turn(conn, "One more question.")
    assert failed.status == "failed"
    assert failed.status_details.error.code == "context_length_exceeded"
    assert "disabled" in failed.status_details.error.message

    assert len(llm.requests) == TURNS, "the refused request never reached the LLM"
    limit = budget(CONTEXT, None)
    for n, request in enumerate(llm.requests):
        messages = request["messages"]
        assert tokens(messages) <= limit
        # Real tokenizers make about one token of four characters of English: far inside the window too.
        assert sum(len(str(m.get("content") or "")) for m in messages) / 4 <= limit
        assert messages[0] == {"role": "system", "content": "Answer briefly."}, "the instructions stay"
        assert messages[-1]["content"].startswith(f"Question {n}:"), "the latest user turn stays"
    assert "Question 0:" in str(llm.requests[5]["messages"])
    assert "Question 0:" not in str(llm.requests[-1]["messages"]), "the oldest turns were left out"
    assert len(llm.requests[-1]["messages"]) > 4, "but only as many as needed"
