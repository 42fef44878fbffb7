"""`vocalis`: serve, edge, worker, models, and the log tools (sessions, tail, replay, export)."""

import argparse
import asyncio
import signal
import sys
from importlib.metadata import version
from pathlib import Path

import structlog

from app import log_tools, runner
from app.bus import Bus, NatsUnreachable
from app.log_reader import RecordedSession, read_session
from app.logging import configure
from app.settings import Settings, SettingsError
from domain.replay import UnsupportedSchema, cut_off
from handlers.llm import BUNDLED_LLMS, bundled_llm_path
from handlers.models import BUNDLED
from handlers.ports import now_ms
from handlers.tts import model_path as tts_model_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vocalis", description="Realtime voice server (OpenAI Realtime API).")
    parser.add_argument("--version", action="version", version=f"vocalis {version('vocalis')}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "everything: embedded NATS (unless VOCALIS_NATS_URL is set), the edge and the workers"),
        ("edge", "the WebSocket edge alone, against VOCALIS_NATS_URL"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--host", help="listen address (VOCALIS_HOST, default 127.0.0.1)")
        command.add_argument("--port", type=int, help="listen port (VOCALIS_PORT, default 8000)")
        command.add_argument("--data-dir", type=Path, help="data directory (VOCALIS_DATA_DIR)")
        command.add_argument("--tls-certfile", type=Path, help="TLS certificate (VOCALIS_TLS_CERTFILE)")
        command.add_argument("--tls-keyfile", type=Path, help="TLS key (VOCALIS_TLS_KEYFILE)")
    worker = commands.add_parser("worker", help="one worker, against VOCALIS_NATS_URL")
    worker.add_argument("kind", choices=["stt", "llm", "tts", "analytics"])
    models = commands.add_parser("models", help="bundled models")
    models.add_argument("action", choices=["prepare", "list"])
    models.add_argument("--data-dir", type=Path, help="data directory (VOCALIS_DATA_DIR)")

    sessions = commands.add_parser("sessions", help="list the sessions on the log, newest first")
    sessions.add_argument("--since", help="only sessions started since: ISO time or age (30m, 2h, 7d)")
    sessions.add_argument("--until", help="only sessions started until: ISO time or age")
    sessions.add_argument("--mode", choices=["transcription", "realtime"])
    tail = commands.add_parser("tail", help="follow a session's events (or every session's) live")
    tail.add_argument("session", nargs="?")
    tail.add_argument("--all", action="store_true", help="every session, from now on")
    tail.add_argument("--type", action="append", default=[], help="event types to show (glob; repeatable)")
    tail.add_argument("--json", action="store_true", help="print the records as they are")
    replay = commands.add_parser("replay", help="re-run a session's records; report identical or a divergence")
    replay.add_argument("session")
    replay.add_argument("--save", type=Path, help="also write a self-contained fixture (JSONL) for tests")
    export = commands.add_parser("export", help="a session as records, subtitles, a transcript or audio")
    export.add_argument("session")
    export.add_argument("--format", required=True, choices=["jsonl", "srt", "vtt", "md", "wav"])
    export.add_argument("--output", type=Path, help="file to write (a directory for wav)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    flags = ("host", "port", "data_dir", "tls_certfile", "tls_keyfile")
    try:
        settings = Settings.from_env(**{flag: getattr(args, flag, None) for flag in flags})
    except SettingsError as error:
        print(f"vocalis: {error}", file=sys.stderr)
        sys.exit(2)
    configure(settings.log_level, settings.log_format)
    log = structlog.get_logger("vocalis")
    # SIGTERM stops the way Ctrl-C does, so the embedded nats-server is stopped too (uvicorn re-raises the signal
    # once it has shut down; with the default action the process would die before that).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        match args.command:
            case "serve":
                asyncio.run(runner.serve(settings))
            case "edge":
                asyncio.run(runner.run_edge(settings, _required_nats(settings)))
            case "worker":
                asyncio.run(runner.worker_until_signalled(settings, _required_nats(settings), args.kind))
            case "models":
                registry = runner.registry(settings)
                prepare = args.action == "prepare"
                for name in BUNDLED:
                    print(_model_line(name, registry.prepare(name) if prepare else registry.cache_dir / name))
                for name in BUNDLED_LLMS:
                    llm = bundled_llm_path(name, settings.models_path) if prepare else settings.models_path / name
                    print(_model_line(name, llm))
                kokoro = tts_model_path(settings.models_path) if prepare else settings.models_path / "kokoro"
                print(_model_line("kokoro", kokoro))
            case "sessions" | "tail" | "replay" | "export":
                sys.exit(asyncio.run(_log_command(settings, args)))
    except KeyboardInterrupt:
        log.info("stopped")
    except (runner.PortInUse, runner.DataDirInUse, NatsUnreachable) as error:
        print(f"vocalis: {error}", file=sys.stderr)
        sys.exit(1)


def _model_line(name: str, path: Path) -> str:
    return f"{name}\t{path}" if path.exists() else f"{name}\tnot prepared (vocalis models prepare)"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _log_command(settings: Settings, args: argparse.Namespace) -> int:
    url = runner.recorded_nats_url(settings)
    try:
        bus = await Bus.connect(url, settings.subject_prefix, f"vocalis-{args.command}", attempts=3)
    except NatsUnreachable as unreachable:
        print(unreachable, file=sys.stderr)
        return 1
    try:
        match args.command:
            case "sessions":
                now = now_ms()
                since = log_tools.parse_when(args.since, now) if args.since else None
                until = log_tools.parse_when(args.until, now) if args.until else None
                print(log_tools.format_sessions(await log_tools.list_sessions(bus, since, until, args.mode)))
            case "tail":
                if not args.session and not args.all:
                    print("name a session, or --all", file=sys.stderr)
                    return 2
                await log_tools.tail(
                    bus, None if args.all else args.session, args.type, args.json, _print, _print_to_stderr
                )
            case "replay":
                recorded = await _recorded(bus, args.session)
                if args.save:
                    log_tools.save_fixture(recorded, args.save)
                divergence = log_tools.replay_recorded(recorded.inputs, recorded.outputs)
                if divergence is not None:
                    print(divergence.report())
                    return 1
                identical = f"identical: {len(recorded.outputs)} events from {len(recorded.inputs)} records"
                if cut_off(recorded.inputs):
                    identical += " (the session was cut off: its edge was lost; compared as far as it recorded)"
                print(identical)
            case "export":
                recorded = await _recorded(bus, args.session)
                text = log_tools.export(recorded, args.format, args.output)
                if args.output and args.format != "wav":
                    args.output.write_text(text)
                    text = str(args.output)
                print(text, end="" if text.endswith("\n") else "\n")
    except (ValueError, UnsupportedSchema) as error:
        print(f"vocalis {args.command}: {error}", file=sys.stderr)
        return 1
    finally:
        await bus.close()
    return 0


async def _recorded(bus: Bus, session_id: str) -> RecordedSession:
    recorded = await read_session(bus, session_id)
    if not recorded.inputs and not recorded.outputs:
        raise ValueError(f"no such session on the log: '{session_id}' (`vocalis sessions` lists them)")
    return recorded


def _print(line: str) -> None:
    print(line, flush=True)


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _required_nats(settings: Settings) -> str:
    if not settings.nats_url:
        raise SystemExit("set VOCALIS_NATS_URL to the NATS server to join (or use `vocalis serve`)")
    return settings.nats_url
