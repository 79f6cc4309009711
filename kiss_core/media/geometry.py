"""Landmark geometry shared by analysis, composition and rendering: iBUG-68 groups and 2x3 affines."""

from __future__ import annotations

import numpy as np

JAW = slice(0, 17)
LEFT_EYE = slice(36, 42)  # the eye on the image's left
RIGHT_EYE = slice(42, 48)  # the eye on the image's right
MOUTH = slice(48, 68)
# The cheek on the image's left (jaw, nose wing, mouth corner, lower eyelid): where a cheek kiss lands.
CHEEK_LEFT = np.array([2, 3, 31, 48, 41])


def eye_centers(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the image-left and image-right eyes."""
    points = np.asarray(landmarks, dtype=np.float64)
    return points[LEFT_EYE].mean(axis=0), points[RIGHT_EYE].mean(axis=0)


def face_width(landmarks: np.ndarray) -> float:
    """The jaw span: distance from landmark 0 to landmark 16 (independent of head roll), pixels."""
    points = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(points[16] - points[0]))


def similarity_from_points(
    src: tuple[np.ndarray, np.ndarray], dst: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) taking two source points onto two targets."""
    s0, s1 = (complex(*map(float, p)) for p in src)
    d0, d1 = (complex(*map(float, p)) for p in dst)
    if s1 == s0:
        raise ValueError("the two source points coincide; no similarity is defined")
    a = (d1 - d0) / (s1 - s0)
    b = d0 - a * s0
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=np.float64)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., N, 2) through 2x3 affines (..., 2, 3); leading axes broadcast."""
    affine = np.asarray(affine, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    return points @ np.swapaxes(affine[..., :2], -1, -2) + affine[..., None, :, 2]


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer ∘ inner for 2x3 affines (inner applied first); broadcasts over leading axes."""
    linear = outer[..., :, :2] @ inner[..., :, :2]
    shift = (outer[..., :, :2] @ inner[..., :, 2:3])[..., 0] + outer[..., :, 2]
    return np.concatenate([linear, shift[..., None]], axis=-1)
