"""Scene layout: matched eye distance and eye height, facing each other, inside the frame; the backdrop."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.media.geometry import apply_affine, eye_centers
from kiss_core.scene.layout import (
    MEAN_FACE_68,
    MIRROR_PERMUTATION,
    head_mask,
    layout_scene,
    shared_background,
)
from kiss_core.schemas import SubjectAnalysis
from tests.support.mean_face import mean_face_analysis

CASES = [
    # (photo a, box a, yaw a, roll a), (photo b, box b, yaw b, roll b)
    (((640, 800), (200, 260, 460, 540), 12.0, 0.0), ((480, 480), (150, 100, 290, 250), -15.0, 0.0)),
    (((1600, 1200), (300, 200, 1100, 1000), -20.0, 9.0), ((300, 400), (90, 120, 180, 215), 30.0, -12.0)),
    (((500, 500), (100, 100, 400, 420), 0.0, 0.0), ((500, 500), (100, 100, 400, 420), 0.0, 0.0)),
]


def make(case) -> dict[str, SubjectAnalysis]:
    return {
        s: mean_face_analysis(s, size, box, yaw=yaw, roll_deg=roll)
        for s, (size, box, yaw, roll) in zip(("a", "b"), case, strict=True)
    }


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("size", [(832, 480), (1280, 720), (480, 832)])
def test_eyes_matched_in_size_and_height(case, size: tuple[int, int]) -> None:
    width, height = size
    layout = layout_scene(make(case), width, height)
    eyes = {s: eye_centers(p.landmarks) for s, p in layout.placements.items()}
    distances = {s: float(np.linalg.norm(right - left)) for s, (left, right) in eyes.items()}
    assert abs(distances["a"] - distances["b"]) < 2
    assert abs(distances["a"] - layout.interocular) < 2
    for left, right in eyes.values():
        assert abs(left[1] - layout.eye_y) < 2 and abs(right[1] - layout.eye_y) < 2
    # a on the left, b on the right, a gap between the faces, everything inside the frame.
    a, b = layout.placements["a"].landmarks, layout.placements["b"].landmarks
    assert a[:, 0].max() < b[:, 0].min()
    for points in (a, b):
        assert points.min() >= 0 and points[:, 0].max() < width and points[:, 1].max() < height


def test_interocular_follows_frame_height() -> None:
    layout = layout_scene(make(CASES[0]), 832, 480)
    assert layout.interocular == pytest.approx(0.12 * 480)
    assert layout_scene(make(CASES[0]), 1280, 720).interocular == pytest.approx(0.12 * 720)


def test_mirror_decision_follows_yaw() -> None:
    layout = layout_scene(make(CASES[1]), 832, 480)  # a looks left, b looks right: both flipped
    assert layout.placements["a"].mirrored and layout.placements["b"].mirrored
    layout = layout_scene(make(CASES[0]), 832, 480)
    assert not layout.placements["a"].mirrored and not layout.placements["b"].mirrored
    # The transform itself flips (negative determinant) and maps photo landmarks to the permuted frame ones.
    analysis = make(CASES[1])["a"]
    placement = layout_scene(make(CASES[1]), 832, 480).placements["a"]
    assert np.linalg.det(placement.transform[:, :2]) < 0
    moved = apply_affine(placement.transform, np.asarray(analysis.landmarks))
    np.testing.assert_allclose(moved[MIRROR_PERMUTATION], placement.landmarks)


def test_mirror_permutation() -> None:
    perm = MIRROR_PERMUTATION
    assert sorted(perm) == list(range(68))
    np.testing.assert_array_equal(perm[perm], np.arange(68))  # an involution
    flipped = MEAN_FACE_68.copy()
    flipped[:, 0] = 2 * MEAN_FACE_68[:, 0].mean() - flipped[:, 0]
    # The mean face is nearly symmetric: flipping and re-indexing gives it back.
    assert np.abs(flipped[perm] - MEAN_FACE_68).max() < 0.03


def test_missing_subject_is_named() -> None:
    with pytest.raises(ValueError, match="'b'"):
        layout_scene({"a": mean_face_analysis("a")}, 832, 480)


def test_head_mask_covers_face_and_forehead() -> None:
    analysis = mean_face_analysis("a", (400, 500), (100, 150, 300, 350))
    points = np.asarray(analysis.landmarks)
    mask = head_mask(points, (500, 400))
    assert mask.dtype == np.float32 and mask.shape == (500, 400)
    for x, y in points[[8, 30, 36, 45, 51]].round().astype(int):
        assert mask[y, x] == 1.0
    brow_y = points[17:27, 1].min()
    assert mask[int(brow_y - 40), 200] == 1.0  # forehead / hair above the brows
    assert mask[5, 5] == 0.0 and mask[250, 395] == 0.0


def test_shared_background_is_smooth_and_neutral() -> None:
    analyses = make(CASES[0])
    rng = np.random.default_rng(0)
    photos = {
        "a": np.full((800, 640, 3), (40, 160, 60), np.uint8),
        "b": rng.integers(0, 256, (480, 480, 3), dtype=np.uint8),  # noise: must come out blurred away
    }
    layout = layout_scene(analyses, 832, 480)
    bg = shared_background(photos, layout, 832, 480)
    assert bg.shape == (480, 832, 3) and bg.dtype == np.uint8
    grad = np.abs(np.diff(bg.astype(int), axis=1)).max()
    assert grad <= 3
    # a's greenish side and b's grey side stay apart, but muted towards grey.
    left, right = bg[:, :100].reshape(-1, 3).mean(0), bg[:, -100:].reshape(-1, 3).mean(0)
    assert left[1] - left[0] > 20 and abs(right[1] - right[0]) < 15
    np.testing.assert_array_equal(bg, shared_background(photos, layout, 832, 480))
