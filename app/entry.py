"""The `vocalis` command's entry point: light, so that a Ctrl-C while the rest loads leaves quietly."""

import contextlib
import ctypes
import os
import signal
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


def one_blas_thread() -> None:
    """numpy's OpenBLAS starts a thread per core, and after each matrix product they spin, waiting for the next: a
    whisper decode's mel filter (one small product) cost 28 ms of CPU for 4 ms of work, taken from the model
    threads beside it, and the STT worker used 30% more CPU with 8 sessions (bench.concurrency). Every product
    here is small enough for one thread. Before numpy loads; OPENBLAS_NUM_THREADS, when set, decides."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> None:
    fewer_malloc_arenas()
    one_blas_thread()
    # A Ctrl-C is held while the rest loads, then acted on. Raised in the middle of an import it could be lost: as
    # an ImportError from a pybind11 module (ctranslate2, onnxruntime), or swallowed whole when it lands in the
    # import system's lock callback ("Exception ignored in ... _get_module_lock"), and `serve` went on starting.
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda number, _frame: held.append(number))
    try:
        from app.cli import main as command
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # asyncio.run installs its own over this one only
    if held:
        raise SystemExit(130)
    try:
        command()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
