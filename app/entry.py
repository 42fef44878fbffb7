"""The `vocalis` command's entry point: light, so that a Ctrl-C while the rest loads leaves quietly."""


def main() -> None:
    try:
        from app.cli import main as command

        command()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ImportError as error:
        # A Ctrl-C while a pybind11 module (ctranslate2, onnxruntime) initialises comes out as this.
        if isinstance(error.__cause__, KeyboardInterrupt):
            raise SystemExit(130) from None
        raise
