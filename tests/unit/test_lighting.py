"""Shared lighting: constructed colour casts with known answers, on synthetic subjects (nobody real)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.synthetic import synthetic_subject
from kiss_core.generation.quality import photos_delta_e
from kiss_core.scene.lighting import LabMap, apply_lab_map, harmonize_photos, harmonizing_maps, skin_stats
from kiss_core.settings import Settings


@pytest.fixture(scope="module")
def subject() -> tuple[np.ndarray, np.ndarray]:
    photo = synthetic_subject(0)
    face = DlibFaceAnalyzer(Settings().faces).analyze(photo, "a")
    return photo, np.asarray(face.landmarks, dtype=np.float64)


def cast(photo: np.ndarray, gains: tuple[float, float, float]) -> np.ndarray:
    """The photo as if shot under another light: per-channel gains (a white-balance and exposure error)."""
    return np.clip(photo.astype(np.float32) * np.float32(gains), 0, 255).astype(np.uint8)


def test_the_same_face_under_two_lights_is_brought_together(subject) -> None:
    photo, landmarks = subject
    warm_dark = cast(photo, (0.85, 0.7, 0.55))
    photos = {"a": photo, "b": warm_dark}
    marks = {"a": landmarks, "b": landmarks}
    before = photos_delta_e(photo, landmarks, warm_dark, landmarks)
    assert before is not None and before > 10  # clearly different lighting

    for strength, most in ((0.5, 0.6), (1.0, 0.15)):
        out = harmonize_photos(photos, marks, strength)
        after = photos_delta_e(out["a"], landmarks, out["b"], landmarks)
        assert after is not None and after < most * before, (strength, before, after)
    untouched = harmonize_photos(photos, marks, 0.0)
    assert all(untouched[s] is photos[s] for s in photos)


def test_harmonizing_moves_both_photos_halfway(subject) -> None:
    photo, landmarks = subject
    dark = cast(photo, (0.7, 0.7, 0.7))
    stats = {"a": skin_stats(photo, landmarks), "b": skin_stats(dark, landmarks)}
    maps = harmonizing_maps(stats, 0.5)  # type: ignore[arg-type]
    lightness = {
        s: skin_stats(apply_lab_map(p, maps[s]), landmarks).mean[0] for s, p in (("a", photo), ("b", dark))
    }
    middle = (stats["a"].mean[0] + stats["b"].mean[0]) / 2
    # Each moved half of its way to the middle: a got darker, b brighter, and they still differ.
    assert stats["b"].mean[0] < lightness["b"] < middle < lightness["a"] < stats["a"].mean[0]
    assert lightness["a"] == pytest.approx((stats["a"].mean[0] + middle) / 2, abs=1.5)
    assert lightness["b"] == pytest.approx((stats["b"].mean[0] + middle) / 2, abs=1.5)


def test_the_identity_map_changes_nothing_but_rounding(subject) -> None:
    photo, _ = subject
    identity = LabMap(mean_in=np.array([50.0, 0, 0]), mean_out=np.array([50.0, 0, 0]), gain=np.ones(3))
    out = apply_lab_map(photo, identity)
    # 8-bit Lab round trip: a few levels at most.
    assert np.abs(out.astype(int) - photo.astype(int)).mean() < 1.5


def test_gains_are_clamped_and_strength_is_checked(subject) -> None:
    photo, landmarks = subject
    flat = cv2.GaussianBlur(photo, (0, 0), 6)  # skin with a much smaller spread
    maps = harmonizing_maps({"a": skin_stats(photo, landmarks), "b": skin_stats(flat, landmarks)}, 1.0)  # type: ignore[dict-item]
    assert all(0.8 <= g <= 1.25 for m in maps.values() for g in m.gain)
    with pytest.raises(ValueError, match="strength"):
        harmonizing_maps({"a": skin_stats(photo, landmarks)}, 1.5)  # type: ignore[dict-item]


def test_too_little_skin_leaves_the_photos_alone(subject) -> None:
    photo, landmarks = subject
    tiny = landmarks * 0.01  # a face of a few pixels: no skin to measure
    photos = {"a": photo, "b": cast(photo, (0.5, 0.5, 0.5))}
    out = harmonize_photos(photos, {"a": tiny, "b": tiny}, 0.5)
    assert all(out[s] is photos[s] for s in photos)
