"""One log format for every line, ours and the libraries', and no API key in any of them."""

import json
import subprocess
import sys

SCRIPT = """
import logging
from app.logging import configure
configure("info", "json")
path = "/v1/realtime?api_key=sekrit&x=1"
logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:1", path)
logging.getLogger("faster_whisper").info("Processing audio with duration 00:01.000")  # per decode: debug only
logging.getLogger("some.library").warning("plain %s", "stdlib")
"""


def test_library_lines_are_json_quiet_below_debug_and_never_show_an_api_key():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    assert [line["event"] for line in lines] == [
        '127.0.0.1:1 - "WebSocket /v1/realtime?api_key=***&x=1" [accepted]',
        "plain stdlib",
    ]
    assert lines[0]["logger"] == "uvicorn.error" and lines[1]["level"] == "warning"
    assert "sekrit" not in run.stderr
