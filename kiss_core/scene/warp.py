"""A fast landmark-driven image warp: piecewise-affine over a triangulation fixed once per subject.

`PiecewiseAffineWarp(source_points)` triangulates the source points (landmarks plus anchors:
forehead and hair, a ring around the head, the layer's corners) once. Per frame, `warp` takes the
target positions of the same points and an output window, and builds the backward map in three
vectorised steps: one 3x3 solve per triangle (all at once), a triangle-index image (one
`cv2.fillConvexPoly` per triangle, sub-pixel vertices), and a gather of the six affine
coefficients per pixel. `cv2.remap` then samples the source. Pixels no target triangle covers
come out transparent (zero). The map is exact and continuous across triangle edges, so a
sub-pixel move of the targets moves the output by the same sub-pixel amount: no shimmer.

The triangle-index image comes back with the warped window, so a per-point value (a depth) can be
interpolated linearly over the same triangles afterwards, on as much of the window as is needed
(`interpolate`): the compositor orders two heads per pixel only where both are drawn.
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
    triangles: np.ndarray | None = None  # (h, w) uint16: 1 + the triangle drawn at each pixel, 0 none


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

    def _target_frames(self, target_points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per target triangle its first corner (K, 2), its edge matrix's inverse (K, 2, 2), det (K,)."""
        dst = np.asarray(target_points, dtype=np.float64)[self.triangles]  # (K, 3, 2)
        e1, e2 = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        safe = np.where(np.abs(det) > 1e-9, det, 1.0)
        # Inverse of the 2x2 [e1 e2]: barycentric (s, t) = inv @ (p - d0).
        inv = np.stack([np.stack([e2[:, 1], -e2[:, 0]], -1), np.stack([-e1[:, 1], e1[:, 0]], -1)], -2)
        inv /= safe[:, None, None]
        return dst[:, 0], inv, det

    def coefficients(self, target_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per triangle the affine target->source (K, 2, 3), and the signed target areas (K,)."""
        d0, inv, det = self._target_frames(target_points)
        # source = S0 + [s1-s0, s2-s0] @ inv @ (p - d0).
        src = self._src_tri
        basis = np.stack([src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], axis=-1)  # (K, 2, 2) columns
        linear = basis @ inv
        shift = src[:, 0] - (linear @ d0[..., None])[..., 0]
        return np.concatenate([linear, shift[..., None]], axis=-1), det / 2

    def planes(self, target_points: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(K, 3) per target triangle (a, b, c): the value at pixel (x, y) is a x + b y + c, linear
        between the per-point `values` (N,) at its corners."""
        d0, inv, _ = self._target_frames(target_points)
        v = np.asarray(values, dtype=np.float64)[self.triangles]  # (K, 3)
        gradient = np.einsum("ki,kij->kj", v[:, 1:] - v[:, :1], inv)  # (K, 2)
        return np.concatenate([gradient, (v[:, 0] - (gradient * d0).sum(axis=1))[:, None]], axis=1)

    def interpolate(
        self,
        values: np.ndarray,
        target_points: np.ndarray,
        result: WarpResult,
        window: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """float32 (h, w): per-point `values` (N,) interpolated over the triangles `result` drew.

        `window` (x0, y0, x1, y1), in the target image, must lie within `result`'s window; by default
        all of it. Pixels no triangle covers read 0.
        """
        if result.triangles is None:
            raise ValueError("`result` has no triangle index: it does not come from `warp`")
        ox, oy = result.origin
        h, w = result.triangles.shape
        x0, y0, x1, y1 = (ox, oy, ox + w, oy + h) if window is None else window
        if not (ox <= x0 <= x1 <= ox + w and oy <= y0 <= y1 <= oy + h):
            raise ValueError(
                f"`window` {window} must lie within the warped window {(ox, oy, ox + w, oy + h)}"
            )
        table = np.zeros((len(self.triangles) + 1, 3), dtype=np.float32)
        planes = self.planes(target_points, values)
        planes[:, 2] += planes[:, 0] * x0 + planes[:, 1] * y0  # window pixel -> absolute coordinates
        table[1:] = planes
        index = result.triangles[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        out = table[:, 0].take(index) * np.arange(x1 - x0, dtype=np.float32)[None, :]
        out += table[:, 1].take(index) * np.arange(y1 - y0, dtype=np.float32)[:, None]
        out += table[:, 2].take(index)
        return out

    def maps(
        self, target_points: np.ndarray, origin: tuple[int, int], size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """float32 (h, w) source x and y for each pixel of the window at `origin` (x, y) of `size` (w, h).

        Pixels outside every target triangle map to (-1, -1) (outside the source: transparent).
        """
        map_x, map_y, _ = self._maps(target_points, origin, size)
        return map_x, map_y

    def _maps(
        self,
        target_points: np.ndarray,
        origin: tuple[int, int],
        size: tuple[int, int],
        depths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`maps`, and the triangle-index image they were gathered with."""
        width, height = size
        ox, oy = origin
        target = np.asarray(target_points, dtype=np.float64)
        affines, areas = self.coefficients(target)
        index = np.zeros((height, width), dtype=np.uint16)
        fixed = np.round((target[self.triangles] - (ox, oy)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        if depths is None:
            # Largest first, so the thin (folded or closing) triangles drawn last win their pixels.
            order = np.argsort(-np.abs(areas), kind="stable")
        else:
            # Farthest first: where the mesh folds (lips or nose standing off past the far cheek),
            # the nearer surface wins its pixels, as it would in 3-D.
            nearness = np.asarray(depths, dtype=np.float64)[self.triangles].mean(axis=1)
            order = np.argsort(nearness, kind="stable")
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
        return map_x, map_y, index

    def warp(
        self,
        image: np.ndarray,
        target_points: np.ndarray,
        output_size: tuple[int, int] | None = None,
        window: tuple[int, int, int, int] | None = None,
        depths: np.ndarray | None = None,
    ) -> WarpResult:
        """Warp `image` so that source points land on `target_points`.

        `window` (x0, y0, x1, y1) in the target image; by default the targets' bounding box,
        clipped to `output_size` (w, h) when given. Uncovered pixels are zero. `depths` (N,), the
        points' distances towards the camera, decide which of two overlapping (folded) triangles
        shows: the nearer. The result keeps the triangle index, for `interpolate`.
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
        map_x, map_y, index = self._maps(target, (int(x0), int(y0)), (int(x1 - x0), int(y1 - y0)), depths)
        warped = cv2.remap(
            image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        return WarpResult(warped, (int(x0), int(y0)), index)
