"""The heap trimmer gives freed pages in the middle of glibc's heap back to the kernel."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

import pytest

from kiss_core.jobs.heap import MALLOC_TRIM, HeapTrimmer, release_free_heap

pytestmark = pytest.mark.skipif(MALLOC_TRIM is None, reason="this libc has no malloc_trim")

BLOCK = 64 * 1024  # under glibc's mmap threshold: served from an arena, not its own mapping


def resident_bytes() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * 4096


def test_freed_blocks_below_a_live_one_are_resident_until_trimmed() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(1600)]  # 100 MiB
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)  # touch every page
    for block in blocks[:-1]:
        libc.free(block)  # the last one stays: free() alone cannot shrink the heap below it
    try:
        before = resident_bytes()
        assert release_free_heap()
        released = before - resident_bytes()
        assert released > 80 * 2**20, f"only {released / 2**20:.1f} MiB released"
    finally:
        libc.free(blocks[-1])


def test_the_trimmer_runs_at_most_once_per_interval() -> None:
    now = [0.0]
    ran: list[float] = []
    trimmer = HeapTrimmer(
        min_interval_s=5.0, clock=lambda: now[0], release=lambda: bool(ran.append(now[0])) or True
    )
    for t in (0.0, 1.0, 4.9, 5.0, 5.1, 11.0):
        now[0] = t
        trimmer("job")
    assert ran == [0.0, 5.0, 11.0]
    assert trimmer.trims == 3
