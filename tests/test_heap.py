"""The heap (handlers.heap): a worker gives its freed memory back, where glibc otherwise keeps free pages that lie
below a live block resident and a long session's RSS creeps up; and a started process puts what starting made out of
the garbage collector's reach, whose full collections otherwise scan it all."""

import ctypes
import ctypes.util
import gc
import sys

import psutil
import pytest

from handlers import heap

BLOCK = 64 << 10  # under glibc's mmap threshold: from the heap, as a model's small buffers are
BLOCKS = 800  # 50 MiB


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_trim")
def test_free_pages_below_a_live_block_go_back_to_the_os():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # resident
    pin = libc.malloc(BLOCK)  # above them: the heap's top cannot shrink past it
    for block in blocks:
        libc.free(block)
    kept = psutil.Process().memory_info().rss
    try:
        assert heap.trim()
        given_back = kept - psutil.Process().memory_info().rss
    finally:
        libc.free(pin)
    assert given_back > (BLOCKS * BLOCK) // 2, f"{given_back >> 20} MiB given back of {BLOCKS * BLOCK >> 20}"


def test_what_lived_at_startup_is_out_of_the_collector_s_reach():
    startup = [object()]  # a container: one of the objects a collection scans
    try:
        heap.freeze_startup()
        assert not any(o is startup for o in gc.get_objects()), "a full collection would still scan it"
        later = [object()]
        assert any(o is later for o in gc.get_objects())
    finally:
        gc.unfreeze()
