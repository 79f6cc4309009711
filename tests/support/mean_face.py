"""Analyses of "no one": the mean face placed in a box, for geometry tests and drawings."""

from __future__ import annotations

import numpy as np

from kiss_core.media.geometry import eye_centers
from kiss_core.scene.layout import MEAN_FACE_68
from kiss_core.schemas import FaceQuality, Pose, SubjectAnalysis


def mean_face_analysis(
    subject: str,
    image_size: tuple[int, int] = (480, 640),
    face_box: tuple[float, float, float, float] | None = None,
    yaw: float = 0.0,
    roll_deg: float = 0.0,
) -> SubjectAnalysis:
    """A SubjectAnalysis of the mean face placed in `face_box` of an image (width, height) — no person at all.

    For geometry tests and synthetic drawings. A non-zero yaw only shifts the inner face towards the
    side it turns to (a crude foreshortening), which is enough for the mirroring decision.
    """
    width, height = image_size
    x0, y0, x1, y1 = face_box or (0.3 * width, 0.3 * height, 0.7 * width, 0.3 * height + 0.4 * width)
    shape = MEAN_FACE_68.copy()
    inner = np.r_[17:68]
    shape[inner, 0] += 0.25 * np.sin(np.deg2rad(yaw)) * (1 - np.abs(shape[inner, 0] - 0.5))
    points = np.c_[x0 + shape[:, 0] * (x1 - x0), y0 + shape[:, 1] / 1.06 * (y1 - y0)]
    if roll_deg:
        theta = np.deg2rad(roll_deg)
        centre = points.mean(axis=0)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        points = (points - centre) @ rot.T + centre
    left, right = eye_centers(points)
    return SubjectAnalysis(
        subject=subject,
        image_width=width,
        image_height=height,
        faces_found=1,
        box=(float(x0), float(y0), float(x1), float(y1)),
        landmarks=[(float(x), float(y)) for x, y in points],
        pose=Pose(yaw=yaw, pitch=0.0, roll=roll_deg),
        quality=FaceQuality(
            face_width_px=float(x1 - x0),
            interocular_px=float(np.hypot(*(right - left))),
            blur=100.0,
            brightness=128.0,
            clipped=0.0,
            frontalness=float(np.cos(np.deg2rad(yaw))),
        ),
        embedding=[0.0] * 128,
    )
