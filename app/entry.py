"""The `vocalis` command's entry point: light, so that a Ctrl-C while the rest loads leaves quietly."""


def main() -> None:
    try:
        from app.cli import main as command
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    command()
