"""Depth on the head model: how far each point of a turned head stands towards the camera.

The choreography turns a head on a vertical cylinder around its axis (`turned_angles`, used by
kiss_core.scene.choreography.turn_points): a point of the upright face at angle phi goes to
psi = phi + turn * cos(phi), which keeps the silhouette where it is and never folds. On the
cylinder's surface that point lies cos(psi) radii in front of the axis plane — 1 in the middle of a
frontal face, 0 at the silhouette — so a far cheek that the turn compresses towards the silhouette
also turns away in depth. Nose, lips and chin stand off the surface (`STANDOFF`) along the face's
direction, which the turn tilts away from the camera by cos(turn).

Why: a 2-D compositor that pastes one face over the other, or fades it into the other, leaves a
seam across the back face. Ordering the two heads per pixel by this depth (interpolated over their
mesh triangles, kiss_core.scene.render) draws whichever surface is nearer, with an
anti-aliased edge a pixel or two wide where the depths cross (`coverage`): the occluding contour
runs along the front face's cheek as it turns away, and the back face is hidden where it is behind.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiss_core.media.geometry import MOUTH

# How far points stand off the head cylinder towards the camera, in head radii: nose, lips, chin.
STANDOFF = np.zeros(68)
STANDOFF[27:36] = (0.04, 0.10, 0.16, 0.22, 0.08, 0.12, 0.14, 0.12, 0.08)
STANDOFF[6:11] = (0.02, 0.05, 0.06, 0.05, 0.02)
STANDOFF[MOUTH] = 0.14
STANDOFF[[48, 54, 60, 64]] = 0.06
PUCKER_STANDOFF = 0.08  # extra lip stand-off at pucker 1

MAX_TURN_RAD = 0.9  # the cylinder mapping stays monotone (no fold) below 1 rad

# The front head's axis stands this many of its radii nearer the camera than the back head's: in a
# kiss seen three-quarter the nearer head covers the partner's far cheek, and its own far cheek,
# turning away, goes behind the partner's lips and cheek a little before its silhouette. With none
# the two faces cut each other in a line through the lips; by 0.4 the front face covers the
# partner out to its silhouette, a pasted edge (the contact's seam 2.09 on a synthetic pair). The
# plan's default (StyleSpec.front_lead); a cheek kiss's kisser leads further.
FRONT_OFFSET = 0.15

COVERAGE_EDGE_PX = 1.0  # width of the step where two surfaces' depths cross, before a 3x3 binomial


def turn_radians(turn_deg: np.ndarray | float) -> np.ndarray:
    """(T,) turns in radians, clipped to the range where the cylinder mapping cannot fold."""
    theta = np.deg2rad(np.atleast_1d(np.asarray(turn_deg, dtype=np.float64)))
    return np.clip(theta, -MAX_TURN_RAD, MAX_TURN_RAD)


def turned_angles(u: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(T, N) surface angle psi of upright positions u (N,), radii from the axis, turned by theta (T,)."""
    phi = np.arcsin(np.clip(u, -1.0, 1.0))
    return phi[None, :] + theta[:, None] * np.cos(phi)[None, :]


def standoff(pucker: np.ndarray) -> np.ndarray:
    """(T, 68) each landmark's stand-off off the cylinder in radii (nose, lips, chin); more when pursed."""
    lips = np.zeros(68)
    lips[MOUTH] = PUCKER_STANDOFF
    return STANDOFF[None, :] + lips[None, :] * np.asarray(pucker, dtype=np.float64)[:, None]


def cylinder_depth(
    points: np.ndarray,
    center: np.ndarray,
    radius: float,
    turn_deg: np.ndarray | float,
    stand_off: np.ndarray | None = None,
) -> np.ndarray:
    """Depth towards the camera, in radii from the axis plane, of upright points (N, 2) after the turn.

    On the cylinder (|x - cx| < radius) a point ends at cos(psi), psi its turned angle; beyond it
    (hair, the ring around the head) at 0, the silhouette's plane. `stand_off` ((N,) or (T, N), in
    radii) adds the nose and lips, tilted by the turn. Returns (T, N) for T turns, (N,) for a scalar.
    """
    points = np.asarray(points, dtype=np.float64)
    scalar = np.ndim(turn_deg) == 0
    theta = turn_radians(turn_deg)
    u = (points[:, 0] - center[0]) / radius
    depth = np.where(np.abs(u)[None, :] < 1.0, np.cos(turned_angles(u, theta)), 0.0)
    if stand_off is not None:
        depth = depth + np.asarray(stand_off, dtype=np.float64) * np.cos(theta)[:, None]
    return depth[0] if scalar else depth


def coverage(nearer_by: np.ndarray, edge_px: float = COVERAGE_EDGE_PX) -> np.ndarray:
    """float32 (h, w): how much of each pixel the first of two overlapping surfaces covers.

    `nearer_by` is its depth minus the other's, per pixel (frame pixels; positive: it is nearer).
    Divided by its own slope it is the signed distance to the occluding contour in pixels, so the
    step from 0 to 1 is `edge_px` wide wherever the contour runs and however steeply the surfaces
    cross: an anti-aliased edge about two pixels wide, not a fade. The slope along each axis is the smaller
    of the two one-sided differences, so where a surface's own depth jumps (a fold of its mesh, the
    nose before the cheek) the step stays on the jump instead of spreading over its neighbours.
    """
    d = np.ascontiguousarray(nearer_by, dtype=np.float32)
    if d.shape[0] < 2 or d.shape[1] < 2:
        return (d > 0).astype(np.float32)
    slope = np.square(_smaller_step(d, axis=1))
    slope += np.square(_smaller_step(d, axis=0))
    np.sqrt(slope, out=slope)
    np.maximum(slope, np.float32(1e-3), out=slope)
    share = d / (slope * np.float32(edge_px))
    share += np.float32(0.5)
    np.clip(share, 0.0, 1.0, out=share)
    # A jump has no sub-pixel position: a 3x3 binomial filter anti-aliases those steps too.
    return cv2.GaussianBlur(share, (3, 3), 0, borderType=cv2.BORDER_REPLICATE)


def _smaller_step(d: np.ndarray, axis: int) -> np.ndarray:
    """|d| difference to the nearer-valued neighbour along `axis` (one-sided at the border)."""
    step = np.abs(np.diff(d, axis=axis))
    pad = [(0, 0), (0, 0)]
    pad[axis] = (1, 0)
    before = np.pad(step, pad, mode="edge")
    pad[axis] = (0, 1)
    after = np.pad(step, pad, mode="edge")
    return np.minimum(before, after)
