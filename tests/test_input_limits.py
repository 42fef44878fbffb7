"""Limits on what a client may send, without a server: nesting, UTF-8, long texts, languages, echoed texts."""

import faster_whisper.tokenizer
import pytest

from domain import events as ev
from domain.languages import WHISPER_LANGUAGES
from domain.protocol.codec import MAX_NESTING, decode
from domain.protocol.errors import MAX_ECHO_CHARS, Rejection
from domain.session import open_session
from domain.session_config import (
    MAX_INSTRUCTIONS_CHARS,
    MAX_PROMPT_CHARS,
    InvalidUpdate,
    SessionConfig,
    SessionUpdate,
    TranscriptionUpdate,
    apply_update,
)
from tests.test_domain_session import Sim, opened

TRANSCRIPTION = SessionConfig(type="transcription")


def test_the_languages_are_whispers() -> None:
    assert frozenset(faster_whisper.tokenizer._LANGUAGE_CODES) == WHISPER_LANGUAGES


def _nested(depth: int) -> str:
    inner = '{"a": ' * (depth - 2) + "1" + "}" * (depth - 2)
    return '{"type": "session.update", "event_id": "deep", "session": {"type": "transcription", "x": ' + inner + "}}"


@pytest.mark.parametrize("frame", [_nested(MAX_NESTING + 1), '{"event_id": "deep", "x": ' + "[" * 5000])
def test_deep_json_is_refused_before_it_is_decoded(frame: str) -> None:
    refused = decode(frame, "ga")
    assert isinstance(refused, Rejection)
    assert (refused.code, refused.param, refused.event_id) == ("invalid_json", None, "deep")


def test_nesting_up_to_the_limit_is_decoded_and_brackets_in_strings_do_not_count() -> None:
    assert decode(_nested(MAX_NESTING), "ga") == Rejection(
        "unknown_parameter", "Unknown parameter: 'session.x'.", "session.x", "deep"
    )
    brackets = '{"type": "input_audio_buffer.clear", "event_id": "' + "[{" * 100 + '\\"' + "[" * 100 + '"}'
    assert isinstance(decode(brackets, "ga"), ev.AudioClearRequested)


@pytest.mark.parametrize("where", [b'"event_id": "bin", "x": "\xff"', b'"x": "\xc0\xaf", "event_id": "bin"'])
def test_a_binary_frame_that_is_not_utf8_is_invalid_json(where: bytes) -> None:
    refused = decode(b'{"type": "input_audio_buffer.clear", ' + where + b"}", "ga")
    assert isinstance(refused, Rejection)
    assert (refused.code, refused.param, refused.event_id) == ("invalid_json", None, "bin")


def test_a_text_frame_with_an_escaped_lone_surrogate_is_invalid_json() -> None:
    refused = decode('{"type": "input_audio_buffer.clear", "event_id": "s", "x": "\\ud800"}', "ga")
    assert isinstance(refused, Rejection) and refused.code == "invalid_json"


def test_a_rejection_repeats_little_of_a_frame() -> None:
    huge = "x" * 10 * MAX_ECHO_CHARS
    bounded = Rejection("invalid_value", huge, huge, huge).bounded()
    assert len(bounded.message) == len(bounded.param or "") == MAX_ECHO_CHARS
    assert bounded.event_id is None
    assert Rejection("c", "m", "p", "e").bounded() == Rejection("c", "m", "p", "e")


@pytest.mark.parametrize(
    ("update", "code", "param"),
    [
        (
            SessionUpdate(instructions="x" * (MAX_INSTRUCTIONS_CHARS + 1)),
            "string_above_max_length",
            "session.instructions",
        ),
        (
            SessionUpdate(transcription=TranscriptionUpdate(prompt="x" * (MAX_PROMPT_CHARS + 1))),
            "string_above_max_length",
            "session.audio.input.transcription.prompt",
        ),
        (
            SessionUpdate(transcription=TranscriptionUpdate(language="xx-invalid")),
            "invalid_value",
            "session.audio.input.transcription.language",
        ),
        (
            SessionUpdate(transcription=TranscriptionUpdate(language="en-US")),
            "invalid_value",
            "session.audio.input.transcription.language",
        ),
    ],
)
def test_updates_over_the_limits_are_refused(update: SessionUpdate, code: str, param: str) -> None:
    with pytest.raises(InvalidUpdate) as refused:
        apply_update(TRANSCRIPTION, update, "whisper-base")
    assert (refused.value.code, refused.value.param) == (code, param)


def test_updates_at_the_limits_are_taken() -> None:
    update = SessionUpdate(
        instructions="x" * MAX_INSTRUCTIONS_CHARS,
        transcription=TranscriptionUpdate(prompt="x" * MAX_PROMPT_CHARS, language="yue"),
    )
    config = apply_update(TRANSCRIPTION, update, "whisper-base")
    assert config.transcription is not None and config.transcription.language == "yue"


def test_an_unknown_language_in_the_url_is_an_error_and_whisper_detects_it() -> None:
    created = open_session(opened("transcription", language="xx"))
    session, error = created.events
    assert session.session.transcription.language is None  # type: ignore[attr-defined]
    assert isinstance(error, ev.ErrorEvent) and (error.error.code, error.error.param) == ("invalid_value", "language")


def test_response_instructions_over_the_limit_are_refused() -> None:
    sim = Sim("realtime", model="gpt-realtime")
    params = ev.ResponseParams(instructions="x" * (MAX_INSTRUCTIONS_CHARS + 1))
    (error,) = sim.client(ev.ResponseCreateRequested(response=params, event_id="r1")).events
    assert isinstance(error, ev.ErrorEvent)
    assert (error.error.code, error.error.param, error.error.event_id) == (
        "string_above_max_length",
        "response.instructions",
        "r1",
    )
