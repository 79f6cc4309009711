"""Flicker: how much the parts of the frame that should stay still change from frame to frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from kiss_core.schemas import FlickerQuality

FLICKER_BLUR_SIGMA = 1.5  # px; hides x264 noise and single-pixel dither, keeps real changes
STATIC_MARGIN = 0.5  # room around each face (fraction of its size on every side) that may change


def flicker_quality(frames: Sequence[np.ndarray], static_mask: np.ndarray | None = None) -> FlickerQuality:
    """Temporal stability of the regions that should not change.

    For each pair of consecutive frames: the mean absolute difference of their luma (BT.601, 0..255),
    each blurred with a Gaussian of sigma 1.5 px first so codec noise does not count, over the pixels
    where `static_mask` (H, W) is true (all pixels when None or when the mask is empty). `mean` and
    `p95` are the mean and 95th percentile of that per-pair value (0..255, 0 = perfectly stable);
    `frames` is how many frames were compared. Fewer than two frames: 0.
    """
    meter = FlickerMeter(static_mask)
    for frame in frames:
        meter.add(frame)
    return meter.result()


class FlickerMeter:
    """`flicker_quality` one frame at a time, so a renderer can measure while it streams frames out."""

    def __init__(self, static_mask: np.ndarray | None = None):
        self._static = None if static_mask is None else np.asarray(static_mask, dtype=bool)
        self._mask: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._previous: np.ndarray | None = None
        self._changes: list[float] = []
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if self._shape is None:
            self._shape = (frame.shape[0], frame.shape[1])
            if self._static is not None:
                if self._static.shape != self._shape:
                    raise ValueError(f"`static_mask` has to be {self._shape} but is {self._static.shape}")
                if self._static.any() and not self._static.all():
                    self._mask = self._static.astype(np.uint8)
        elif frame.shape[:2] != self._shape:
            raise ValueError(f"all frames must be one size but frame {self.count} is {frame.shape[:2]}")
        luma = _luma(frame)
        if self._previous is not None:
            diff = cv2.absdiff(luma, self._previous)
            self._changes.append(float(cv2.mean(diff, self._mask)[0]))
        self._previous = luma
        self.count += 1

    def result(self) -> FlickerQuality:
        if not self._changes:
            return FlickerQuality(mean=0.0, p95=0.0, frames=self.count)
        values = np.asarray(self._changes)
        return FlickerQuality(
            mean=float(values.mean()), p95=float(np.percentile(values, 95)), frames=self.count
        )


def _luma(frame: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return cv2.GaussianBlur(gray.astype(np.float32), (0, 0), FLICKER_BLUR_SIGMA)


def static_mask_from_plan(
    plan_landmarks: Mapping[str, np.ndarray], shape: Sequence[int], margin: float = STATIC_MARGIN
) -> np.ndarray:
    """(H, W) bool, true where no face ever comes: the inverse of the union, over all frames and both
    people, of each face's landmark hull grown by `margin` of its size on every side (0.5: a hull
    twice as wide and tall, about its centre, which takes in hair, ears and neck).

    `plan_landmarks[subject]` is (T, 68, 2) (or (68, 2)) in frame pixels; `shape` is (H, W, ...).
    """
    height, width = int(shape[0]), int(shape[1])
    covered = np.zeros((height, width), dtype=np.uint8)
    scale = 1.0 + 2.0 * max(0.0, margin)
    for landmarks in plan_landmarks.values():
        track = np.asarray(landmarks, dtype=np.float64)
        if track.ndim == 2:
            track = track[None]
        for points in track:
            hull = cv2.convexHull(points.astype(np.float32))[:, 0].astype(np.float64)
            centre = hull.mean(axis=0)
            grown = centre + (hull - centre) * scale
            cv2.fillConvexPoly(covered, np.round(grown).astype(np.int32), 1)
    return covered == 0


def static_mask_from_boxes(
    boxes: Sequence[Sequence[float]], shape: Sequence[int], margin: float = STATIC_MARGIN
) -> np.ndarray:
    """(H, W) bool, true outside every box (x0, y0, x1, y1) grown by `margin` of its size per side."""
    height, width = int(shape[0]), int(shape[1])
    static = np.ones((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        static[
            max(0, int(np.floor(y0 - my))) : max(0, int(np.ceil(y1 + my))),
            max(0, int(np.floor(x0 - mx))) : max(0, int(np.ceil(x1 + mx))),
        ] = False
    return static
