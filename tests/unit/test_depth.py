"""Depth on the head model (kiss_core.scene.depth) and in the plan: the far cheek turns away, the front
head is nearer, and the per-pixel ordering steps over a pixel or two, where the depths cross.

Plans are built on analyses of the mean face (no person), so these run in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.scene.choreography import STYLES, plan_kiss, turn_points
from kiss_core.scene.depth import STANDOFF, coverage, cylinder_depth
from kiss_core.schemas import VideoParams
from tests.support.mean_face import mean_face_analysis

ACROSS = np.c_[np.linspace(-1.4, 1.4, 29), np.zeros(29)]  # a row of points through a unit head


def test_a_frontal_head_is_a_half_cylinder() -> None:
    depth = cylinder_depth(ACROSS, np.zeros(2), 1.0, 0.0)
    u = ACROSS[:, 0]
    np.testing.assert_allclose(
        depth, np.where(np.abs(u) < 1, np.sqrt(np.clip(1 - u**2, 0, 1)), 0.0), atol=1e-12
    )


@pytest.mark.parametrize("turn", [-50.0, -20.0, 20.0, 50.0])
def test_turned_points_stay_on_the_cylinder(turn: float) -> None:
    """The depth belongs to where turn_points puts the point: x^2 + z^2 = r^2 inside the silhouette."""
    center, radius = np.array([100.0, 50.0]), 40.0
    points = center + radius * ACROSS
    x = (turn_points(points, center, radius, turn)[:, 0] - center[0]) / radius
    z = cylinder_depth(points, center, radius, turn)
    inside = np.abs(ACROSS[:, 0]) < 1
    np.testing.assert_allclose(x[inside] ** 2 + z[inside] ** 2, 1.0, atol=1e-9)
    assert (z >= 0).all()


def test_the_far_cheek_turns_away_and_the_near_one_towards_the_camera() -> None:
    cheeks = np.array([[-0.8, 0.0], [0.8, 0.0]])  # image left, image right
    turns = np.array([0.0, 20.0, 40.0])  # to the right: the right cheek leads, away from the camera
    depth = cylinder_depth(cheeks, np.zeros(2), 1.0, turns)
    assert (np.diff(depth[:, 1]) < 0).all() and (np.diff(depth[:, 0]) > 0).all()
    # The silhouette stays in the axis plane whatever the turn.
    np.testing.assert_allclose(cylinder_depth(np.array([[-1.0, 0], [1.0, 0]]), np.zeros(2), 1.0, turns), 0.0)


def test_the_nose_stands_off_less_as_the_head_turns() -> None:
    tip = np.zeros((1, 2))
    stand_off = np.array([STANDOFF[30]])
    depth = cylinder_depth(tip, np.zeros(2), 1.0, np.array([0.0, 45.0]), stand_off)[:, 0]
    np.testing.assert_allclose(depth, [1 + STANDOFF[30], (1 + STANDOFF[30]) * np.cos(np.pi / 4)], atol=1e-12)


@pytest.mark.parametrize("slope", [0.3, 1.0, 6.0])
def test_coverage_is_a_narrow_step_at_the_crossing_whatever_the_slope(slope: float) -> None:
    """Depths crossing at x = 20.3: the front surface covers the right of it, with a 1-2 px edge."""
    xs = np.arange(48, dtype=np.float32)
    nearer_by = np.broadcast_to(slope * (xs - 20.3), (16, 48))
    share = coverage(nearer_by)
    row = share[8]
    assert row[:18].max() == 0 and row[23:].min() == 1
    assert ((row > 0.02) & (row < 0.98)).sum() <= 3  # not a fade
    assert abs(row.sum() - (48 - 20.8)) < 0.05  # the sub-pixel position is kept


def test_coverage_anti_aliases_a_jump() -> None:
    """Where a surface's own depth jumps (a fold), the step is still soft over about two pixels."""
    nearer_by = np.where(np.arange(40)[None, :] < 20, -30.0, 30.0) * np.ones((10, 1))
    row = coverage(nearer_by)[5]
    assert row[:18].max() == 0 and row[22:].min() == 1
    assert 0 < row[19] < 0.5 < row[20] < 1


def _analyses():
    return {
        "a": mean_face_analysis("a", (640, 800), (200, 260, 460, 540), yaw=12.0),
        "b": mean_face_analysis("b", (480, 480), (150, 100, 290, 250), yaw=-15.0),
    }


@pytest.mark.parametrize("style", ["peck", "french", "cheek"])
def test_the_plan_carries_a_depth_per_landmark(style: str) -> None:
    plan = plan_kiss(_analyses(), VideoParams(style=style), camera_push_in=0.0)
    c = plan.contact_frame
    front = "ab"[int(plan.front[c])]
    for s, track in plan.tracks.items():
        assert track.depth is not None and track.depth.shape == (plan.frame_count, 68)
        assert track.axis_depth is not None
        # The nose tip is nearer than the jaw; the leading (far) side of the jaw lies in the axis plane.
        assert (track.depth[:, 30] > track.depth[:, [0, 16]].max(axis=1)).all()
        radius_px = np.linalg.norm(track.landmarks[c, 16] - track.landmarks[c, 0]) / 2
        expected = STYLES[style].front_lead * radius_px if s == front else 0.0
        np.testing.assert_allclose(track.axis_depth[c], expected, rtol=0.05, atol=1e-9)
    # Turned towards the partner, each leading cheek is shallower than the trailing one.
    a, b = plan.tracks["a"], plan.tracks["b"]
    assert a.depth[c, 13] < a.depth[c, 3]  # a leads with its image-right cheek
    if style != "cheek":
        assert b.depth[c, 3] < b.depth[c, 13]


def test_depth_follows_the_camera() -> None:
    still = plan_kiss(_analyses(), VideoParams(style="romantic"), camera_push_in=0.0)
    moving = plan_kiss(_analyses(), VideoParams(style="romantic"), camera_push_in=0.08)
    assert moving.camera is not None
    zoom = np.sqrt(np.abs(np.linalg.det(moving.camera[:, :, :2])))
    for s in ("a", "b"):
        np.testing.assert_allclose(moving.tracks[s].depth, still.tracks[s].depth * zoom[:, None], rtol=1e-9)
        np.testing.assert_allclose(moving.scene().tracks[s].depth, still.tracks[s].depth)  # what is drawn
