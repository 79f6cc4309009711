"""A fast landmark-driven image warp: piecewise-affine over a triangulation fixed once per subject.

`PiecewiseAffineWarp(source_points)` triangulates the source points (landmarks plus anchors:
forehead and hair, a ring around the head, the layer's corners) once. Per frame, `warp` takes the
target positions of the same points and an output window, and builds the backward map in three
vectorised steps: one 3x3 solve per triangle (all at once), a triangle-index image (one
`cv2.fillConvexPoly` per triangle, sub-pixel vertices), and a gather of the six affine
coefficients per pixel. `cv2.remap` then samples the source. Pixels no target triangle covers
come out transparent (zero). The map is exact and continuous across triangle edges, so a
sub-pixel move of the targets moves the output by the same sub-pixel amount: no shimmer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SUBPIXEL_BITS = 4  # vertex precision of the rasteriser: 1/16 pixel


def border_points(width: int, height: int) -> np.ndarray:
    """(8, 2) anchors on a width x height layer's edge (corners, then mid-edges) that pin it in the mesh."""
    w, h = width, height
    return np.array(
        [
            [0, 0],
            [w - 1, 0],
            [0, h - 1],
            [w - 1, h - 1],
            [w / 2, 0],
            [w / 2, h - 1],
            [0, h / 2],
            [w - 1, h / 2],
        ]
    )


def delaunay(points: np.ndarray) -> np.ndarray:
    """(K, 3) vertex indices of the Delaunay triangles of distinct points (N, 2)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"`points` must be (N >= 3, 2) but is {points.shape}")
    lo, hi = points.min(axis=0) - 1, points.max(axis=0) + 1
    subdiv = cv2.Subdiv2D((float(lo[0]), float(lo[1]), float(hi[0] - lo[0] + 1), float(hi[1] - lo[1] + 1)))
    ids = [subdiv.insert((float(x), float(y))) for x, y in points]
    # Subdiv2D numbers vertices from 4 (0..3 are its virtual outer triangle); duplicates share an id.
    index_of = {vid: i for i, vid in reversed(list(enumerate(ids)))}
    triangles = []
    for x0, y0, x1, y1, x2, y2 in subdiv.getTriangleList():
        corner_ids = []
        for x, y in ((x0, y0), (x1, y1), (x2, y2)):
            vid, _ = subdiv.findNearest((float(x), float(y)))
            corner_ids.append(index_of.get(vid, -1))
        if min(corner_ids) >= 0 and len(set(corner_ids)) == 3:
            triangles.append(corner_ids)
    return np.asarray(triangles, dtype=np.intp).reshape(-1, 3)


@dataclass(frozen=True)
class WarpResult:
    image: np.ndarray  # (h, w, C) the warped window
    origin: tuple[int, int]  # (x, y) of the window's top-left pixel in the target image


class PiecewiseAffineWarp:
    """Backward piecewise-affine warp from fixed source points onto per-frame targets."""

    def __init__(self, source_points: np.ndarray, triangles: np.ndarray | None = None):
        self.source = np.asarray(source_points, dtype=np.float64)
        self.triangles = delaunay(self.source) if triangles is None else np.asarray(triangles, dtype=np.intp)
        if len(self.triangles) == 0:
            raise ValueError("no triangles: the source points are collinear or too few")
        if len(self.triangles) > 65534:
            raise ValueError(f"at most 65534 triangles but got {len(self.triangles)}")
        self._src_tri = self.source[self.triangles]  # (K, 3, 2)

    def coefficients(self, target_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per triangle the affine target->source (K, 2, 3), and the signed target areas (K,)."""
        dst = np.asarray(target_points, dtype=np.float64)[self.triangles]  # (K, 3, 2)
        e1, e2 = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        safe = np.where(np.abs(det) > 1e-9, det, 1.0)
        # Inverse of the 2x2 [e1 e2], then source = S0 + [s1-s0, s2-s0] @ inv @ (p - d0).
        inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], -1), np.stack([-e1[:, 1], e1[:, 0]], -1)], -2)
        inv /= safe[:, None, None]
        src = self._src_tri
        basis = np.stack([src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], axis=-1)  # (K, 2, 2) columns
        linear = basis @ inv
        shift = src[:, 0] - (linear @ dst[:, 0, :, None])[..., 0]
        return np.concatenate([linear, shift[..., None]], axis=-1), det / 2

    def maps(
        self, target_points: np.ndarray, origin: tuple[int, int], size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 (h, w) source x and y for each pixel of the window at `origin` (x, y) of `size` (w, h).

        Pixels outside every target triangle map to (-1, -1) (outside the source: transparent).
        """
        width, height = size
        ox, oy = origin
        target = np.asarray(target_points, dtype=np.float64)
        affines, areas = self.coefficients(target)
        index = np.zeros((height, width), dtype=np.uint16)
        fixed = np.round((target[self.triangles] - (ox, oy)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        # Largest first, so the thin (folded or closing) triangles drawn last win their pixels.
        order = np.argsort(-np.abs(areas), kind="stable")
        for k in order[np.abs(areas[order]) > 1e-6].tolist():
            cv2.fillConvexPoly(index, fixed[k], k + 1, cv2.LINE_8, _SUBPIXEL_BITS)
        # Rasterisation can leave a pixel between two triangles uncovered: take a neighbour's triangle
        # (the affines agree on shared edges, so extrapolating by a pixel is exact to rounding).
        holes = index == 0
        if holes.any():
            index = np.where(holes, cv2.dilate(index, np.ones((3, 3), np.uint8)), index)
        table = np.zeros((len(affines) + 1, 6), dtype=np.float32)
        table[1:] = affines.reshape(-1, 6)
        table[0] = (0, 0, -1, 0, 0, -1)  # uncovered: sample at (-1, -1)
        table[1:, 2] += table[1:, 0] * ox + table[1:, 1] * oy  # window pixel -> absolute coordinates
        table[1:, 5] += table[1:, 3] * ox + table[1:, 4] * oy
        xs = np.arange(width, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        c = [table[:, i].take(index) for i in range(6)]
        # In place, in the same order as c0 * x + c1 * y + c2 (bit-identical, fewer temporaries).
        map_x = c[0] * xs
        map_x += c[1] * ys
        map_x += c[2]
        map_y = c[3] * xs
        map_y += c[4] * ys
        map_y += c[5]
        return map_x, map_y

    def warp(
        self,
        image: np.ndarray,
        target_points: np.ndarray,
        output_size: tuple[int, int] | None = None,
        window: tuple[int, int, int, int] | None = None,
    ) -> WarpResult:
        """Warp `image` so that source points land on `target_points`.

        `window` (x0, y0, x1, y1) in the target image; by default the targets' bounding box,
        clipped to `output_size` (w, h) when given. Uncovered pixels are zero.
        """
        target = np.asarray(target_points, dtype=np.float64)
        if target.shape != self.source.shape:
            raise ValueError(f"`target_points` must have shape {self.source.shape} but has {target.shape}")
        if window is None:
            x0, y0 = np.floor(target.min(axis=0)).astype(int)
            x1, y1 = np.ceil(target.max(axis=0)).astype(int) + 1
        else:
            x0, y0, x1, y1 = window
        if output_size is not None:
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(x1, output_size[0]), min(y1, output_size[1])
        if x1 <= x0 or y1 <= y0:
            return WarpResult(np.zeros((0, 0, *image.shape[2:]), image.dtype), (int(x0), int(y0)))
        map_x, map_y = self.maps(target, (int(x0), int(y0)), (int(x1 - x0), int(y1 - y0)))
        warped = cv2.remap(
            image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        return WarpResult(warped, (int(x0), int(y0)))
