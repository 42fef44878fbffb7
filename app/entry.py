"""The `vocalis` command's entry point: light, so that a Ctrl-C while the rest loads leaves quietly."""

import contextlib
import ctypes
import os
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2


def fewer_malloc_arenas() -> None:
    """glibc gives threads that allocate at once arenas of their own (up to 8 per core) and keeps what each held: in
    a long session the model threads' buffers left about 170 MiB in 11 arenas, where two hold the same work in
    about 40 MiB (bench.memory_soak). Before any thread starts; MALLOC_ARENA_MAX, when set, decides instead."""
    if sys.platform == "linux" and "MALLOC_ARENA_MAX" not in os.environ:
        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no arenas to cap)
            ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def main() -> None:
    fewer_malloc_arenas()
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
