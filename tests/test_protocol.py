"""The dialect codecs: client frames to canonical events (GA and beta), canonical server events to frames."""

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from domain import events as ev
from domain import records as rec
from domain.protocol.codec import KNOWN, SERVED, AudioAppend, ItemWithAudio, decode, render, render_dict
from domain.protocol.errors import Rejection
from domain.session import open_session, step
from domain.session_config import (
    NoiseReduction,
    SessionConfig,
    SessionUpdate,
    Transcription,
    TranscriptionUpdate,
    TurnDetection,
    TurnDetectionUpdate,
)

TD_GA = "session.audio.input.turn_detection"


def frame(**body: Any) -> str:
    return json.dumps(body)


def ga_update(session: dict[str, Any], event_id: str | None = "evt_1") -> str:
    body: dict[str, Any] = {"type": "session.update", "session": session}
    if event_id is not None:
        body["event_id"] = event_id
    return json.dumps(body)


def decoded_update(raw: str, dialect: str) -> SessionUpdate:
    result = decode(raw, dialect)  # type: ignore[arg-type]
    assert isinstance(result, ev.SessionUpdateRequested), result
    return result.update


# --- decoding: GA -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_append_decodes_base64_audio(dialect: str) -> None:
    pcm = bytes(range(256)) * 4
    result = decode(
        frame(type="input_audio_buffer.append", audio=base64.b64encode(pcm).decode(), event_id="a1"), dialect
    )  # type: ignore[arg-type]
    assert result == AudioAppend(audio=pcm, event_id="a1")


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_commit_and_clear_decode_with_their_event_ids(dialect: str) -> None:
    assert decode(frame(type="input_audio_buffer.commit", event_id="c1"), dialect) == ev.AudioCommitRequested("c1")  # type: ignore[arg-type]
    assert decode(frame(type="input_audio_buffer.clear"), dialect) == ev.AudioClearRequested(None)  # type: ignore[arg-type]
    assert decode(b'{"type":"input_audio_buffer.clear","event_id":"x"}', dialect) == ev.AudioClearRequested("x")  # type: ignore[arg-type]


def test_ga_realtime_session_update_maps_every_nested_field() -> None:
    raw = ga_update(
        {
            "type": "realtime",
            "instructions": "be brief",
            "output_modalities": ["text"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "whisper-1", "language": "en", "prompt": "names"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700},
                    "noise_reduction": {"type": "far_field"},
                },
                "output": {"format": {"type": "audio/pcma"}, "voice": {"id": "marin"}, "speed": 1.25},
            },
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "tool_choice": "required",
            "max_output_tokens": 200,
            "include": ["item.input_audio_transcription.logprobs"],
            "tracing": "auto",
            "truncation": "auto",
            "prompt": None,
        },
        event_id="upd",
    )
    result = decode(raw, "ga")
    assert isinstance(result, ev.SessionUpdateRequested)
    assert result.event_id == "upd"
    assert result.update == SessionUpdate(
        type="realtime",
        input_format="g711_ulaw",
        transcription=TranscriptionUpdate(model="whisper-1", language="en", prompt="names"),
        turn_detection=TurnDetectionUpdate(type="server_vad", threshold=0.6, silence_duration_ms=700),
        noise_reduction=NoiseReduction(type="far_field"),
        include=("item.input_audio_transcription.logprobs",),
        instructions="be brief",
        output_modalities=("text",),
        voice="marin",
        output_format="g711_alaw",
        speed=1.25,
        tools=({"type": "function", "name": "f", "parameters": {}},),
        tool_choice="required",
        max_output_tokens=200,
        truncation="auto",
        tracing="auto",
    )


def test_ga_pcm_format_and_plain_voice() -> None:
    update = decoded_update(
        ga_update(
            {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}, "output": {"voice": "cedar"}},
            }
        ),
        "ga",
    )
    assert update.input_format == "pcm16"
    assert update.voice == "cedar"
    assert update.output_format is UNSET


def test_ga_update_leaves_omitted_fields_unset_and_null_clears() -> None:
    update = decoded_update(
        ga_update({"type": "realtime", "audio": {"input": {"turn_detection": None, "transcription": None}}}), "ga"
    )
    assert update.turn_detection is None
    assert update.transcription is None
    for name in ("input_format", "noise_reduction", "instructions", "voice", "speed", "tools", "include"):
        assert getattr(update, name) is UNSET, name


def test_ga_transcription_session_update() -> None:
    update = decoded_update(
        ga_update(
            {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcma"},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "de"},
                        "turn_detection": {"type": "semantic_vad", "eagerness": "low"},
                    }
                },
            }
        ),
        "ga",
    )
    assert update.type == "transcription"
    assert update.input_format == "g711_alaw"
    assert update.transcription == TranscriptionUpdate(model="gpt-4o-transcribe", language="de")
    assert update.turn_detection == TurnDetectionUpdate(type="semantic_vad", eagerness="low")
    assert update.voice is UNSET and update.instructions is UNSET and update.output_modalities is UNSET


# --- decoding: beta ---------------------------------------------------------------------------------------------


def test_beta_flat_session_update_maps_to_the_canonical_update() -> None:
    raw = frame(
        type="session.update",
        event_id="b1",
        session={
            "modalities": ["text", "audio"],
            "instructions": "hi",
            "voice": "ash",
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_alaw",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "prefix_padding_ms": 200},
            "input_audio_noise_reduction": {"type": "near_field"},
            "tools": [],
            "tool_choice": "none",
            "temperature": 0.7,
            "max_response_output_tokens": "inf",
            "speed": 0.9,
        },
    )
    result = decode(raw, "beta")
    assert isinstance(result, ev.SessionUpdateRequested)
    assert result.event_id == "b1"
    assert result.update == SessionUpdate(
        input_format="g711_ulaw",
        transcription=TranscriptionUpdate(model="whisper-1"),
        turn_detection=TurnDetectionUpdate(type="server_vad", prefix_padding_ms=200),
        noise_reduction=NoiseReduction(type="near_field"),
        instructions="hi",
        output_modalities=("audio",),  # beta ["text","audio"] is GA ["audio"]
        voice="ash",
        output_format="g711_alaw",
        tools=(),
        tool_choice="none",
        max_output_tokens="inf",
        temperature=0.7,
        speed=0.9,
    )
    assert result.update.type is UNSET  # beta sessions carry no type


def test_beta_text_only_modalities() -> None:
    assert decoded_update(frame(type="session.update", session={"modalities": ["text"]}), "beta").output_modalities == (
        "text",
    )


def test_beta_transcription_session_update() -> None:
    update = decoded_update(
        frame(
            type="transcription_session.update",
            session={
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": None,
                "include": [],
                "modalities": ["text"],
            },
        ),
        "beta",
    )
    assert update.input_format == "pcm16"
    assert update.transcription == TranscriptionUpdate(model="gpt-4o-mini-transcribe", language="en")
    assert update.turn_detection is None
    assert update.include == ()
    assert update.output_modalities is UNSET and update.voice is UNSET and update.type is UNSET


def test_transcription_session_update_is_unknown_in_ga() -> None:
    result = decode(frame(type="transcription_session.update", event_id="t1", session={}), "ga")
    assert isinstance(result, Rejection)
    assert (result.code, result.param, result.event_id) == ("invalid_value", "type", "t1")


# --- rejections -------------------------------------------------------------------------------------------------

REJECTIONS: list[tuple[str, str | bytes, str, str | None, str | None]] = [
    # (dialect, frame, code, param, event_id)
    ("ga", "{bad", "invalid_json", None, None),
    ("ga", "", "invalid_json", None, None),
    ("beta", b"\xff\xfe{}", "invalid_json", None, None),
    ("ga", "[1, 2]", "invalid_type", None, None),
    ("ga", '"session.update"', "invalid_type", None, None),
    ("beta", "42", "invalid_type", None, None),
    ("ga", "null", "invalid_type", None, None),
    ("ga", '{"event_id": "e0"}', "missing_required_parameter", "type", "e0"),
    ("ga", '{"type": 5, "event_id": "e0"}', "invalid_type", "type", "e0"),
    ("ga", '{"type": "foo.bar", "event_id": "e1"}', "invalid_value", "type", "e1"),
    ("beta", '{"type": "foo.bar", "event_id": "e1"}', "invalid_value", "type", "e1"),
    (
        "ga",
        '{"type": "session.update", "event_id": "e2", "session": {}}',
        "missing_required_parameter",
        "session.type",
        "e2",
    ),
    ("ga", '{"type": "session.update", "event_id": "e2"}', "missing_required_parameter", "session", "e2"),
    (
        "ga",
        '{"type": "session.update", "event_id": "e3", "session": {"type": "realtime", "input_audio_format": "pcm16"}}',
        "unknown_parameter",
        "session.input_audio_format",
        "e3",
    ),
    (
        "ga",
        '{"type": "session.update", "event_id": "e3", "session": {"type": "realtime", "temperature": 0.8}}',
        "unknown_parameter",
        "session.temperature",  # removed in GA
        "e3",
    ),
    (
        "beta",
        '{"type": "session.update", "event_id": "e3", "session": {"type": "realtime"}}',
        "unknown_parameter",
        "session.type",
        "e3",
    ),
    ("ga", '{"type": "input_audio_buffer.commit", "event_id": "e3", "foo": 1}', "unknown_parameter", "foo", "e3"),
    (
        "ga",
        '{"type": "session.update", "event_id": "e4", "session": {"type": "realtime", "audio": {"input": '
        '{"turn_detection": {"type": "server_vad", "threshold": "high"}}}}}',
        "invalid_type",
        f"{TD_GA}.threshold",
        "e4",
    ),
    (
        "beta",
        '{"type": "session.update", "event_id": "e4", "session": {"turn_detection": {"type": "server_vad", '
        '"silence_duration_ms": "long"}}}',
        "invalid_type",
        "session.turn_detection.silence_duration_ms",
        "e4",
    ),
    ("ga", '{"type": "session.update", "event_id": "e4", "session": "x"}', "invalid_type", "session", "e4"),
    (
        "ga",
        '{"type": "session.update", "event_id": "e4", "session": {"type": "realtime", "output_modalities": "audio"}}',
        "invalid_type",
        "session.output_modalities",
        "e4",
    ),
    ("ga", '{"type": "input_audio_buffer.append", "event_id": "e5", "audio": 5}', "invalid_type", "audio", "e5"),
    (
        "ga",
        '{"type": "session.update", "event_id": "e6", "session": {"type": "realtime", "audio": {"input": '
        '{"turn_detection": {"type": "bogus_vad"}}}}}',
        "invalid_value",
        f"{TD_GA}.type",
        "e6",
    ),
    (
        "ga",
        '{"type": "session.update", "event_id": "e6", "session": {"type": "realtime", "audio": {"input": '
        '{"format": {"type": "audio/pcm", "rate": 16000}}}}}',
        "invalid_value",
        "session.audio.input.format.rate",
        "e6",
    ),
    (
        "ga",
        '{"type": "session.update", "event_id": "e6", "session": {"type": "bogus"}}',
        "invalid_value",
        "session.type",
        "e6",
    ),
    (
        "beta",
        '{"type": "session.update", "event_id": "e6", "session": {"input_audio_format": "mp3"}}',
        "invalid_value",
        "session.input_audio_format",
        "e6",
    ),
    (
        "ga",
        '{"type": "session.update", "event_id": "e6", "session": {"type": "realtime", "audio": {"input": '
        '{"turn_detection": {"threshold": 0.3}}}}}',
        "missing_required_parameter",
        f"{TD_GA}.type",
        "e6",
    ),
    (
        "ga",
        '{"type": "input_audio_buffer.append", "event_id": "e7", "audio": "!!!not base64"}',
        "invalid_value",
        "audio",
        "e7",
    ),
    ("beta", '{"type": "input_audio_buffer.append", "event_id": "e7", "audio": "AAA"}', "invalid_value", "audio", "e7"),
    ("ga", '{"type": "input_audio_buffer.append", "event_id": "e8"}', "missing_required_parameter", "audio", "e8"),
    ("ga", '{"type": "input_audio_buffer.commit", "event_id": 7}', "invalid_type", "event_id", None),
]


@pytest.mark.parametrize(("dialect", "raw", "code", "param", "event_id"), REJECTIONS)
def test_rejections(dialect: str, raw: str | bytes, code: str, param: str | None, event_id: str | None) -> None:
    result = decode(raw, dialect)  # type: ignore[arg-type]
    assert isinstance(result, Rejection), result
    assert (result.code, result.param, result.event_id) == (code, param, event_id)
    assert result.message
    if param not in (None, "type"):
        assert f"'{param}'" in result.message


def test_spec_messages_for_unknown_and_missing_parameters() -> None:
    unknown = decode(ga_update({"type": "realtime", "input_audio_format": "pcm16"}), "ga")
    assert isinstance(unknown, Rejection)
    assert unknown.message == "Unknown parameter: 'session.input_audio_format'."
    missing = decode(ga_update({}), "ga")
    assert isinstance(missing, Rejection)
    assert missing.message == "Missing required parameter: 'session.type'."


def test_unknown_type_lists_the_supported_events() -> None:
    result = decode(frame(type="response.teleport", event_id="z"), "ga")
    assert isinstance(result, Rejection)
    assert "'response.teleport'" in result.message
    for name in ("session.update", "input_audio_buffer.append", "response.create"):
        assert name in result.message
    assert "transcription_session.update" not in result.message  # not a GA event


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize("kind", sorted(KNOWN))
def test_known_but_unserved_events_decode_to_unserved_request(dialect: str, kind: str) -> None:
    result = decode(frame(type=kind, event_id="u1", response={"instructions": "x"}, item={}), dialect)  # type: ignore[arg-type]
    assert result == ev.UnservedRequest(event_type=kind, event_id="u1")


def test_every_client_event_of_the_spec_is_served_or_known() -> None:
    spec = {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "response.create",
        "response.cancel",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "output_audio_buffer.clear",
    }
    for dialect in ("ga", "beta"):
        assert spec <= SERVED[dialect] | KNOWN
    assert "transcription_session.update" in SERVED["beta"]
    assert {"output_audio_buffer.clear"} == KNOWN, "WebRTC only: refused over WebSocket"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(
    [
        "session.update",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "response.create",
        "nope",
    ]
)
objects = st.fixed_dictionaries(
    {"type": event_types},
    optional={"event_id": st.one_of(st.text(max_size=6), st.integers()), "session": json_values, "audio": json_values},
)
decoded_types = (
    AudioAppend,
    ev.SessionUpdateRequested,
    ev.AudioCommitRequested,
    ev.AudioClearRequested,
    ev.ResponseCreateRequested,
    ev.ResponseCancelRequested,
    ev.ItemCreateRequested,
    ev.ItemRetrieveRequested,
    ev.ItemTruncateRequested,
    ev.ItemDeleteRequested,
    ItemWithAudio,
    ev.UnservedRequest,
    Rejection,
)


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(json_values, objects), dialect=st.sampled_from(["ga", "beta"]))
def test_decoding_any_json_value_never_raises_and_echoes_event_ids(value: Any, dialect: str) -> None:
    result = decode(json.dumps(value), dialect)  # type: ignore[arg-type]
    assert isinstance(result, decoded_types)
    if isinstance(result, Rejection) and isinstance(value, dict) and isinstance(value.get("event_id"), str):
        assert result.event_id == value["event_id"]
    if isinstance(result, Rejection):
        assert result.code != "invalid_json"  # the text was valid JSON


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), dialect=st.sampled_from(["ga", "beta"]))
def test_decoding_arbitrary_bytes_never_raises(data: bytes, dialect: str) -> None:
    result = decode(data, dialect)  # type: ignore[arg-type]
    assert isinstance(result, decoded_types)
    try:
        json.loads(data)
    except ValueError:
        assert isinstance(result, Rejection)  # not JSON at all: only a rejection makes sense


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "foo.bar",',  # truncated after an unknown type
        '{"type": "foo.bar"} trailing',  # garbage after an unknown type
        '{"type": "input_audio_buffer.commit", "foo": 1,',  # truncated after an unknown field
        '{"type": "input_audio_buffer.append", "audio": "!!"',  # truncated after bad base64
        '{"type": "session.update", "session": {"type": "realtime", "x": 1}',  # truncated after unknown field
    ],
)
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_malformed_json_is_always_invalid_json(raw: str, dialect: str) -> None:
    result = decode(raw, dialect)  # type: ignore[arg-type]
    assert isinstance(result, Rejection)
    assert result.code == "invalid_json"


def test_truncated_array_is_invalid_json() -> None:
    result = decode("[1,", "ga")
    assert isinstance(result, Rejection)
    assert result.code == "invalid_json"


def test_ga_noise_reduction_strength_is_accepted() -> None:
    result = decode(
        ga_update(
            {"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "near_field", "strength": 0.5}}}}
        ),
        "ga",
    )
    assert isinstance(result, ev.SessionUpdateRequested)


# --- rendering ----------------------------------------------------------------------------------------------------

SID = "sess_render"


def created(session_type: str, dialect: str = "ga", **fields: Any) -> ev.SessionCreated:
    record = rec.SessionOpened(
        at_ms=1_700_000_000_000,
        session_id=SID,
        session_type=session_type,  # type: ignore[arg-type]
        dialect=dialect,  # type: ignore[arg-type]
        default_stt_model="whisper-base",
        max_duration_s=3600,
        **fields,
    )
    (event,) = open_session(record).events
    assert isinstance(event, ev.SessionCreated)
    return event


def parsed(event: ev.AnyServerEvent, dialect: str) -> dict[str, Any]:
    raw = render(event, dialect)  # type: ignore[arg-type]
    assert isinstance(raw, bytes)
    body = json.loads(raw)
    assert body == json.loads(json.dumps(render_dict(event, dialect)))  # type: ignore[arg-type]
    assert isinstance(body["type"], str) and body["event_id"] == event.event_id
    return body  # type: ignore[no-any-return]


def test_ga_transcription_session_created() -> None:
    body = parsed(created("transcription"), "ga")
    assert body["type"] == "session.created"
    session = body["session"]
    assert session["type"] == "transcription"
    assert session["object"] == "realtime.transcription_session"
    assert session["id"] == SID
    assert session["expires_at"] == 1_700_000_000 + 3600
    audio_input = session["audio"]["input"]
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_input["transcription"]["model"] == "whisper-base"
    td = audio_input["turn_detection"]
    assert td["type"] == "server_vad"
    assert (td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]) == (0.5, 300, 500)
    assert "eagerness" not in td
    assert audio_input["noise_reduction"] is None
    # Spec 4.2: no output, voice, tools or instructions in a transcription session.
    assert "output" not in session["audio"]
    for name in ("voice", "tools", "instructions", "output_modalities", "model", "temperature"):
        assert name not in session


def test_ga_realtime_session_created_defaults() -> None:
    body = parsed(created("realtime", model="gpt-realtime"), "ga")
    session = body["session"]
    assert session["type"] == "realtime"
    assert session["object"] == "realtime.session"
    assert session["model"] == "gpt-realtime"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["transcription"] is None
    assert session["audio"]["input"]["turn_detection"]["threshold"] == 0.5
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "jm_kumo",
        "speed": 1.0,
    }
    assert session["tools"] == [] and session["tool_choice"] == "auto"
    assert session["max_output_tokens"] == "inf"
    assert "temperature" not in session  # removed in GA
    assert "modalities" not in session and "input_audio_format" not in session


def test_ga_semantic_vad_and_formats_render() -> None:
    config = SessionConfig(
        type="realtime",
        input_format="g711_ulaw",
        output_format="g711_alaw",
        turn_detection=TurnDetection(type="semantic_vad", eagerness="high"),
        noise_reduction=NoiseReduction(type="near_field"),
    )
    event = ev.SessionUpdated(event_id="event_x", session_id=SID, expires_at=1, session=config)
    session = parsed(event, "ga")["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcma"}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    td = session["audio"]["input"]["turn_detection"]
    assert td["type"] == "semantic_vad" and td["eagerness"] == "high"
    assert "threshold" not in td and "silence_duration_ms" not in td


def test_ga_turn_detection_null_renders_null() -> None:
    config = SessionConfig(type="transcription", turn_detection=None, transcription=Transcription(model="m"))
    event = ev.SessionUpdated(event_id="event_x", session_id=SID, expires_at=1, session=config)
    assert parsed(event, "ga")["session"]["audio"]["input"]["turn_detection"] is None


def test_beta_realtime_session_is_flat() -> None:
    body = parsed(created("realtime", model="gpt-realtime"), "beta")
    assert body["type"] == "session.created"
    session = body["session"]
    assert session["object"] == "realtime.session"
    assert session["modalities"] == ["text", "audio"]
    assert session["input_audio_format"] == "pcm16" and session["output_audio_format"] == "pcm16"
    assert session["turn_detection"]["type"] == "server_vad"
    assert session["input_audio_transcription"] is None
    assert session["temperature"] == 0.8
    assert session["max_response_output_tokens"] == "inf"
    assert session["voice"] == "jm_kumo"
    assert "audio" not in session and "type" not in session and "output_modalities" not in session


def test_beta_realtime_session_updated_keeps_its_name() -> None:
    config = SessionConfig(type="realtime", output_modalities=("text",), input_format="g711_alaw")
    event = ev.SessionUpdated(event_id="event_x", session_id=SID, expires_at=1, session=config)
    body = parsed(event, "beta")
    assert body["type"] == "session.updated"
    assert body["session"]["modalities"] == ["text"]
    assert body["session"]["input_audio_format"] == "g711_alaw"


def test_beta_transcription_session_updated() -> None:
    config = SessionConfig(
        type="transcription",
        transcription=Transcription(model="whisper-base", language="en"),
        turn_detection=TurnDetection(threshold=0.6),
    )
    event = ev.SessionUpdated(event_id="event_x", session_id=SID, expires_at=1234, session=config)
    body = parsed(event, "beta")
    assert body["type"] == "transcription_session.updated"
    session = body["session"]
    assert session["object"] == "realtime.transcription_session"
    assert session["input_audio_format"] == "pcm16"
    # Only OpenAI's fields: strict clients (pipecat) refuse the Vocalis extension unless they set it themselves.
    assert session["input_audio_transcription"] == {"model": "whisper-base", "language": "en", "prompt": None}
    assert session["turn_detection"]["threshold"] == 0.6
    assert session["client_secret"] == {"value": "", "expires_at": 1234}  # required by the beta SDK model
    assert "audio" not in session and "type" not in session
    # The same event in GA is a plain session.updated with a nested session.
    ga = parsed(event, "ga")
    assert ga["type"] == "session.updated"
    assert ga["session"]["type"] == "transcription"


def test_beta_transcription_session_created_is_session_created() -> None:
    body = parsed(created("transcription", dialect="beta"), "beta")
    assert body["type"] == "session.created"
    assert body["session"]["object"] == "realtime.transcription_session"


ITEM = ev.MessageItem(id="item_1", role="user", content=(ev.ContentPart(type="input_audio", transcript=None),))


def test_item_added_and_done_per_dialect() -> None:
    added = ev.ItemAdded(event_id="event_a", previous_item_id="item_0", item=ITEM)
    done = ev.ItemDone(event_id="event_d", previous_item_id="item_0", item=ITEM)
    ga_added = parsed(added, "ga")
    assert ga_added["type"] == "conversation.item.added"
    assert ga_added["previous_item_id"] == "item_0"
    assert ga_added["item"] == {
        "id": "item_1",
        "role": "user",
        "content": [{"type": "input_audio", "text": None, "transcript": None}],
        "type": "message",
        "status": "completed",
        "object": "realtime.item",
    }
    assert parsed(done, "ga")["type"] == "conversation.item.done"
    beta_added = parsed(added, "beta")
    assert beta_added["type"] == "conversation.item.created"
    assert beta_added["item"] == ga_added["item"] and beta_added["previous_item_id"] == "item_0"
    assert render(done, "beta") is None
    assert render_dict(done, "beta") is None


def error_event(param: str | None, event_id: str | None = "c1") -> ev.ErrorEvent:
    detail = ev.ErrorDetail(
        type="invalid_request_error", code="invalid_value", message="m", param=param, event_id=event_id
    )
    return ev.ErrorEvent(event_id="event_e", error=detail)


@pytest.mark.parametrize(
    ("ga_param", "beta_param"),
    [
        (f"{TD_GA}.threshold", "session.turn_detection.threshold"),
        (TD_GA, "session.turn_detection"),
        ("session.audio.input.transcription.model", "session.input_audio_transcription.model"),
        ("session.audio.input.noise_reduction", "session.input_audio_noise_reduction"),
        ("session.audio.input.format", "session.input_audio_format"),
        ("session.audio.output.format", "session.output_audio_format"),
        ("session.audio.output.voice", "session.voice"),
        ("session.audio.output.speed", "session.speed"),
        ("session.max_output_tokens", "session.max_response_output_tokens"),
        ("session.type", "session.type"),
        ("session.instructions", "session.instructions"),
        ("type", "type"),
        ("audio", "audio"),
        (None, None),
    ],
)
def test_error_params_map_to_beta_paths(ga_param: str | None, beta_param: str | None) -> None:
    event = error_event(ga_param)
    ga = parsed(event, "ga")
    assert ga["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "m",
        "param": ga_param,
        "event_id": "c1",
    }
    beta = parsed(event, "beta")
    assert beta["type"] == "error"
    assert beta["error"]["param"] == beta_param
    assert beta["error"]["event_id"] == "c1"
    assert event.error.param == ga_param  # rendering does not touch the event


def test_error_renders_null_fields_explicitly() -> None:
    body = parsed(error_event(None, None), "ga")
    assert body["error"]["param"] is None and body["error"]["event_id"] is None


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_audio_and_transcription_events_render_the_same_in_both_dialects(dialect: str) -> None:
    cases: list[tuple[ev.AnyServerEvent, dict[str, Any]]] = [
        (
            ev.SpeechStarted(event_id="e1", item_id="item_1", audio_start_ms=980),
            {"type": "input_audio_buffer.speech_started", "item_id": "item_1", "audio_start_ms": 980},
        ),
        (
            ev.SpeechStopped(event_id="e2", item_id="item_1", audio_end_ms=2432),
            {"type": "input_audio_buffer.speech_stopped", "item_id": "item_1", "audio_end_ms": 2432},
        ),
        (
            ev.AudioCommitted(event_id="e3", item_id="item_1", previous_item_id=None),
            {"type": "input_audio_buffer.committed", "item_id": "item_1", "previous_item_id": None},
        ),
        (ev.AudioCleared(event_id="e4"), {"type": "input_audio_buffer.cleared"}),
        (
            ev.TranscriptDelta(event_id="e5", item_id="item_1", delta="he"),
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_1",
                "delta": "he",
                "content_index": 0,
            },
        ),
        (
            ev.TranscriptCompleted(
                event_id="e6", item_id="item_1", transcript="hello", usage=ev.DurationUsage(seconds=1.5)
            ),
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_1",
                "transcript": "hello",
                "usage": {"type": "duration", "seconds": 1.5},
                "content_index": 0,
            },
        ),
        (
            ev.TranscriptFailed(
                event_id="e7",
                item_id="item_1",
                error=ev.TranscriptionError(type="server_error", code="transcription_failed", message="boom"),
            ),
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": "item_1",
                "error": {"type": "server_error", "code": "transcription_failed", "message": "boom", "param": None},
                "content_index": 0,
            },
        ),
    ]
    for event, expected in cases:
        body = parsed(event, dialect)
        assert body == {"event_id": event.event_id, **expected}


# --- decode -> state machine -> render --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "raw", "param"),
    [
        (
            "ga",
            ga_update(
                {
                    "type": "transcription",
                    "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2.0}}},
                },
                "u9",
            ),
            f"{TD_GA}.threshold",
        ),
        (
            "beta",
            frame(
                type="transcription_session.update",
                event_id="u9",
                session={"turn_detection": {"type": "server_vad", "threshold": 2.0}},
            ),
            "session.turn_detection.threshold",
        ),
    ],
)
def test_invalid_threshold_round_trip(dialect: str, raw: str, param: str) -> None:
    opened = rec.SessionOpened(
        at_ms=0,
        session_id=SID,
        session_type="transcription",
        dialect=dialect,
        default_stt_model="m",
        max_duration_s=60,  # type: ignore[arg-type]
    )
    state = open_session(opened).state
    event = decode(raw, dialect)  # type: ignore[arg-type]
    assert isinstance(event, ev.SessionUpdateRequested)
    transition = step(state, rec.ClientEventReceived(at_ms=0, event=event), 1)
    (error,) = transition.events
    body = parsed(error, dialect)
    assert body["type"] == "error"
    assert body["error"]["code"] == "invalid_value"
    assert body["error"]["param"] == param
    assert body["error"]["event_id"] == "u9"
    assert transition.state.config == state.config


def test_every_rendered_frame_is_json_with_type_and_unique_event_id() -> None:
    opened = rec.SessionOpened(
        at_ms=0, session_id=SID, session_type="transcription", dialect="ga", default_stt_model="m", max_duration_s=60
    )
    transition = open_session(opened)
    state, events = transition.state, list(transition.events)
    records: list[rec.Record] = [
        rec.AudioReceived(at_ms=0, ticks=3 * 512 * 8, pcm16k=bytes(2 * 512 * 8), speech_probs=(0.0,) * 4 + (0.9,) * 4),
        rec.AudioReceived(at_ms=0, ticks=3 * 512 * 20, pcm16k=bytes(2 * 512 * 20), speech_probs=(0.0,) * 20),
        rec.ClientEventReceived(at_ms=0, event=ev.AudioClearRequested()),
        rec.ClientEventRejected(at_ms=0, code="invalid_json", message="x"),
        rec.SessionExpired(at_ms=0),
    ]
    for seq, record in enumerate(records, 1):
        transition = step(state, record, seq)
        state = transition.state
        events.extend(transition.events)
    item_id = next(e.item_id for e in events if isinstance(e, ev.AudioCommitted))
    state_events = [*events, ev.TranscriptDelta(event_id="event_td", item_id=item_id, delta="x")]
    for dialect in ("ga", "beta"):
        ids = []
        for event in state_events:
            raw = render(event, dialect)  # type: ignore[arg-type]
            if raw is None:
                assert dialect == "beta" and isinstance(event, ev.ItemDone)
                continue
            body = msgspec.json.decode(raw)
            assert isinstance(body, dict) and isinstance(body["type"], str) and isinstance(body["event_id"], str)
            ids.append(body["event_id"])
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_the_incremental_extension_shows_only_when_the_client_set_it(dialect: str) -> None:
    def shown(transcription: Transcription) -> dict[str, Any]:
        config = SessionConfig(type="transcription", transcription=transcription)
        session = parsed(ev.SessionUpdated(event_id="e", session_id=SID, expires_at=1, session=config), dialect)
        audio_in = session["session"]["audio"]["input"] if dialect == "ga" else session["session"]
        field = "transcription" if dialect == "ga" else "input_audio_transcription"
        return audio_in[field]  # type: ignore[no-any-return]

    assert "incremental" not in shown(Transcription(model="whisper-base"))  # on, as by default: nothing to show
    assert shown(Transcription(model="whisper-base", incremental=False))["incremental"] is False


NULL_RESPONSE_GA = {
    "instructions": None,
    "tools": None,
    "tool_choice": None,
    "max_output_tokens": None,
    "conversation": None,
    "input": None,
    "output_modalities": None,
    "audio": None,
    "metadata": None,
}
NULL_RESPONSE_BETA = {
    "instructions": None,
    "tools": None,
    "tool_choice": None,
    "max_response_output_tokens": None,
    "conversation": None,
    "input": None,
    "modalities": None,
    "voice": None,
    "output_audio_format": None,
    "temperature": None,
    "metadata": None,
}


@pytest.mark.parametrize(("dialect", "response"), [("ga", NULL_RESPONSE_GA), ("beta", NULL_RESPONSE_BETA)])
def test_null_for_an_optional_response_field_means_not_given(dialect: str, response: dict[str, Any]) -> None:
    """LiveKit sends `"instructions": null` (and more) for every reply without extra instructions."""
    result = decode(frame(type="response.create", event_id="r1", response=response), dialect)  # type: ignore[arg-type]
    assert result == ev.ResponseCreateRequested(response=ev.ResponseParams(), event_id="r1")


def test_null_for_an_optional_session_field_means_not_given_and_null_still_turns_things_off() -> None:
    ga = ga_update(
        {
            "type": "realtime",
            "model": None,
            "instructions": None,
            "tools": None,
            "tool_choice": None,
            "max_output_tokens": None,
            "output_modalities": None,
            "audio": {"input": {"format": None, "turn_detection": None, "transcription": None}, "output": None},
            "tracing": None,
        }
    )
    assert decoded_update(ga, "ga") == SessionUpdate(
        type="realtime", turn_detection=None, transcription=None, tracing=None
    )
    beta_raw = frame(
        type="session.update",
        session={"instructions": None, "voice": None, "temperature": None, "input_audio_transcription": None},
    )
    assert decoded_update(beta_raw, "beta") == SessionUpdate(transcription=None)
    transcription = frame(
        type="transcription_session.update",
        session={"input_audio_format": None, "turn_detection": {"type": "server_vad", "threshold": None}},
    )
    assert decoded_update(transcription, "beta") == SessionUpdate(turn_detection=TurnDetectionUpdate(type="server_vad"))


def test_a_null_where_a_value_is_required_is_still_an_error() -> None:
    rejection = decode(frame(type="conversation.item.truncate", item_id=None, content_index=0, audio_end_ms=1), "ga")
    assert isinstance(rejection, Rejection) and rejection.param == "item_id"


def test_tracing_and_truncation_are_reported_as_sent() -> None:
    tracing = {"workflow_name": "support", "group_id": "g1", "metadata": {"tier": "gold"}}
    truncation = {"type": "retention_ratio", "retention_ratio": 0.5}
    update = decoded_update(ga_update({"type": "realtime", "tracing": tracing, "truncation": truncation}), "ga")
    state = open_session(
        rec.SessionOpened(
            at_ms=0, session_id=SID, session_type="realtime", dialect="ga", default_stt_model="m", max_duration_s=60
        )
    ).state
    after = step(state, rec.ClientEventReceived(at_ms=0, event=ev.SessionUpdateRequested(update=update)), 2)
    (updated,) = [e for e in after.events if isinstance(e, ev.SessionUpdated)]
    session = parsed(updated, "ga")["session"]
    assert (session["tracing"], session["truncation"]) == (tracing, truncation)
    bad = decoded_update(
        ga_update({"type": "realtime", "truncation": {"type": "retention_ratio", "retention_ratio": 2}}), "ga"
    )
    refused = step(after.state, rec.ClientEventReceived(at_ms=0, event=ev.SessionUpdateRequested(update=bad)), 3)
    (error,) = [e for e in refused.events if isinstance(e, ev.ErrorEvent)]
    assert error.error.param == "session.truncation.retention_ratio"
