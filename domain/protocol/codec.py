"""Frames to canonical client events, canonical server events to frames, for either dialect."""

import re
from typing import Any, Literal, assert_never

import msgspec
from msgspec import Struct

from domain import events as ev
from domain.protocol import beta, ga
from domain.protocol.errors import Rejection, from_validation_error, malformed_json

Dialect = Literal["ga", "beta"]

_COMMON = {
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
}
SERVED = {"ga": _COMMON, "beta": _COMMON | {"transcription_session.update"}}
# Client events of the protocol that a WebSocket session refuses with an error rather than "unknown event".
KNOWN = {"output_audio_buffer.clear"}


class AudioAppend(Struct, frozen=True):
    audio: bytes
    event_id: str | None = None


class ItemWithAudio(Struct, frozen=True):
    """`conversation.item.create` with input audio: the edge records the audio, then the event."""

    event: ev.ItemCreateRequested
    audio: bytes


Decoded = AudioAppend | ItemWithAudio | ev.ClientEvent | Rejection


class _Envelope(Struct):
    type: Any = None
    event_id: Any = None


_envelope = msgspec.json.Decoder(_Envelope)
# In both dialects `null` for an optional field means "not given" (clients such as LiveKit send
# `"instructions": null`), except for these fields, where `null` has a meaning of its own (off, detect, none).
NULL_MEANS_SOMETHING = frozenset(
    {"turn_detection", "transcription", "input_audio_transcription", "noise_reduction", "input_audio_noise_reduction"}
    | {"include", "language", "prompt", "idle_timeout_ms", "metadata", "tracing"}
)


# Deeper than any client event needs (a tool's JSON schema included), and far shallower than where msgspec, in this
# decode or in any later decode of the record, gives up (Python's recursion limit).
MAX_NESTING = 64
# Everything but brackets outside strings, and the innermost pairs of brackets: the scan is a few passes in C.
_NOT_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^\[\]{}"]+|"', re.DOTALL)
_INNERMOST = re.compile(r"[\[{][\]}]")


def decode(frame: str | bytes, dialect: Dialect) -> Decoded:
    if _nested_deeper(frame, MAX_NESTING):
        message = f"The frame is not valid JSON: it nests deeper than {MAX_NESTING} levels."
        return Rejection("invalid_json", message, None, peek_event_id(frame))
    try:
        return _decode(frame, dialect)
    except RecursionError:  # brackets that never close (malformed) are not counted above
        message = "The frame is not valid JSON: it nests too deeply."
        return Rejection("invalid_json", message, None, peek_event_id(frame))
    except UnicodeDecodeError:  # msgspec decodes a binary frame's strings as UTF-8 as it meets them
        message = "The frame is not valid JSON: it is not UTF-8."
        return Rejection("invalid_json", message, None, peek_event_id(frame))


def _decode(frame: str | bytes, dialect: Dialect) -> Decoded:
    decoder = ga.decoder if dialect == "ga" else beta.decoder
    try:
        wire = decoder.decode(frame)
    except msgspec.ValidationError:
        frame = _without_nulls_not_given(frame)
        try:  # the slow path: only frames that failed, and only once
            wire = decoder.decode(frame)
        except msgspec.ValidationError as error:
            return _explain(frame, dialect, error)
    except msgspec.DecodeError as error:
        return malformed_json(error, peek_event_id(frame))
    match wire:
        case ga.AppendEvent():
            return AudioAppend(audio=wire.audio, event_id=wire.event_id)
        case ga.CommitEvent():
            return ev.AudioCommitRequested(event_id=wire.event_id)
        case ga.ClearEvent():
            return ev.AudioClearRequested(event_id=wire.event_id)
        case ga.SessionUpdateEvent():
            return ev.SessionUpdateRequested(update=ga.to_update(wire.session), event_id=wire.event_id)
        case beta.SessionUpdateEvent() | beta.TranscriptionSessionUpdateEvent():
            return ev.SessionUpdateRequested(update=beta.to_update(wire.session), event_id=wire.event_id)
        case ga.ResponseCreateEvent():
            return ev.ResponseCreateRequested(response=ga.response_params(wire.response), event_id=wire.event_id)
        case beta.ResponseCreateEvent():
            return ev.ResponseCreateRequested(response=beta.response_params(wire.response), event_id=wire.event_id)
        case ga.ResponseCancelEvent():
            return ev.ResponseCancelRequested(response_id=wire.response_id, event_id=wire.event_id)
        case ga.ItemCreateEvent():
            event = ev.ItemCreateRequested(
                item=ga.new_item(wire.item), previous_item_id=wire.previous_item_id, event_id=wire.event_id
            )
            audio = ga.item_audio(wire.item)
            return event if audio is None else ItemWithAudio(event, audio)
        case ga.ItemRetrieveEvent():
            return ev.ItemRetrieveRequested(item_id=wire.item_id, event_id=wire.event_id)
        case ga.ItemTruncateEvent():
            return ev.ItemTruncateRequested(
                item_id=wire.item_id,
                content_index=wire.content_index,
                audio_end_ms=wire.audio_end_ms,
                event_id=wire.event_id,
            )
        case ga.ItemDeleteEvent():
            return ev.ItemDeleteRequested(item_id=wire.item_id, event_id=wire.event_id)
    assert_never(wire)


def _nested_deeper(frame: str | bytes, limit: int) -> bool:
    """Whether the frame's brackets nest deeper than `limit` (audio appends have none: a count is enough)."""
    if isinstance(frame, str):
        opened, text = frame.count("[") + frame.count("{"), frame
    else:
        opened, text = frame.count(b"[") + frame.count(b"{"), frame.decode(errors="replace")
    if opened <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", text)
    for _ in range(limit):  # each pass peels one level
        brackets, peeled = _INNERMOST.subn("", brackets)
        if not peeled:
            return False
    return _INNERMOST.search(brackets) is not None


def peek_event_id(frame: str | bytes) -> str | None:
    """The event_id of a frame that cannot be decoded, if it appears near the start, without parsing the frame."""
    head = frame[:512] if isinstance(frame, str) else frame[:512].decode(errors="replace")
    marker = '"event_id"'
    at = head.find(marker)
    if at < 0:
        return None
    rest = head[at + len(marker) :].lstrip(" :")
    if not rest.startswith('"'):
        return None
    end = rest.find('"', 1)
    event_id = rest[1:end] if end > 0 else None
    return None if event_id is None or "\ufffd" in event_id else event_id


def _without_nulls_not_given(frame: str | bytes) -> str | bytes:
    """The frame without the `null`s that mean "not given"; as it was if it holds none."""
    try:
        body = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return frame
    cleaned = _drop_nulls(body)
    return frame if cleaned == body else msgspec.json.encode(cleaned)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None or k in NULL_MEANS_SOMETHING}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _explain(frame: str | bytes, dialect: Dialect, error: msgspec.ValidationError) -> Decoded:
    try:
        envelope = _envelope.decode(frame)
    except msgspec.ValidationError:
        try:
            msgspec.json.decode(frame)
        except msgspec.DecodeError as malformed:
            return malformed_json(malformed, peek_event_id(frame))
        return Rejection("invalid_type", "A client event must be a JSON object.", None, None)
    except msgspec.DecodeError as malformed:  # the typed decoder stopped before the JSON broke
        return malformed_json(malformed, peek_event_id(frame))
    event_id = envelope.event_id if isinstance(envelope.event_id, str) else None
    kind = envelope.type
    if kind is None:
        return Rejection("missing_required_parameter", "Missing required parameter: 'type'.", "type", event_id)
    if not isinstance(kind, str):
        return Rejection("invalid_type", "Invalid type for 'type': expected a string.", "type", event_id)
    if kind in SERVED[dialect]:
        return from_validation_error(error, event_id)
    if kind in KNOWN:
        return ev.UnservedRequest(event_type=kind, event_id=event_id)
    supported = ", ".join(sorted(SERVED[dialect] | KNOWN))
    return Rejection(
        "invalid_value",
        f"Invalid value: '{kind}'. Supported client events are: {supported}.",
        "type",
        event_id,
    )


# --- rendering ----------------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


def render(event: ev.AnyServerEvent, dialect: Dialect) -> bytes | None:
    """The frame for `event` in `dialect`, or None where the dialect has no such event."""
    body = render_dict(event, dialect)
    return None if body is None else _encoder.encode(body)


def render_dict(event: ev.AnyServerEvent, dialect: Dialect) -> dict[str, Any] | None:
    if isinstance(event, ev.SessionCreated | ev.SessionUpdated):
        shape = ga.session if dialect == "ga" else beta.session
        kind = event.__struct_config__.tag
        if dialect == "beta" and event.session.type == "transcription" and isinstance(event, ev.SessionUpdated):
            kind = "transcription_session.updated"
        return {
            "type": kind,
            "event_id": event.event_id,
            "session": shape(event.session, event.session_id, event.expires_at),
        }
    body: dict[str, Any] = msgspec.to_builtins(event)
    if isinstance(event, ev.ResponseCreated | ev.ResponseDone):
        body["response"] = (ga.response if dialect == "ga" else beta.response)(body["response"])
    if dialect == "beta":
        if isinstance(event, ev.ItemDone):
            return None
        body["type"] = beta.EVENT_NAMES.get(body["type"], body["type"])
        if isinstance(event, ev.ErrorEvent):
            body["error"]["param"] = beta.param(event.error.param)
        if "item" in body:
            body["item"] = beta.item(body["item"])
    return body
