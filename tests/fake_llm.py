"""A scripted OpenAI-compatible chat-completions server for deterministic tests: real HTTP on 127.0.0.1.

    async with FakeLlm() as llm:
        llm.reply("Hello there!")                                  # text
        llm.reply(tool_calls=[("get_weather", {"city": "Paris"})])  # tool calls (arguments as JSON)
        llm.reply("Let me look.", tool_calls=[...], delay_s=0.05)   # text, then tool calls; slow chunks
        llm.fail(500)                                              # the next request gets HTTP 500
        ChatClient(llm.base_url, "key") ...
        llm.requests[0]["messages"]                                # every request body, in order

Replies are consumed in order, one per request, and streamed as SSE chunks of `chunk_chars` characters (a chunk
counts as one token: `max_tokens` cuts the reply there with finish_reason "length"). A request with no reply left
gets HTTP 500. `disconnects` counts streams whose client went away before the end.
"""

import asyncio
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn


@dataclass(frozen=True)
class Reply:
    text: str = ""
    tool_calls: tuple[tuple[str, str], ...] = ()  # (name, arguments as JSON text)
    chunk_chars: int = 3
    delay_s: float = 0.0
    status: int = 200


@dataclass
class FakeLlm:
    model: str = "fake-model"
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    disconnects: int = 0
    completed: int = 0
    cached_tokens: int | None = None  # set: the usage says so many prompt tokens were cached, as llama.cpp's does
    prefill_ms: float | None = None  # set: the last chunk carries llama.cpp's `timings` with this `prompt_ms`

    def reply(
        self,
        text: str = "",
        tool_calls: list[tuple[str, dict[str, Any] | str]] | None = None,
        *,
        chunk_chars: int = 3,
        delay_s: float = 0.0,
    ) -> None:
        calls = tuple((name, args if isinstance(args, str) else json.dumps(args)) for name, args in tool_calls or ())
        self.replies.append(Reply(text, calls, chunk_chars, delay_s))

    def fail(self, status: int = 500) -> None:
        self.replies.append(Reply(status=status))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> "FakeLlm":
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(self._app, interface="asgi3", log_config=None, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.should_exit = True
        await self._serving
        self._socket.close()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] != "POST" or scope["path"].rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            await _respond_json(send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        request = json.loads(body)
        self.requests.append(request)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        reply = self.replies.popleft() if self.replies else Reply(status=500)
        if reply.status != 200:
            await _respond_json(send, reply.status, {"error": {"message": "scripted failure", "type": "server_error"}})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        try:
            for chunk in self._chunks(request, reply):
                if disconnected.is_set():
                    self.disconnects += 1
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.completed += 1
        finally:
            watcher.cancel()

    def _chunks(self, request: dict[str, Any], reply: Reply) -> Any:
        """The SSE events of the reply, as chat completions streams them."""
        created = int(time.time())
        ident = f"chatcmpl-{len(self.requests)}"

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": request.get("model", self.model),
                "choices": [choice],
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        size = max(1, reply.chunk_chars)
        budget = request.get("max_tokens") or request.get("max_completion_tokens")
        tokens = 0
        finish = "tool_calls" if reply.tool_calls else "stop"
        yield event({"role": "assistant", "content": ""})
        pieces: list[dict[str, Any]] = [{"content": reply.text[i : i + size]} for i in range(0, len(reply.text), size)]
        for n, (name, arguments) in enumerate(reply.tool_calls):
            call = {"index": n, "id": f"call_{len(self.requests)}_{n}", "type": "function"}
            pieces.append({"tool_calls": [{**call, "function": {"name": name, "arguments": ""}}]})
            pieces += [
                {"tool_calls": [{"index": n, "function": {"arguments": arguments[i : i + size]}}]}
                for i in range(0, len(arguments), size)
            ]
        for piece in pieces:
            if budget is not None and tokens >= budget:
                finish = "length"
                break
            yield event(piece)
            tokens += 1
        yield event({}, finish)
        if (request.get("stream_options") or {}).get("include_usage"):
            prompt = sum(len(str(m.get("content") or "").split()) for m in request.get("messages", []))
            usage = {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
            if self.cached_tokens is not None:
                usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "choices": [], "usage": usage}
            if self.prefill_ms is not None:
                chunk["timings"] = {"cache_n": self.cached_tokens or 0, "prompt_ms": self.prefill_ms}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"


async def _respond_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
