"""The plan as a pose control video: each subject's 68 landmarks drawn as a skeleton on black, per frame.

This is the pose guidance a diffusion backend (e.g. VACE with a pose control video) consumes: the
same frame size and count as the plan, one colour per subject, the iBUG-68 groups drawn as
polylines (jaw, brows, nose bridge and base, eyes and lips closed), anti-aliased at sub-pixel
precision so slow motion stays smooth.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from kiss_core.scene.choreography import KissPlan

# (first, last + 1, closed) per polyline of the iBUG-68 layout.
SKELETON: tuple[tuple[int, int, bool], ...] = (
    (0, 17, False),  # jaw
    (17, 22, False),  # brow, image left
    (22, 27, False),  # brow, image right
    (27, 31, False),  # nose bridge
    (31, 36, False),  # nose base
    (36, 42, True),  # eye, image left
    (42, 48, True),  # eye, image right
    (48, 60, True),  # outer lips
    (60, 68, True),  # inner lips
)
COLOURS: dict[str, tuple[int, int, int]] = {"a": (255, 96, 64), "b": (64, 160, 255)}  # RGB
_SHIFT = 4  # sub-pixel bits for cv2 drawing


def skeleton_polylines(landmarks: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """The polylines (points (n, 2), closed) of one face's 68 landmarks."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"`landmarks` must be (68, 2) but is {points.shape}")
    return [(points[a:b], closed) for a, b, closed in SKELETON]


def draw_pose(
    frame: np.ndarray, landmarks: np.ndarray, colour: tuple[int, int, int], thickness: int = 2
) -> None:
    """Draw one face's skeleton onto `frame` (H, W, 3) uint8, in place."""
    for points, closed in skeleton_polylines(landmarks):
        fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
        cv2.polylines(frame, [fixed], closed, colour, thickness, cv2.LINE_AA, _SHIFT)


def render_pose_frames(plan: KissPlan, background: int = 0, thickness: int = 2) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8, one per plan frame: both skeletons on a flat `background` grey level."""
    if not 0 <= background <= 255:
        raise ValueError(f"`background` must be in 0..255 but is {background}")
    if thickness < 1:
        raise ValueError(f"`thickness` must be >= 1 but is {thickness}")
    for t in range(plan.frame_count):
        frame = np.full((plan.height, plan.width, 3), background, dtype=np.uint8)
        for subject in ("a", "b"):
            draw_pose(frame, plan.tracks[subject].landmarks[t], COLOURS[subject], thickness)
        yield frame
