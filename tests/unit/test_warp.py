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


def test_values_interpolate_linearly_over_the_drawn_triangles(layer) -> None:
    """A per-point value that is a plane in the target (a depth) reads back as that plane at every pixel."""
    image, points = layer
    targets = points * 1.1 + (4.3, -2.6)
    values = 0.7 * targets[:, 0] - 0.25 * targets[:, 1] + 12.0
    mesh = PiecewiseAffineWarp(points)
    result = mesh.warp(image, targets, output_size=(260, 200))
    (x0, y0), (h, w) = result.origin, result.image.shape[:2]
    window = (x0 + 30, y0 + 25, x0 + w - 30, y0 + h - 25)  # well inside the mesh
    plane = mesh.interpolate(values, targets, result, window)
    ys, xs = np.mgrid[window[1] : window[3], window[0] : window[2]]
    np.testing.assert_allclose(plane, 0.7 * xs - 0.25 * ys + 12.0, atol=1e-3)
    with pytest.raises(ValueError, match="window"):
        mesh.interpolate(values, targets, result, (x0 - 1, y0, x0 + 5, y0 + 5))


def test_where_the_mesh_folds_the_nearer_triangle_shows() -> None:
    """Two triangles folded over each other: with depths, the nearer one's pixels win, either way round."""
    source = np.array([[0.0, 0], [40, 0], [20, 40], [60, 40]])
    triangles = np.array([[0, 1, 2], [1, 3, 2]])
    image = np.zeros((41, 61, 3), np.uint8)
    image[:, :30] = (255, 0, 0)  # the first triangle lies on red, the second reaches into green
    image[:, 30:] = (0, 255, 0)
    mesh = PiecewiseAffineWarp(source, triangles)
    folded = source.copy()
    folded[3] = (5, 40)  # the second triangle swings back over the first
    for near, colour in ((np.array([0, 0, 0, 10.0]), 1), (np.array([10, 10, 10, 0.0]), 0)):
        result = mesh.warp(image, folded, window=(0, 0, 61, 41), depths=near)
        pixel = result.image[30, 20]  # inside both: red through the first, green through the second
        assert pixel.argmax() == colour, (near, pixel)
