"""`session.truncation` without models: which messages a request keeps when the conversation outgrows the window."""

from domain import context_window
from domain.context_window import fit, tokens

SYSTEM = {"role": "system", "content": "Be brief."}


def turn(n: int, words: int = 40) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"question {n} " + "word " * words},
        {"role": "assistant", "content": f"answer {n} " + "word " * words},
    ]


def conversation(turns: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = [SYSTEM]
    for n in range(turns):
        messages += turn(n)
    messages.append({"role": "user", "content": "latest question"})
    return messages


def test_a_conversation_that_fits_is_sent_whole() -> None:
    messages = conversation(2)
    assert fit(messages, (), limit=10_000, retention_ratio=None) == tuple(messages)


def test_the_oldest_messages_go_first_never_the_instructions_nor_the_latest_turn() -> None:
    messages = conversation(50)
    limit = tokens(messages) // 3
    kept = fit(messages, (), limit, retention_ratio=None)
    assert kept is not None and tokens(kept) <= limit
    assert kept[0] == SYSTEM and kept[-1] == messages[-1]
    assert kept[1:] == tuple(messages[len(messages) - len(kept) + 1 :]), "a contiguous, most recent stretch"
    assert tokens((SYSTEM, *messages[len(messages) - len(kept) :])) > limit, "no more dropped than needed"


def test_a_retention_ratio_cuts_deeper_so_later_turns_fit_without_cutting_again() -> None:
    messages = conversation(50)
    limit = tokens(messages) // 2
    auto = fit(messages, (), limit, retention_ratio=None)
    half = fit(messages, (), limit, retention_ratio=0.5)
    assert auto is not None and half is not None
    assert tokens(half) <= limit // 2 < tokens(auto) <= limit


def test_a_tool_result_never_starts_the_kept_conversation() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {}}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "sunny " * 30}
    messages = [SYSTEM, *turn(0), call, result, *turn(1), {"role": "user", "content": "and now?"}]
    for limit in range(tokens(messages[-1:]) + 10, tokens(messages)):
        kept = fit(messages, (), limit, retention_ratio=None)
        if kept is not None:
            assert kept[1]["role"] != "tool"


def test_nothing_fits_when_the_instructions_and_the_latest_turn_are_too_long() -> None:
    messages = [{"role": "system", "content": "rule " * 500}, {"role": "user", "content": "hi"}]
    assert fit(messages, (), limit=100, retention_ratio=None) is None


def test_the_answer_keeps_its_room() -> None:
    assert context_window.budget(4096, None) == 4096 - context_window.DEFAULT_OUTPUT_RESERVE
    assert context_window.budget(4096, 100) == 3996
    assert context_window.budget(1000, 4096) == 500


def test_a_ratio_that_cannot_be_met_still_keeps_what_fits() -> None:
    recent = turn(1, words=5)
    messages = [SYSTEM, *turn(0, words=300), *recent, {"role": "user", "content": "latest"}]
    limit = tokens([SYSTEM, *recent, messages[-1]]) + 2  # the recent turn fits; a tenth of the budget does not
    assert fit(messages, (), limit, retention_ratio=0.1) == (SYSTEM, *recent, messages[-1])
