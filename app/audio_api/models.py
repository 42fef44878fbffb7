"""`GET /v1/models` and `GET /v1/models/{id}`: what this server serves, in OpenAI's list shape."""

import re
import time
from typing import Any, Literal

from litestar import Request, Response, get
from litestar.params import FromPath

from app.audio_api.request import error_response
from app.realtime.connection import EdgeServices
from domain.rest_audio import (
    ApiError,
)
from handlers.models import UnknownModel, is_realtime_model
from handlers.tts import BUNDLED_VOICES, OPENAI_VOICES

TTS_MODEL = "kokoro"
# Stock clients send OpenAI's speech model names; they all mean Kokoro.
OPENAI_SPEECH_MODEL = re.compile(r"^(tts-1(-hd)?(-\d.*)?|gpt-.*tts.*)$")
OWNER = "vocalis"
CREATED = int(time.time())  # when this edge started: the `created` of every model it lists


ModelKind = Literal["transcription", "llm", "speech", "voice"]


def _served_models(services: EdgeServices) -> dict[str, ModelKind]:
    """What this server serves under its own names, and what each is: transcription models, LLMs, Kokoro and its
    voices (the browser console fills its choices from the kinds)."""
    kinds: dict[str, ModelKind] = dict.fromkeys(services.registry.installed(), "transcription")
    kinds |= dict.fromkeys(sorted(services.llm_models), "llm")
    return kinds | {TTS_MODEL: "speech"} | dict.fromkeys(BUNDLED_VOICES, "voice")


def _served_name(services: EdgeServices, name: str) -> bool:
    """A name a request may use: the listed ones and OpenAI's names that map onto them."""
    if name in _served_models(services) or name in OPENAI_VOICES or OPENAI_SPEECH_MODEL.match(name):
        return True
    if is_realtime_model(name):
        return True
    try:
        services.registry.canonical(name)
    except UnknownModel:
        return False
    return True


def _model(name: str, kind: ModelKind | None) -> dict[str, Any]:
    """OpenAI's model object; `kind` is Vocalis's own field, beside the ones OpenAI's clients read."""
    return {"id": name, "object": "model", "created": CREATED, "owned_by": OWNER} | ({"kind": kind} if kind else {})


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: EdgeServices = request.app.state.services
    return {"object": "list", "data": [_model(name, kind) for name, kind in _served_models(services).items()]}


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[dict[str, Any]]:
    """A listed model, or one of OpenAI's names for one (`whisper-1`, `tts-1`, `alloy`, `gpt-realtime`, …)."""
    name = model_id.lstrip("/")
    services: EdgeServices = request.app.state.services
    if _served_name(services, name):
        return Response(_model(name, _served_models(services).get(name)))
    message = f"The model '{name}' does not exist. GET /v1/models lists the installed ones."
    return error_response(request, "models", ApiError(404, message, "model", "model_not_found"))
