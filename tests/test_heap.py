"""A worker gives its freed heap memory back (handlers.heap): glibc otherwise keeps free pages that lie below a live
block resident, and a long session's RSS creeps up."""

import ctypes
import ctypes.util
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
