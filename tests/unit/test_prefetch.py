"""prefetched: a backend's frames made ahead on their own thread, in order, failures and early stops
passed on as they would be inline."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import pytest

from kiss_core.generation.prefetch import prefetched

JOB = contextvars.ContextVar("JOB", default="none")


def test_items_come_in_order_from_another_thread_in_the_callers_context() -> None:
    threads: set[int] = set()
    seen: list[str] = []

    def source() -> Iterator[int]:
        for i in range(50):
            threads.add(threading.get_ident())
            seen.append(JOB.get())
            yield i

    JOB.set("job-1")  # the trace context a backend's spans hang from
    assert list(prefetched(source())) == list(range(50))
    assert threads and threading.get_ident() not in threads
    assert set(seen) == {"job-1"}


def test_the_next_frame_is_made_while_the_caller_works_on_this_one() -> None:
    """Without read-ahead the source would wait for the caller and the caller for the source: the
    event below would never be set while the caller holds frame 0."""
    second_made = threading.Event()

    def source() -> Iterator[int]:
        yield 0
        second_made.set()
        yield 1

    frames = prefetched(source())
    assert next(frames) == 0
    assert second_made.wait(timeout=10)  # made while the caller still holds frame 0
    assert list(frames) == [1]


def test_a_failure_reaches_the_caller_after_the_frames_before_it() -> None:
    def source() -> Iterator[int]:
        yield 0
        yield 1
        raise RuntimeError("the job was canceled")  # what a progress callback raises mid-render

    got = []
    with pytest.raises(RuntimeError, match="canceled"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [0, 1]


def test_a_caller_that_stops_early_stops_and_closes_the_source() -> None:
    made: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(1000):
                made.append(i)
                yield i
        finally:
            closed.set()  # a backend's locks and contexts are released here

    frames = prefetched(source(), depth=2)
    assert next(frames) == 0
    frames.close()  # an encoding error, a blocked output
    assert closed.is_set()  # closed before close() returned: the thread was joined
    assert len(made) <= 4  # the frame in hand, the queue's two and the one being put


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        next(prefetched(iter([1]), depth=0))
