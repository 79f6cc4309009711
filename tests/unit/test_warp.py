"""The piecewise-affine warp: identity, affine exactness, sub-pixel moves, transparency outside the mesh."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiss_core.scene.warp import PiecewiseAffineWarp, border_points, delaunay


@pytest.fixture(scope="module")
def layer() -> tuple[np.ndarray, np.ndarray]:
    """A seeded textured RGBA image and a mesh: random inner points plus the border."""
    rng = np.random.default_rng(7)
    image = cv2.GaussianBlur((rng.random((180, 220, 4)) * 255).astype(np.uint8), (0, 0), 1.5)
    h, w = image.shape[:2]
    points = np.r_[rng.random((70, 2)) * [w - 40, h - 40] + 20, border_points(w, h)]
    return image, points


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def test_delaunay_covers_the_hull(layer) -> None:
    _, points = layer
    triangles = delaunay(points)
    assert triangles.shape[1] == 3 and len(triangles) > len(points)
    hull_area = cv2.contourArea(cv2.convexHull(points.astype(np.float32)))
    tri = points[triangles]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    areas = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) / 2
    assert areas.sum() == pytest.approx(hull_area, rel=1e-6)


def test_identity_targets_reproduce_the_input(layer) -> None:
    image, points = layer
    result = PiecewiseAffineWarp(points).warp(image, points, window=(0, 0, image.shape[1], image.shape[0]))
    assert result.origin == (0, 0) and result.image.shape == image.shape
    assert psnr(result.image[2:-2, 2:-2], image[2:-2, 2:-2]) > 40


@pytest.mark.parametrize("matrix", [[[0.9, -0.2, 30], [0.25, 1.05, 10]], [[-1.0, 0, 240], [0, 1.1, 5.5]]])
def test_affine_targets_equal_warp_affine(layer, matrix) -> None:
    """Moving all points by one affine (a mirror included) is that affine, to rounding."""
    image, points = layer
    affine = np.array(matrix)
    result = PiecewiseAffineWarp(points).warp(
        image, points @ affine[:, :2].T + affine[:, 2], window=(0, 0, 300, 260)
    )
    reference = cv2.warpAffine(image, affine, (300, 260), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones(image.shape[:2], np.uint8), affine, (300, 260), flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, np.ones((5, 5), np.uint8)) > 0
    assert inside.sum() > 0.5 * image.shape[0] * image.shape[1]
    assert np.abs(result.image.astype(int) - reference)[inside].max() <= 2


def test_sub_pixel_moves_are_sub_pixel(layer) -> None:
    """Shifting the targets by 0.25 px shifts the image by 0.25 px: no snapping, no shimmer."""
    image, points = layer
    warp = PiecewiseAffineWarp(points)
    shifted = warp.warp(image, points + np.array([0.25, 0.0]), window=(0, 0, 220, 180)).image
    reference = cv2.warpAffine(
        image, np.array([[1.0, 0, 0.25], [0, 1, 0]]), (220, 180), flags=cv2.INTER_LINEAR
    )
    assert np.abs(shifted[3:-3, 3:-3].astype(int) - reference[3:-3, 3:-3]).max() <= 1


def test_outside_the_mesh_is_transparent_and_windows_clip(layer) -> None:
    image, points = layer
    warp = PiecewiseAffineWarp(points)
    small = points * 0.5 + 40
    result = warp.warp(image, small, window=(0, 0, 200, 200))
    assert result.image[:30, :30].max() == 0 and result.image[-30:, -30:].max() == 0
    assert result.image[60:100, 60:100, 3].min() > 0
    clipped = warp.warp(image, points - 50, output_size=(100, 100))
    assert clipped.origin == (0, 0) and clipped.image.shape[:2] == (100, 100)
    with pytest.raises(ValueError, match="target_points"):
        warp.warp(image, points[:-1])


def test_collapsed_triangles_leave_no_holes(layer) -> None:
    """A band collapsed to zero height (a closed eyelid) leaves the mesh around it gap-free."""
    image, points = layer
    opaque = image.copy()
    opaque[..., 3] = 255
    targets = points.copy()
    band = (points[:, 1] > 80) & (points[:, 1] < 100) & (points[:, 0] > 20) & (points[:, 0] < 200)
    targets[band, 1] = 100.0
    result = PiecewiseAffineWarp(points).warp(opaque, targets, window=(0, 0, 220, 180))
    assert result.image[2:-2, 2:-2, 3].min() == 255
