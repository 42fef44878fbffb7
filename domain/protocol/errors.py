"""OpenAI-shaped rejections for frames that do not decode, derived from msgspec's validation messages."""

import re

import msgspec
from msgspec import Struct

# What a rejection repeats of a frame (a value, a field name, the event_id) is cut to this many characters, so its
# record stays small whatever the frame held.
MAX_ECHO_CHARS = 1_000


class Rejection(Struct, frozen=True):
    code: str
    message: str
    param: str | None = None
    event_id: str | None = None

    def bounded(self) -> "Rejection":
        """This rejection with its texts cut to MAX_ECHO_CHARS; an event_id that long is not echoed at all."""
        return Rejection(
            self.code,
            _cut(self.message),
            None if self.param is None else _cut(self.param),
            self.event_id if self.event_id is None or len(self.event_id) <= MAX_ECHO_CHARS else None,
        )


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


# msgspec reports the failing place as a JSON path, e.g. "... - at `$.session.audio`".
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_EXPECTED = re.compile(r"Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`")
_INVALID_VALUE = re.compile(r"Invalid (?:enum )?value (?P<value>.+)")


def _join(path: str, name: str | None = None) -> str | None:
    dotted = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    if name:
        dotted = f"{dotted}.{name}" if dotted else name
    return dotted or None


def from_validation_error(error: msgspec.ValidationError, event_id: str | None) -> Rejection:
    match = _AT.match(str(error))
    assert match is not None  # the pattern matches any string
    what, path = match["what"], match["path"] or ""
    if found := _UNKNOWN_FIELD.match(what):
        param = _join(path, found["name"])
        return Rejection("unknown_parameter", f"Unknown parameter: '{param}'.", param, event_id)
    if found := _MISSING_FIELD.match(what):
        param = _join(path, found["name"])
        return Rejection("missing_required_parameter", f"Missing required parameter: '{param}'.", param, event_id)
    param = _join(path)
    if found := _EXPECTED.match(what):
        if found["expected"].startswith(("int", "float")) and found["got"] in ("int", "float"):
            return Rejection("invalid_value", f"Invalid value for '{param}': {what}.", param, event_id)
        message = f"Invalid type for '{param}': expected {found['expected']}, but got {found['got']}."
        return Rejection("invalid_type", message, param, event_id)
    if "base64" in what:
        return Rejection("invalid_value", f"Invalid value for '{param}': not valid base64.", param, event_id)
    if found := _INVALID_VALUE.match(what):
        return Rejection("invalid_value", f"Invalid value for '{param}': {found['value']}.", param, event_id)
    return Rejection("invalid_value", f"Invalid value for '{param}': {what}.", param, event_id)


def malformed_json(error: msgspec.DecodeError, event_id: str | None) -> Rejection:
    return Rejection("invalid_json", f"The frame is not valid JSON: {error}.", None, event_id)
