"""Other photos of the same face: the ordinary changes between two snapshots of one person (mirrored,
cropped tighter, brighter, slightly rotated) and one worse photo (blurred), for the several-photos
tests. Applied to a real photo for face-analysis tests, to a synthetic subject for generation tests."""

from __future__ import annotations

import cv2
import numpy as np


def mirrored(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def cropped(image: np.ndarray) -> np.ndarray:
    """A tighter frame: a tenth off the top, a twelfth off each side."""
    height, width = image.shape[:2]
    return np.ascontiguousarray(image[height // 10 :, width // 12 : width - width // 12])


def brighter(image: np.ndarray) -> np.ndarray:
    return np.clip(image.astype(np.float32) * 1.2 + 15, 0, 255).astype(np.uint8)


def rotated(image: np.ndarray, degrees: float = 6.0) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def blurred(image: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """Out of focus: the same person, a worse photo to compose from."""
    return cv2.GaussianBlur(image, (0, 0), sigma)
