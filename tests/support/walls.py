"""A subject's head pasted onto a plain wall: the scene and segmentation tests' photo of a person there."""

from __future__ import annotations

import cv2
import numpy as np

from kiss_core.scene.layout import head_mask

WALL = (248, 248, 245)


def on_wall(
    photo: np.ndarray, landmarks: np.ndarray, canvas: tuple[int, int], at: tuple[int, int]
) -> np.ndarray:
    """The head and neck of `photo` (by its landmarks) at `at` (x, y) on a plain wall of `canvas` (w, h)."""
    mask = cv2.GaussianBlur(head_mask(landmarks, photo.shape[:2]), (0, 0), 2.0)[..., None]
    cut = photo * mask + np.array(WALL, np.float32) * (1 - mask)
    out = np.empty((canvas[1], canvas[0], 3), np.float32)
    out[...] = WALL
    x, y = at
    out[y : y + photo.shape[0], x : x + photo.shape[1]] = cut
    return np.round(out).astype(np.uint8)
