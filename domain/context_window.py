"""Fitting a conversation into the LLM's context window, as `session.truncation` asks.

Decided here, from token estimates of the request itself, so that replay reproduces every request exactly. The
estimate errs high (a token per three bytes of text, plus a few per message), because a request that does not fit
fails at the endpoint while one that leaves a little room unused costs nothing.

- `"auto"`: when the messages do not fit, the oldest conversation messages are left out until they do; never the
  instructions (leading system messages) nor the latest user turn (from the last user message on).
- `{"type": "retention_ratio", "retention_ratio": r}`: as auto, but a truncation keeps at most r of the budget, so
  that the next turns fit without truncating again (and a prompt cache survives longer).
- `"disabled"`: a conversation that does not fit is not sent: the response fails with a clear reason.
"""

import json
from collections.abc import Sequence
from typing import Any

BYTES_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 4  # role and separators in a chat template
# What a response may write, at most, when it sets no limit: kept free of the prompt.
DEFAULT_OUTPUT_RESERVE = 512

Message = dict[str, Any]


def tokens(messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> int:
    """An upper estimate of the prompt tokens of `messages` and `tools`."""
    text = sum(len(json.dumps(m.get("content") or "")) + len(json.dumps(m.get("tool_calls") or "")) for m in messages)
    schema = len(json.dumps(list(tools))) if tools else 0
    return (text + schema) // BYTES_PER_TOKEN + TOKENS_PER_MESSAGE * len(messages) + 1


def budget(context: int, max_output_tokens: int | None) -> int:
    """The prompt tokens a context window leaves once the answer has its room."""
    reserve = min(max_output_tokens or DEFAULT_OUTPUT_RESERVE, context // 2)
    return context - reserve


def fit(
    messages: Sequence[Message], tools: Sequence[dict[str, Any]], limit: int, retention_ratio: float | None
) -> tuple[Message, ...] | None:
    """The messages to send within `limit` tokens, oldest conversation first to go; None when even the
    instructions and the latest user turn do not fit."""
    if tokens(messages, tools) <= limit:
        return tuple(messages)
    head = _instructions_end(messages)
    tail = _latest_turn_start(messages, head)
    target = limit if retention_ratio is None else max(1, int(limit * retention_ratio))
    for goal in (target, limit):  # the ratio when it can be met, else as much as fits
        for start in _group_starts(messages, head, tail):
            kept = (*messages[:head], *messages[start:])
            if tokens(kept, tools) <= goal:
                return kept
    return None


def _instructions_end(messages: Sequence[Message]) -> int:
    end = 0
    while end < len(messages) and messages[end]["role"] == "system":
        end += 1
    return end


def _latest_turn_start(messages: Sequence[Message], head: int) -> int:
    for index in range(len(messages) - 1, head - 1, -1):
        if messages[index]["role"] == "user":
            return index
    return len(messages)


def _group_starts(messages: Sequence[Message], head: int, tail: int) -> list[int]:
    """Where the kept conversation may begin, oldest first: never on a tool result, which needs its call."""
    return [i for i in range(head + 1, tail + 1) if i == tail or messages[i]["role"] != "tool"]
