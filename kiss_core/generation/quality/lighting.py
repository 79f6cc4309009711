"""Lighting: how different the two people's skin looks, in the photos and in the video."""

from __future__ import annotations

import numpy as np

from kiss_core.media.images import require_rgb
from kiss_core.scene.lighting import skin_stats


def mean_skin_lab(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """Mean CIE Lab colour (L 0..100, a/b about -128..127; D65, sRGB input) of the skin region of one
    face (kiss_core.scene.lighting.skin_mask), the 10% darkest and 10% brightest pixels by L left out.
    None when under 20 skin pixels."""
    stats = skin_stats(require_rgb(image), landmarks)
    return None if stats is None else stats.mean


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> float:
    """CIE76 colour difference: Euclidean distance in Lab (about 2.3 = just noticeable)."""
    return float(np.linalg.norm(np.asarray(lab_a, dtype=np.float64) - np.asarray(lab_b, dtype=np.float64)))


def lighting_delta_e(frame: np.ndarray, landmarks_a: np.ndarray, landmarks_b: np.ndarray) -> float | None:
    """CIE76 ΔE between the two people's mean skin colour in one frame (see `mean_skin_lab`).

    0 = identical skin tone and lighting; < 2 imperceptible; > 10 clearly different. None when a
    face has too little visible skin.
    """
    return photos_delta_e(frame, landmarks_a, frame, landmarks_b)


def photos_delta_e(
    photo_a: np.ndarray, landmarks_a: np.ndarray, photo_b: np.ndarray, landmarks_b: np.ndarray
) -> float | None:
    """The same ΔE between two separate photos (the `delta_e_input` of the report)."""
    lab_a = mean_skin_lab(photo_a, landmarks_a)
    lab_b = mean_skin_lab(photo_b, landmarks_b)
    if lab_a is None or lab_b is None:
        return None
    return delta_e(lab_a, lab_b)
