"""The canonical chip, the views and the JPEG deblocking of kiss_core.safety.age_views, on their own."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kiss_core.faces.synthetic import synthetic_subject
from kiss_core.safety import age_views


@pytest.fixture(scope="module")
def ellipse() -> np.ndarray:
    return age_views.face_ellipse(64)


def _chip(seed: int = 0) -> np.ndarray:
    """A skin-coloured 64x64 patch with texture: luma about 110 +- 20, a reddish cast."""
    rng = np.random.default_rng(seed)
    luma = np.clip(110 + 20 * rng.standard_normal((64, 64)), 40, 180)
    return np.clip(luma[..., None] + np.array([30.0, -8.0, -35.0]), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.array(Image.open(buffer).convert("RGB"))


def _five(centre: tuple[float, float] = (240.0, 280.0), eyes: float = 100.0) -> np.ndarray:
    x, y = centre
    return np.array(
        [[x + eyes / 2, y], [x + eyes / 6, y], [x - eyes / 2, y], [x - eyes / 6, y], [x, y + eyes / 2]]
    )


def test_the_canonical_chip_does_not_move_with_brightness_or_contrast(ellipse: np.ndarray) -> None:
    chip = _chip()
    canonical = age_views.canonical_chip(chip, ellipse).astype(int)
    brighter = np.clip(chip.astype(np.float32) * 1.2 + 5, 0, 255).astype(np.uint8)
    assert np.abs(age_views.canonical_chip(brighter, ellipse).astype(int) - canonical).max() <= 4
    luma = canonical @ age_views.LUMA
    assert luma[ellipse].mean() == pytest.approx(age_views.CANONICAL_LUMA_MEAN, abs=1.5)
    assert luma[ellipse].std() == pytest.approx(age_views.CANONICAL_LUMA_STD, abs=1.5)


def test_a_grey_chip_gets_the_skin_tint_and_a_colour_one_keeps_part_of_its_local_colour(
    ellipse: np.ndarray,
) -> None:
    chip = _chip()
    grey = np.repeat(np.rint(chip.astype(np.float32) @ age_views.LUMA).astype(np.uint8)[..., None], 3, axis=2)
    tinted = age_views.canonical_chip(grey, ellipse).astype(np.float32)
    chroma = tinted - (tinted @ age_views.LUMA)[..., None]
    # Same tint everywhere inside the face (clipping aside), the canonical skin colour.
    inside = chroma[ellipse & (tinted.min(axis=2) > 0) & (tinted.max(axis=2) < 255)]
    assert np.abs(inside.mean(axis=0) - age_views.CANONICAL_SKIN_CHROMA).max() < 1.5
    # A colour chip's average cast is replaced by the same tint: its canonical form is near the grey one's.
    assert np.abs(age_views.canonical_chip(chip, ellipse).astype(np.float32) - tinted)[ellipse].mean() < 6
    assert (
        age_views.canonical_chip(np.zeros((64, 64, 3), np.uint8), ellipse).dtype == np.uint8
    )  # flat: no crash


def test_the_views_are_four_shifts_of_the_points_by_at_least_a_pixel() -> None:
    five = _five(eyes=100.0)
    offsets = {tuple(np.unique(v - five, axis=0)[0]) for v in age_views.view_points(five)}
    assert offsets == {(3.0, 0.0), (-3.0, 0.0), (0.0, 3.0), (0.0, -3.0)}  # 3 % of the 100 px eye distance
    small = _five(eyes=10.0)
    assert all(float(np.abs(v - small).max()) == 1.0 for v in age_views.view_points(small))


def test_jpeg_blocking_is_found_on_its_grid_and_only_there() -> None:
    photo = synthetic_subject(0)
    five = _five()
    assert age_views.jpeg_blockiness(photo, five)[0] < age_views.BLOCKINESS_THRESHOLD
    assert age_views.jpeg_blockiness(_jpeg(photo, 90), five)[0] < age_views.BLOCKINESS_THRESHOLD
    ratio, phase_x, phase_y = age_views.jpeg_blockiness(_jpeg(photo, 10), five)
    assert ratio > 2 * age_views.BLOCKINESS_THRESHOLD and (phase_x, phase_y) == (7, 7)
    # Cropped after compression by (3, 5) pixels: the grid moves with the crop.
    ratio, phase_x, phase_y = age_views.jpeg_blockiness(_jpeg(photo, 10)[5:, 3:], five - (3, 5))
    assert ratio > age_views.BLOCKINESS_THRESHOLD and (phase_x, phase_y) == (4, 2)
    assert age_views.jpeg_blockiness(photo[:20, :20], _five((10, 10), 8))[0] == 0.0  # too small to tell


def test_deblocking_smooths_the_block_edges_of_heavy_jpeg_and_leaves_other_photos_alone() -> None:
    photo = synthetic_subject(1)
    five = _five(eyes=40.0)
    assert age_views.deblocked_if_blocky(photo, five) is photo
    blocky = _jpeg(photo, 10)
    smoothed = age_views.deblocked_if_blocky(blocky, five)
    assert smoothed is not blocky and smoothed.shape == blocky.shape
    before = age_views.jpeg_blockiness(blocky, five)[0]
    after = age_views.jpeg_blockiness(smoothed, five)[0]
    assert after < before / 2
    # Only the face's surroundings (3 eye distances each way) are touched.
    assert np.array_equal(smoothed[:, :100], blocky[:, :100]) and not np.array_equal(smoothed, blocky)
