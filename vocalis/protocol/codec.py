"""Frames to canonical client events, canonical server events to frames, for either dialect."""

from typing import Any, Literal, assert_never

import msgspec
from msgspec import Struct

from vocalis.domain import events as ev
from vocalis.protocol import beta, ga
from vocalis.protocol.errors import Rejection, from_validation_error, malformed_json

Dialect = Literal["ga", "beta"]

SERVED = {
    "ga": {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
    },
    "beta": {
        "session.update",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
    },
}
# Client events of the protocol that a session may refuse with an error rather than "unknown event".
KNOWN = {
    "response.create",
    "response.cancel",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "output_audio_buffer.clear",
}


class AudioAppend(Struct, frozen=True):
    audio: bytes
    event_id: str | None = None


Decoded = AudioAppend | ev.ClientEvent | Rejection


class _Envelope(Struct):
    type: Any = None
    event_id: Any = None


_envelope = msgspec.json.Decoder(_Envelope)


def decode(frame: str | bytes, dialect: Dialect) -> Decoded:
    decoder = ga.decoder if dialect == "ga" else beta.decoder
    try:
        wire = decoder.decode(frame)
    except msgspec.ValidationError as error:
        return _explain(frame, dialect, error)
    except msgspec.DecodeError as error:
        return malformed_json(error)
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
    assert_never(wire)


def _explain(frame: str | bytes, dialect: Dialect, error: msgspec.ValidationError) -> Decoded:
    try:
        envelope = _envelope.decode(frame)
    except msgspec.ValidationError:
        try:
            msgspec.json.decode(frame)
        except msgspec.DecodeError as malformed:
            return malformed_json(malformed)
        return Rejection("invalid_type", "A client event must be a JSON object.", None, None)
    except msgspec.DecodeError as malformed:  # the typed decoder stopped before the JSON broke
        return malformed_json(malformed)
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
    if dialect == "beta":
        if isinstance(event, ev.ItemDone):
            return None
        if isinstance(event, ev.ItemAdded):
            body["type"] = "conversation.item.created"
        elif isinstance(event, ev.ErrorEvent):
            body["error"]["param"] = beta.param(event.error.param)
    return body
