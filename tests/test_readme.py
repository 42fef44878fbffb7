"""The README's first example runs as written (only its URL points at the test server) and prints the answer."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "Ask what you can do for your country."


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks, "the README has a Python example"
    return blocks[0]


async def test_the_readme_example_prints_the_spoken_answer(conversation):
    conversation.llm.reply(ANSWER)
    code = readme_example()
    assert "ws://127.0.0.1:8000/v1" in code
    code = code.replace("ws://127.0.0.1:8000/v1", conversation.ws_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    lines = out.decode().splitlines()
    assert lines[0] == ANSWER
    status, seconds = lines[1].split(": ")
    assert status == "completed" and float(seconds.split()[0]) > 1.0
    heard = conversation.llm.requests[0]["messages"][-1]["content"].lower()
    assert "ask not what your country can do for you" in heard, "the question was transcribed from jfk.wav"
