"""The contact region of a clip, from its landmark tracks, on the transformer's latent token grid.

Per frame: both people's outer lips (landmarks 48-59) and the band where the two faces meet (each face's
convex hull, grown by the dilation, intersected with the other's), then all of it grown by the dilation
(`mask_dilation` x mean face width). Wan's VAE turns frame 0 into latent frame 0 and frames 4t-3..4t into
latent frame t, and each transformer token covers 2x2 latent pixels (16x16 frame pixels): a token is in
the region when any of its pixels is, in any of its frames (`token_mask`, with the polygon helpers, lives in
kiss_core.generation.backends.lip_attention: the inference-time lip attention bias maps its masks the same
way). The loss weight of a token is 1 + (contact_weight - 1) * mask, so 1 turns the weighting off and tokens
outside stay at exactly 1.
"""

from __future__ import annotations

import numpy as np

from kiss_core.generation.backends.lip_attention import OUTER_LIPS, fill_mask, grow_mask, token_mask

# token_mask is re-exported for callers of the old path (tests/training/test_training_core.py).
__all__ = ["contact_mask", "latent_weights", "pixel_masks", "token_mask"]


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
        mask |= fill_mask(shape, points[OUTER_LIPS], hull=False)
    if len(people) == 2:
        hulls = [grow_mask(fill_mask(shape, p, hull=True), radius) for p in people]
        mask |= hulls[0] & hulls[1]
    return grow_mask(mask, radius)


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


def latent_weights(tokens: np.ndarray, contact_weight: float, patch: tuple[int, int] = (2, 2)) -> np.ndarray:
    """(1, T_lat, H_lat, W_lat) float32 loss weights on the latent grid: each token's weight on its patch."""
    weights = 1.0 + (contact_weight - 1.0) * tokens
    weights = np.repeat(np.repeat(weights, patch[0], axis=1), patch[1], axis=2)
    return weights[None].astype(np.float32)
