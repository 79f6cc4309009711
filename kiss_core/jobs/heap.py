"""Hand the C heap's free pages back to the kernel: what glibc keeps after a job is RSS nobody uses.

glibc returns freed memory only from the top of each arena; pages freed in the middle stay resident
until `malloc_trim` walks the arenas and releases them (madvise). A long-running HTTP replica that runs
jobs (the Ingress: handle calls, photo checks, store writes) kept ~45 KiB a job that way, about a third
of its measured growth (docs/benchmarks.md, "Soak"). Trimming after each finished job, at most once
per `min_interval_s`, returns it; it costs well under a millisecond. On a libc without `malloc_trim`
(musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable
from typing import Any


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> bool:
    """Release every free page of every glibc arena; True when something was given back."""
    return bool(MALLOC_TRIM(0)) if MALLOC_TRIM is not None else False


class HeapTrimmer:
    """`release_free_heap` as a job-completion callback, at most once per `min_interval_s`."""

    def __init__(
        self,
        min_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        release: Callable[[], bool] = release_free_heap,
    ):
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.release = release
        self.trims = 0  # times it released memory
        self._last = -float("inf")
        self._lock = threading.Lock()

    def __call__(self, *_: Any) -> None:
        with self._lock:
            now = self.clock()
            if now - self._last < self.min_interval_s:
                return
            self._last = now
        if self.release():
            self.trims += 1
