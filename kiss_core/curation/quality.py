"""Frame quality numbers: sharpness, exposure, compression blocking. Cheap, per sampled frame."""

from __future__ import annotations

import cv2
import numpy as np

BLOCK = 8  # JPEG / MPEG-2 / H.264 transform block (H.264 also uses 4, whose edges are a subset)


def gray(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


def sharpness(luma: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian (over `mask` when given): low for blurred frames."""
    lap = cv2.Laplacian(luma, cv2.CV_64F)
    if mask is not None:
        values = lap[mask]
        return float(values.var()) if values.size else 0.0
    return float(lap.var())


def detail_sharpness(luma: np.ndarray, down: int = 4, tile: int = 8, percentile: float = 99.0) -> float:
    """The `percentile` of per-tile variance of the Laplacian at 1/`down` size: how sharp the most
    detailed parts of the frame are.

    A whole-frame variance is dominated by smooth backdrops (a soft wall scores like a blurred face);
    the top tiles are eyes, mouths, hair and edges, and blur flattens exactly those. At 1/4 size the
    measure looks at edges a few pixels wide, not codec noise, and costs little.
    """
    if down > 1:
        small = (max(1, luma.shape[1] // down), max(1, luma.shape[0] // down))
        luma = cv2.resize(luma, small, interpolation=cv2.INTER_AREA)
    lap = cv2.Laplacian(luma, cv2.CV_32F)
    h, w = (luma.shape[0] // tile) * tile, (luma.shape[1] // tile) * tile
    if h == 0 or w == 0:
        return float(lap.var())
    tiles = lap[:h, :w].reshape(h // tile, tile, w // tile, tile)
    return float(np.percentile(tiles.var(axis=(1, 3)), percentile))


def exposure(luma: np.ndarray) -> tuple[float, float]:
    """Shares of clipped highlights (>= 250) and crushed shadows (<= 5)."""
    total = float(luma.size) or 1.0
    return float(np.count_nonzero(luma >= 250)) / total, float(np.count_nonzero(luma <= 5)) / total


def blockiness(luma: np.ndarray) -> float:
    """Mean luma step across 8x8 block edges over the mean step inside blocks (both directions).

    ~1 for clean video; heavy JPEG/MPEG blocking puts the steps on the grid (2 and more). Must be
    measured at the resolution the blocks were coded at (the source's), not after resizing.
    """
    g = luma.astype(np.float32)
    ratios = []
    for axis in (0, 1):
        steps = np.abs(np.diff(g, axis=axis)).mean(axis=1 - axis)  # (n-1,) mean step per column/row edge
        n = steps.shape[0]
        if n < 2 * BLOCK:
            continue
        on_grid = np.zeros(n, dtype=bool)
        on_grid[BLOCK - 1 :: BLOCK] = True
        inside = float(steps[~on_grid].mean())
        ratios.append(float(steps[on_grid].mean()) / max(inside, 0.5))
    return float(np.mean(ratios)) if ratios else 1.0
