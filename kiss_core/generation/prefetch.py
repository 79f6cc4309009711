"""A backend's frames made one step ahead, on their own thread, while the caller marks and encodes.

The producer's loop does two kinds of work per frame: the backend makes it (the compositor's warps and
blends, or a diffusion model's decode and interpolation) and the producer marks it and hands it to
x264. Both are mostly OpenCV, numpy and codec calls that release the GIL, so on a second core they
overlap instead of taking turns: a 5 s 832x480 preview job took 2.05 s with the backend inline and
1.83 s with it on its own thread (median of 4 each, alternating, one process, 2 cores).

The source runs in a copy of the caller's context (its trace span stays the parent of the backend's),
an exception it raises reaches the caller after the frames before it, and a caller that stops early
(an encoding error, a blocked output) stops the source after the frame in hand and closes it.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Generator, Iterable
from typing import Generic, TypeVar, cast

T = TypeVar("T")

DEPTH = 2  # frames made ahead: enough to keep both sides busy; each is a few MB at most


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class _Maker(Generic[T]):
    """The thread's side: pulls from the source into the queue until it ends, fails or is told to stop."""

    def __init__(self, source: Iterable[T], depth: int):
        self.source = source
        self.made: queue.Queue[object] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def run(self) -> None:
        iterator = iter(self.source)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the caller, raised there
            self._put(_Failed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _put(self, item: object) -> bool:
        """Queue `item` unless the caller stopped listening; False then."""
        while not self.stop.is_set():
            try:
                self.made.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


def prefetched(source: Iterable[T], depth: int = DEPTH) -> Generator[T, None, None]:
    """The items of `source`, in order, made up to `depth` ahead on another thread."""
    if depth < 1:
        raise ValueError(f"`depth` must be at least 1 but is {depth}")
    maker = _Maker(source, depth)
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(maker.run,), name="frames-ahead", daemon=True
    )
    thread.start()
    try:
        while True:
            item = maker.made.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(T, item)
    finally:
        maker.stop.set()
        thread.join()
