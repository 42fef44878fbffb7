"""structlog: readable lines on a terminal, JSON lines in production, for our own logs and for the standard
library's (uvicorn, httpx, faster-whisper): every line has one format."""

import logging
import re
import sys

import structlog

# Libraries that log at info on every request or decode: heard only at debug.
CHATTY = ("faster_whisper", "httpx", "uvicorn.access", "aioice", "aiortc")  # aioice logs every ICE check
_API_KEY = re.compile(r"(api_key=)[^&\s\"']+")


class RedactApiKeys(logging.Filter):
    """`?api_key=` (browsers cannot set headers on a WebSocket) never reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message:
            record.msg, record.args = _API_KEY.sub(r"\1***", message), None
        return True


def configure(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's records go through the same processors and renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(RedactApiKeys())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    for name in CHATTY:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING if threshold > logging.DEBUG else threshold))
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn installs handlers of its own unless told not to
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
