"""The pose control video: one skeleton per subject, in its own colour, where the plan puts the landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.scene.choreography import plan_kiss
from kiss_core.scene.pose_video import COLOURS, render_pose_frames
from kiss_core.schemas import VideoParams
from tests.support.mean_face import mean_face_analysis


@pytest.fixture(scope="module")
def plan():
    analyses = {
        "a": mean_face_analysis("a", (640, 800), (200, 260, 460, 540), yaw=12.0),
        "b": mean_face_analysis("b", (480, 480), (150, 100, 290, 250), yaw=-15.0),
    }
    return plan_kiss(analyses, VideoParams(seconds=1, fps=12, size="416x240"))


def test_shape_count_and_background(plan) -> None:
    frames = list(render_pose_frames(plan))
    assert len(frames) == plan.frame_count
    for frame in frames:
        assert frame.shape == (240, 416, 3) and frame.dtype == np.uint8
        drawn = frame.max(axis=2) > 0
        assert 0.002 < drawn.mean() < 0.2  # lines, not fills
    grey = next(render_pose_frames(plan, background=40))
    assert (grey[0, 0] == 40).all()
    with pytest.raises(ValueError, match="background"):
        next(render_pose_frames(plan, background=300))


def test_lines_are_on_the_landmarks_in_each_subjects_colour(plan) -> None:
    checked = 0
    for t, frame in enumerate(render_pose_frames(plan)):
        a, b = plan.tracks["a"].landmarks[t], plan.tracks["b"].landmarks[t]
        if a[:, 0].max() + 3 > b[:, 0].min():
            continue  # the skeletons overlap near contact; the later one covers the first
        for subject, colour in COLOURS.items():
            points = plan.tracks[subject].landmarks[t]
            hits = 0
            for x, y in points.round().astype(int):
                patch = frame[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).astype(int)
                if (np.abs(patch - colour).sum(axis=1) < 120).any():
                    hits += 1
            assert hits > 0.9 * len(points), (t, subject, hits)
        checked += 1
    assert checked >= 3
    first = next(render_pose_frames(plan))
    drawn = first.reshape(-1, 3)[first.reshape(-1, 3).max(axis=1) > 200]
    colours = {tuple(c) for c in drawn.tolist()}
    assert tuple(COLOURS["a"]) in colours and tuple(COLOURS["b"]) in colours
    assert COLOURS["a"] != COLOURS["b"]
