"""The plan's camera: a slow push-in toward the point where the lips meet.

The camera is a per-frame similarity from scene pixels (what the compositor draws) to frame pixels
(what is shown): a zoom `z(t)` about a view centre `p(t)`, `frame = z * (scene - p) + (W/2, H/2)`.
Both ease (smoothstep) from the whole scene on frame 0 to `1 + push_in` and the contact point at the
end of the hold, then stay: the viewer is drawn in while the two come together and the camera rests
while they part. The view never leaves the scene (the centre is clamped so the zoomed-in window lies
inside it), so a crop-and-resize of the rendered scene (`apply_camera`) needs no border.

Kept apart from the compositor on purpose: the preview backend renders the scene as before and warps
each finished frame (cv2.warpAffine, bilinear: ~0.9 ms at 832x480 on one core), while the plan's frame-space
landmarks (quality report, pose video) carry the same map.
"""

from __future__ import annotations

import cv2
import numpy as np

TUNED_PUSH_IN = 0.08
"""The push-in the preview was tuned and measured with: 8 % closer by the end of the hold."""
DEFAULT_PUSH_IN = TUNED_PUSH_IN
"""On by default. It shipped off at first: the output check's age model read the 256x144 synthetic
peck of tests/unit/test_provenance_consent.py at a median of 25.0 with it, against the photos' 25; the
check now holds generated frames 2 years lower (safety.output_check.age_tolerance, measured on 48
jobs in docs/responsible-use.md). `generator.camera_push_in` sets it; 0 keeps the camera still."""
MAX_PUSH_IN = 0.25


def push_in(
    frame_count: int,
    width: int,
    height: int,
    start: int,
    end: int,
    target: np.ndarray,
    amount: float,
) -> np.ndarray:
    """(T, 2, 3) scene -> frame similarities: zoom to `1 + amount` about a centre moving to `target`.

    The move eases from frame `start` to frame `end` (identity before, held after). `target` is a
    scene point (x, y); the centre goes as far toward it as the zoomed window allows.
    """
    if not 0.0 <= amount <= MAX_PUSH_IN:
        raise ValueError(f"`amount` must be in 0..{MAX_PUSH_IN} but is {amount}")
    frames = np.arange(frame_count, dtype=np.float64)
    if end > start:
        u = np.clip((frames - start) / (end - start), 0.0, 1.0)
    else:
        u = (frames >= end).astype(np.float64)
    ease = u * u * (3.0 - 2.0 * u)
    zoom = 1.0 + amount * ease  # (T,)
    middle = np.array([width / 2.0, height / 2.0])
    center = middle + ease[:, None] * (np.asarray(target, dtype=np.float64) - middle)
    # The window shown, `size / zoom` wide, stays inside the scene.
    half = middle[None, :] / zoom[:, None]
    center = np.clip(center, half, np.array([width, height]) - half)
    out = np.zeros((frame_count, 2, 3))
    out[:, 0, 0] = zoom
    out[:, 1, 1] = zoom
    out[:, :, 2] = middle[None, :] - zoom[:, None] * center
    return out


def is_still(camera: np.ndarray, tolerance: float = 1e-9) -> bool:
    """True when a (2, 3) camera map is the identity (nothing to warp)."""
    return bool(np.abs(camera - np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])).max() <= tolerance)


def apply_camera(frame: np.ndarray, camera: np.ndarray) -> np.ndarray:
    """The scene frame (H, W, 3) uint8 as the camera `camera` (2, 3) sees it: a crop-and-resize, bilinear."""
    if is_still(camera):
        return frame
    height, width = frame.shape[:2]
    # Warped as four channels: OpenCV's warpAffine has a vector path for 1 and 4 channels, not for 3.
    # The same pixels (bit for bit) in 0.9 ms instead of 2.1 at 832x480 on one core, conversions included.
    warped = cv2.warpAffine(
        cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA),
        camera.astype(np.float64),
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
