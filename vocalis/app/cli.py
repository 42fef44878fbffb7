"""`vocalis`: serve, edge, worker, models."""

import argparse
import asyncio
from pathlib import Path

import structlog

from vocalis.app import runner
from vocalis.app.logging import configure
from vocalis.app.settings import Settings
from vocalis.handlers.models import BUNDLED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vocalis", description="Realtime voice server (OpenAI Realtime API).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "everything: embedded NATS (unless VOCALIS_NATS_URL is set), the edge and the workers"),
        ("edge", "the WebSocket edge alone, against VOCALIS_NATS_URL"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--host", help="listen address (VOCALIS_HOST, default 127.0.0.1)")
        command.add_argument("--port", type=int, help="listen port (VOCALIS_PORT, default 8000)")
        command.add_argument("--data-dir", type=Path, help="data directory (VOCALIS_DATA_DIR)")
    worker = commands.add_parser("worker", help="one model worker, against VOCALIS_NATS_URL")
    worker.add_argument("kind", choices=["stt"])
    models = commands.add_parser("models", help="bundled models")
    models.add_argument("action", choices=["prepare", "list"])
    models.add_argument("--data-dir", type=Path, help="data directory (VOCALIS_DATA_DIR)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings.from_env(
        host=getattr(args, "host", None), port=getattr(args, "port", None), data_dir=getattr(args, "data_dir", None)
    )
    configure(settings.log_level, settings.log_format)
    log = structlog.get_logger("vocalis")
    try:
        match args.command:
            case "serve":
                asyncio.run(runner.serve(settings))
            case "edge":
                asyncio.run(runner.run_edge(settings, _required_nats(settings)))
            case "worker":
                asyncio.run(runner.worker_until_signalled(settings, _required_nats(settings)))
            case "models":
                registry = runner.registry(settings)
                for name in BUNDLED:
                    path = registry.prepare(name) if args.action == "prepare" else registry.cache_dir / name
                    print(f"{name}\t{path}")
    except KeyboardInterrupt:
        log.info("stopped")


def _required_nats(settings: Settings) -> str:
    if not settings.nats_url:
        raise SystemExit("set VOCALIS_NATS_URL to the NATS server to join (or use `vocalis serve`)")
    return settings.nats_url
