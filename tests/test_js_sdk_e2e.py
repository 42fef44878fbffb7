"""The official OpenAI JavaScript SDK as a client: it always dials wss://, so this runs over TLS."""

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from app import runner

JS = Path(__file__).parent / "js"


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "openai").is_dir(),
    reason="needs Node.js and `npm install` in tests/js (scripts/install.sh --dev does it when npm is present)",
)
async def test_javascript_sdk_conversation_over_wss(conversation, certificate):
    conversation.llm.reply("Hi from the server.")
    stack = conversation.stack
    cert, key = certificate
    settings = dataclasses.replace(stack.settings, port=runner.free_port(), tls_certfile=cert, tls_keyfile=key)
    server = runner.http_server(settings, runner.edge_services(settings, stack.bus))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        node = await asyncio.create_subprocess_exec(
            "node",
            str(JS / "realtime_smoke.mjs"),
            f"https://127.0.0.1:{settings.port}/v1",
            env=os.environ | {"NODE_EXTRA_CA_CERTS": str(cert)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        output, errors = await asyncio.wait_for(node.communicate(), 90)
    finally:
        server.should_exit = True
        await serving
    assert node.returncode == 0, errors.decode()
    result = json.loads(output.decode().strip().splitlines()[-1])
    assert result["url"].startswith("wss://127.0.0.1:")
    assert result["types"][0] == "session.created"
    assert "response.output_text.delta" in result["types"] and result["status"] == "completed"
    assert result["text"] == "Hi from the server."
