"""The contact region of a clip, from its landmark tracks, on the transformer's latent token grid.

Per frame: both people's outer lips (landmarks 48-59) and the band where the two faces meet (each face's
convex hull, grown by the dilation, intersected with the other's), then all of it grown by the dilation
(`mask_dilation` x mean face width). Wan's VAE turns frame 0 into latent frame 0 and frames 4t-3..4t into
latent frame t, and each transformer token covers 2x2 latent pixels (16x16 frame pixels): a token is in
the region when any of its pixels is, in any of its frames. The loss weight of a token is
1 + (contact_weight - 1) * mask, so 1 turns the weighting off and tokens outside stay at exactly 1.
"""

from __future__ import annotations

import cv2
import numpy as np

OUTER_LIPS = slice(48, 60)


def _fill(shape: tuple[int, int], points: np.ndarray, hull: bool) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    polygon = cv2.convexHull(points.astype(np.float32)) if hull else points
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32).reshape(-1, 1, 2)], 1)
    return mask


def _grow(mask: np.ndarray, radius: float) -> np.ndarray:
    r = round(radius)
    if r <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def contact_mask(
    landmarks: np.ndarray, valid: np.ndarray, width: int, height: int, dilation: float
) -> np.ndarray:
    """(H, W) uint8 0/1 of one frame: lips of each valid person and the band where the two faces meet."""
    shape = (height, width)
    people = [landmarks[p] for p in range(landmarks.shape[0]) if valid[p]]
    mask = np.zeros(shape, np.uint8)
    if not people:
        return mask
    widths = [float(np.linalg.norm(p[16] - p[0])) for p in people]
    radius = dilation * float(np.mean(widths))
    for points in people:
        mask |= _fill(shape, points[OUTER_LIPS], hull=False)
    if len(people) == 2:
        hulls = [_grow(_fill(shape, p, hull=True), radius) for p in people]
        mask |= hulls[0] & hulls[1]
    return _grow(mask, radius)


def lip_masks(landmarks: np.ndarray, width: int, height: int, dilation: float = 0.0) -> np.ndarray:
    """(F, H, W) uint8: every person's outer lips in each frame of (F, P, 68, 2) landmarks, grown by
    `dilation` x the face width (the inference-time attention bias's region)."""
    masks = np.zeros((landmarks.shape[0], height, width), np.uint8)
    for frame, people in enumerate(landmarks):
        for points in people:
            masks[frame] |= _fill((height, width), points[OUTER_LIPS], hull=False)
        width_px = float(np.mean([np.linalg.norm(p[16] - p[0]) for p in people])) if len(people) else 0.0
        masks[frame] = _grow(masks[frame], dilation * width_px)
    return masks


def pixel_masks(
    landmarks: np.ndarray | None,
    valid: np.ndarray | None,
    frames: int,
    width: int,
    height: int,
    dilation: float,
) -> np.ndarray:
    """(F, H, W) uint8 per-frame contact masks; all zero without tracks."""
    if landmarks is None or valid is None:
        return np.zeros((frames, height, width), np.uint8)
    return np.stack([contact_mask(landmarks[i], valid[i], width, height, dilation) for i in range(frames)])


def token_mask(masks: np.ndarray, temporal: int = 4, spatial: int = 16) -> np.ndarray:
    """(T_lat, H/spatial, W/spatial) float32 0/1: a token is in when any pixel of any of its frames is."""
    frames, height, width = masks.shape
    if (frames - 1) % temporal or height % spatial or width % spatial:
        raise ValueError(
            f"masks of {frames} frames {width}x{height} do not map to a {temporal}x{spatial}x{spatial} latent"
            " token grid (frames 4k+1, sides divisible by 16)"
        )
    groups = [masks[:1]] + [
        masks[1 + temporal * t : 1 + temporal * (t + 1)] for t in range((frames - 1) // temporal)
    ]
    per_latent = np.stack([g.max(axis=0) for g in groups])
    tokens = per_latent.reshape(len(groups), height // spatial, spatial, width // spatial, spatial).max(
        axis=(2, 4)
    )
    return tokens.astype(np.float32)


def latent_weights(tokens: np.ndarray, contact_weight: float, patch: tuple[int, int] = (2, 2)) -> np.ndarray:
    """(1, T_lat, H_lat, W_lat) float32 loss weights on the latent grid: each token's weight on its patch."""
    weights = 1.0 + (contact_weight - 1.0) * tokens
    weights = np.repeat(np.repeat(weights, patch[0], axis=1), patch[1], axis=2)
    return weights[None].astype(np.float32)
