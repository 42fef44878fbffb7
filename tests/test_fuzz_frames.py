"""Mutated client events on one session: every frame gets its answer or one `error`, and the session lives on.

Each mutated frame is followed by a probe with an unknown type, whose `error` (with the probe's event_id) marks the
end of what the server said about the frame. The server runs in this process, so its memory is ours.
"""

import base64
import json
import random
from pathlib import Path
from typing import Any

from tests.realtime_client import RawClient, raw_connect

FRAMES = 300
SEED = 20261201
# Generous: the frames hold about 40 MB in all, and a session that copies them into its state or its jobs grows by
# many times that (the 0.9 GB this test was written for).
RSS_GROWTH_BOUND = 300 << 20

VALID = "valid"  # the event's own answer, and no error
INVALID = "invalid"  # exactly one error
EITHER = "either"  # a mutation that may or may not leave the event valid

TRANSCRIPTION = {
    "model": "whisper-tiny.en",
    "language": "en",
    "prompt": "hello world",
}


def base_events(rng: random.Random, n: int) -> dict[str, Any]:
    """A valid client event of a transcription session without turn detection, and its event_id `f<n>`."""
    kind = rng.choice(["session.update", "append", "clear"])
    if kind == "session.update":
        session: dict[str, Any] = {
            "type": "transcription",
            "audio": {"input": {"turn_detection": None, "transcription": dict(TRANSCRIPTION)}},
        }
        if rng.random() < 0.5:
            session["audio"]["input"]["noise_reduction"] = {"type": "near_field"}
        return {"type": "session.update", "event_id": f"f{n}", "session": session}
    if kind == "append":
        audio = base64.b64encode(bytes(rng.randrange(2, 4800, 2))).decode()
        return {"type": "input_audio_buffer.append", "event_id": f"f{n}", "audio": audio}
    return {"type": "input_audio_buffer.clear", "event_id": f"f{n}"}


ANSWERS = {
    "session.update": {"session.updated"},
    "input_audio_buffer.append": set(),
    "input_audio_buffer.clear": {"input_audio_buffer.cleared"},
}


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    return [path]


def _set(event: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


Expected = tuple[str | bytes, str, set[str] | None, set[str | None] | None]


def mutate(rng: random.Random, event: dict[str, Any]) -> Expected:
    """A mutated frame of `event`, what it should get, and the error codes and event_ids its error may carry (None:
    any)."""
    text, own = json.dumps(event), {event["event_id"]}
    paths = [p for p in _leaf_paths(event) if p not in (("type",), ("event_id",))]
    mutation = rng.choice(
        ["none", "binary", "truncate", "flip", "wrong-type", "huge", "deep", "utf8", "unknown-type", "null"]
    )
    if mutation == "none":
        return text, VALID, None, None
    if mutation == "binary":
        return text.encode(), VALID, None, None
    if mutation == "truncate":  # the event_id, if it made it whole
        return text[: rng.randrange(1, len(text) - 1)], INVALID, {"invalid_json"}, own | {None}
    if mutation == "flip":
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw), EITHER, None, None
    if mutation == "wrong-type" and paths:
        _set(event, rng.choice(paths), rng.choice([12, 1.5, True, [1, 2], {"x": 1}]))
        return json.dumps(event), EITHER, None, own
    if mutation == "huge":
        size = rng.choice([5_000, 300_000, 3_000_000, 9_000_000])
        if event["type"] == "session.update":
            event["session"]["audio"]["input"]["transcription"]["prompt"] = "word " * (size // 5)
            return json.dumps(event), INVALID, {"string_above_max_length", "invalid_value"}, own
        if event["type"] == "input_audio_buffer.append":
            event["audio"] = "@" * size
            return json.dumps(event), INVALID, {"invalid_value"}, own
        event["event_id"] = "e" * size
        if size > 8_000_000:  # over the bus's limit, and too long to repeat
            return json.dumps(event), INVALID, {"invalid_value"}, {None}
        return json.dumps(event), VALID, None, None
    if mutation == "deep":
        depth = rng.choice([65, 100, 1_000, 100_000])
        return text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}", INVALID, {"invalid_json"}, own
    if mutation == "utf8":
        raw = text.encode()
        at = raw.index(b'"type"') + 1  # inside a string
        bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"])
        return raw[:at] + bad + raw[at:], INVALID, {"invalid_json"}, own
    if mutation == "unknown-type":
        event["type"] = rng.choice(["no.such.event", "", "session.updat", "x" * 100_000])
        return json.dumps(event), INVALID, {"invalid_value"}, own
    if paths:  # null
        _set(event, rng.choice(paths), None)
    return json.dumps(event), EITHER, None, own


async def _answers_until_probe(client: RawClient, n: int) -> list[dict[str, Any]]:
    await client.send({"type": "fuzz.probe", "event_id": f"probe{n}"})
    answers = []
    while True:
        event = await client.next(timeout=30)
        if event["type"] == "error" and event["error"]["event_id"] == f"probe{n}":
            return answers
        answers.append(event)


def _rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


async def test_mutated_frames_get_answers_or_errors_and_the_session_lives_on(stack):
    rng = random.Random(SEED)
    async with raw_connect(stack.ws_url) as client:
        assert (await client.next())["type"] == "session.created"
        await client.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {}}}})
        await client.next_of("session.updated")
        before = _rss()
        outcomes: dict[str, int] = {}
        for n in range(FRAMES):
            event = base_events(rng, n)
            kind = event["type"]
            frame, expected, codes, event_ids = mutate(rng, event)
            await client.send(frame)
            answers = await _answers_until_probe(client, n)
            errors = [a["error"] for a in answers if a["type"] == "error"]
            others = {a["type"] for a in answers if a["type"] != "error"}
            what = f"frame {n} ({expected}, {frame[:120]!r}): {answers}"
            assert len(errors) <= 1 and others <= ANSWERS[kind], what
            if expected == VALID or (expected == EITHER and not errors):
                assert not errors and others == ANSWERS[kind], what
            else:
                assert len(errors) == 1 and not others, what
                assert errors[0]["type"] == "invalid_request_error", what
                assert codes is None or errors[0]["code"] in codes, what
                assert event_ids is None or errors[0]["event_id"] in event_ids, what
            outcomes["error" if errors else "answer"] = outcomes.get("error" if errors else "answer", 0) + 1
        grown = _rss() - before
        await client.send({"type": "session.update", "event_id": "last", "session": {"type": "transcription"}})
        assert (await client.next_of("session.updated"))["type"] == "session.updated"
    assert outcomes["error"] > FRAMES // 3 and outcomes["answer"] > FRAMES // 5, outcomes
    assert grown < RSS_GROWTH_BOUND, f"the server grew by {grown >> 20} MiB"
